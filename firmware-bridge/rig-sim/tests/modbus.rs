//! The Modbus TCP register map (MODBUS.md) through a real tokio-modbus client, with the pty
//! edge watching the actuator's status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::time::Duration;

use dtop_firmware::Frame;
use dtop_rig_sim::registers::{f32_to_words, words_to_f32, words_to_u64};
use dtop_rig_sim::{SimConfig, start};
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Reader, Writer};
use tokio_util::sync::CancellationToken;

/// tokio-modbus has no timeout of its own.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

#[tokio::test]
async fn serves_registers_drives_the_actuator_and_refuses_bad_addresses() {
    let (sim, mut edge, shutdown) = common::streaming(common::still_rig(true)).await;
    let addr = sim.modbus_addr().unwrap();
    assert_ne!(addr.port(), 0);

    let mut ctx = within("connect", tokio_modbus::client::tcp::connect(addr))
        .await
        .unwrap();
    let words = within("read", ctx.read_input_registers(0, 12))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(words.len(), 12);
    let index = words_to_u64([words[8], words[9], words[10], words[11]]);
    assert!(index >= 20, "sample index {index}");
    // A still rig without noise: every value is exactly zero.
    assert!(words[..8].iter().all(|w| *w == 0), "{words:?}");

    // Enable with 10 N in one write, as MODBUS.md recommends.
    let force = f32_to_words(10.0);
    within(
        "write",
        ctx.write_multiple_registers(0, &[1, force[0], force[1]]),
    )
    .await
    .unwrap()
    .unwrap();
    let status = edge
        .next_where(|f| match f {
            Frame::ActuatorStatus(s) => Some(s),
            _ => None,
        })
        .await;
    assert!(status.enabled);
    assert_eq!(status.force_n, 10.0);
    let holding = within("read holding", ctx.read_holding_registers(0, 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holding, [1, force[0], force[1]]);

    // The effect: floor 3 (the actuator's floor) moves. Keep writing so the watchdog stays fed.
    let moved = within("floor 3 to move", async {
        loop {
            edge.samples(10).await;
            let words = ctx.read_input_registers(4, 2).await.unwrap().unwrap();
            let floor3 = words_to_f32([words[0], words[1]]);
            if floor3 != 0.0 {
                break floor3;
            }
            ctx.write_single_register(0, 1).await.unwrap().unwrap();
        }
    })
    .await;
    assert!(moved.is_finite());

    // Refusals are values, and the connection keeps working after them.
    let past_end = within("read", ctx.read_input_registers(12, 1))
        .await
        .unwrap();
    assert_eq!(past_end, Err(ExceptionCode::IllegalDataAddress));
    let straddling = within("read", ctx.read_input_registers(10, 4))
        .await
        .unwrap();
    assert_eq!(straddling, Err(ExceptionCode::IllegalDataAddress));
    let holding_past_end = within("read", ctx.read_holding_registers(14, 1))
        .await
        .unwrap();
    assert_eq!(holding_past_end, Err(ExceptionCode::IllegalDataAddress));
    let write_past_end = within("write", ctx.write_single_register(14, 1))
        .await
        .unwrap();
    assert_eq!(write_past_end, Err(ExceptionCode::IllegalDataAddress));
    let bad_enable = within("write", ctx.write_single_register(0, 2))
        .await
        .unwrap();
    assert_eq!(bad_enable, Err(ExceptionCode::IllegalDataValue));
    let coils = within("coils", ctx.read_coils(0, 1)).await.unwrap();
    assert_eq!(coils, Err(ExceptionCode::IllegalFunction));

    // Disable through Modbus; the edge is told.
    within("write", ctx.write_single_register(0, 0))
        .await
        .unwrap()
        .unwrap();
    let status = edge
        .next_where(|f| match f {
            Frame::ActuatorStatus(s) if !s.enabled => Some(s),
            _ => None,
        })
        .await;
    assert_eq!(status.force_n, 0.0);
    let words = within("read", ctx.read_input_registers(8, 4))
        .await
        .unwrap()
        .unwrap();
    assert!(words_to_u64([words[0], words[1], words[2], words[3]]) > index);

    shutdown.cancel();
    sim.join().await.unwrap();
}

#[tokio::test]
async fn modbus_is_off_unless_configured() {
    let shutdown = CancellationToken::new();
    let sim = start(SimConfig::default(), shutdown.clone()).await.unwrap();
    assert_eq!(sim.modbus_addr(), None);
    shutdown.cancel();
    sim.join().await.unwrap();
}
