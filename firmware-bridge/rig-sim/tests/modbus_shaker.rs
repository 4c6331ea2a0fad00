//! The shaker over Modbus (MODBUS.md holding registers 7–13): a still rig starts shaking when a
//! sine is written, the force gauge (input registers 6–7) sees it, settings the simulator's own
//! config would refuse are refused with IllegalDataValue, and "off" stops it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use dtop_rig_sim::registers::{f32_to_words, words_to_f32};
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Reader, Writer};

/// The largest force-gauge reading over `reads` reads about a millisecond apart, N.
async fn peak_force(ctx: &mut tokio_modbus::client::Context, reads: usize) -> f32 {
    let mut peak = 0.0f32;
    for _ in 0..reads {
        let w = ctx.read_input_registers(6, 2).await.unwrap().unwrap();
        peak = peak.max(words_to_f32([w[0], w[1]]).abs());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    peak
}

fn shaker_words(waveform: u16, amplitude: f32, f0: f32, f1: f32) -> Vec<u16> {
    let mut words = vec![waveform];
    for v in [amplitude, f0, f1] {
        words.extend(f32_to_words(v));
    }
    words
}

#[tokio::test]
async fn a_sine_written_over_modbus_shakes_the_rig_and_off_stops_it() {
    let (sim, _edge, shutdown) = common::streaming(common::still_rig(true)).await;
    let mut ctx = tokio_modbus::client::tcp::connect(sim.modbus_addr().unwrap())
        .await
        .unwrap();
    assert_eq!(
        peak_force(&mut ctx, 20).await,
        0.0,
        "still before the shaker starts"
    );

    // 5 N at 7 Hz on floor 1.
    ctx.write_multiple_registers(7, &shaker_words(2, 5.0, 7.0, 0.0))
        .await
        .unwrap()
        .unwrap();
    let back = ctx.read_holding_registers(7, 7).await.unwrap().unwrap();
    assert_eq!(back, shaker_words(2, 5.0, 7.0, 0.0));
    let peak = peak_force(&mut ctx, 200).await;
    assert!(peak > 3.0 && peak <= 5.0 + 1e-3, "peak force {peak} N");

    // Above Nyquist: the simulator's own validation refuses it, nothing changes.
    let refused = ctx
        .write_multiple_registers(7, &shaker_words(2, 5.0, 900.0, 0.0))
        .await
        .unwrap();
    assert_eq!(refused, Err(ExceptionCode::IllegalDataValue));
    assert_eq!(
        ctx.read_holding_registers(7, 7).await.unwrap().unwrap(),
        back
    );

    ctx.write_multiple_registers(7, &shaker_words(0, 0.0, 0.0, 0.0))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(peak_force(&mut ctx, 20).await, 0.0, "off");
    shutdown.cancel();
    let _ = sim.join().await;
}
