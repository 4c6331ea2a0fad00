//! Loss declarations (`SeqLoss` on `rig/{rig}/loss`) against real Mosquitto and InfluxDB 1.x:
//! the persisted watermark stalls at a hole the edge lost for good, passes it once the edge
//! declares it, and the per-rig counters say what was declared; repeats, stale and malformed
//! declarations change nothing but their own counters, and a block declared lost that is
//! stored after all stops counting as lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::frames;
use crate::support;

use std::time::Duration;

use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::{LossReason, PersistedWatermark, SeqLoss};
use dtop_proto::{Message, RigId};
use dtop_twin::config::TwinConfig;
use dtop_twin::ingest::RejectReason;
use dtop_twin::store::audit;
use frames::{SAMPLES_PER_BLOCK, T0_NS, wait_stats};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use support::{InfluxD, Mosquitto};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const DB: &str = "dtop";
const RIG: &str = "loss-rig";

fn birth() -> Vec<u8> {
    frames::birth(RIG, 1)
}

fn block(seq: u64) -> Vec<u8> {
    frames::block(RIG, 1, seq, false)
}

fn rig() -> RigId {
    RigId::new(RIG).unwrap()
}

fn loss(rig_id: &str, first_seq: u64, last_seq: u64) -> SeqLoss {
    SeqLoss {
        rig_id: rig_id.into(),
        session: 1,
        first_seq,
        last_seq,
        blocks: last_seq.saturating_sub(first_seq) + 1,
        samples: (last_seq.saturating_sub(first_seq) + 1) * SAMPLES_PER_BLOCK,
        reason: LossReason::SpoolFull as i32,
        detected_at_ns: T0_NS,
    }
}

fn twin_config(mqtt_port: u16, influx: &InfluxD) -> TwinConfig {
    support::influx_twin_config(mqtt_port, influx, DB, "twin-seq-loss")
}

fn client(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    AsyncClient::new(options, 256)
}

/// Polls `eventloop` in the background; every watermark of the rig received goes on the watch.
fn follow_watermarks(mut eventloop: EventLoop) -> (watch::Receiver<Vec<u64>>, JoinHandle<()>) {
    let persisted = topic::rig(&rig(), RigTopic::Persisted);
    let (tx, rx) = watch::channel(Vec::new());
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == persisted => {
                    let w = PersistedWatermark::decode(&p.payload[..]).unwrap();
                    tx.send_modify(|v| v.push(w.seq));
                }
                Ok(_) => {}
                Err(_) => sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (rx, task)
}

async fn wait_for_watermark(rx: &mut watch::Receiver<Vec<u64>>, at_least: u64) -> u64 {
    let reached = tokio::time::timeout(
        WAIT,
        rx.wait_for(|v| v.last().is_some_and(|&w| w >= at_least)),
    )
    .await
    .ok()
    .and_then(|r| r.ok().and_then(|v| v.last().copied()));
    match reached {
        Some(w) => w,
        None => panic!("no watermark >= {at_least}; got {:?}", rx.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_loss_lets_the_watermark_pass_the_hole_and_is_counted_once() {
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database(DB).await;
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(twin_config(broker.port, &influx), shutdown.clone());
    wait_stats(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;

    // The stand-in edge: publishes like an edge and follows its persisted topic.
    let (edge, edge_loop) = client(broker.port, "edge-loss-rig");
    let (mut watermarks, edge_task) = follow_watermarks(edge_loop);
    edge.subscribe(topic::rig(&rig(), RigTopic::Persisted), QoS::AtLeastOnce)
        .await
        .unwrap();
    let publish = async |kind: RigTopic, payload: Vec<u8>| {
        edge.publish(topic::rig(&rig(), kind), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    };
    publish(RigTopic::Birth, birth()).await;
    // Blocks 10..=14 never leave the edge.
    for seq in (0..=9).chain(15..=20) {
        publish(RigTopic::Samples, block(seq)).await;
    }
    wait_for_watermark(&mut watermarks, 9).await;
    let stored = wait_stats(&mut handle, "16 blocks stored", |s| {
        s.store
            .rigs
            .get(&rig())
            .is_some_and(|r| r.blocks_stored == 16)
    })
    .await;
    // Everything the edge sent is stored, but the watermark waits at the hole.
    assert_eq!(stored.store.rigs[&rig()].persisted_seq, Some(9));

    // Malformed declarations are rejected frames; none moves the watermark.
    publish(RigTopic::Loss, loss(RIG, 14, 10).encode_to_vec()).await;
    publish(RigTopic::Loss, loss("other-rig", 10, 14).encode_to_vec()).await;
    publish(RigTopic::Loss, vec![0xff, 0xff, 0xff]).await;
    let rejected = wait_stats(&mut handle, "three rejected declarations", |s| {
        s.frames_rejected_sum() == 3
    })
    .await;
    assert_eq!(
        rejected
            .frames_rejected_total
            .get(&RejectReason::BadLossRange),
        Some(&1)
    );
    assert_eq!(
        rejected
            .frames_rejected_total
            .get(&RejectReason::RigMismatch),
        Some(&1)
    );
    assert_eq!(
        rejected.frames_rejected_total.get(&RejectReason::Decode),
        Some(&1)
    );
    assert_eq!(rejected.store.rigs[&rig()].persisted_seq, Some(9));

    // The declaration, then a repeat (as after a reconnect) and one overlapping stored seqs.
    publish(RigTopic::Loss, loss(RIG, 10, 14).encode_to_vec()).await;
    assert_eq!(wait_for_watermark(&mut watermarks, 20).await, 20);
    publish(RigTopic::Loss, loss(RIG, 10, 14).encode_to_vec()).await;
    publish(RigTopic::Loss, loss(RIG, 8, 16).encode_to_vec()).await;
    let stats = wait_stats(&mut handle, "three declarations", |s| {
        s.store
            .rigs
            .get(&rig())
            .is_some_and(|r| r.loss_declarations_total == 3)
    })
    .await;
    let r = &stats.store.rigs[&rig()];
    assert_eq!(r.persisted_seq, Some(20));
    assert_eq!(r.blocks_lost_at_edge.get("spool_full"), Some(&5));
    assert_eq!(r.samples_lost_at_edge.get("spool_full"), Some(&500));
    assert_eq!(r.blocks_lost_at_edge.values().sum::<u64>(), 5);
    assert_eq!(r.blocks_stored, 16);
    assert_eq!(r.loss_declarations_refused, 0);
    // The rig's own sequence tracking no longer counts the declared seqs as missing.
    let stats = wait_stats(
        &mut handle,
        "the declared seqs off the missing count",
        |s| s.rigs.get(&rig()).is_some_and(|r| r.blocks_missing == 0),
    )
    .await;
    assert_eq!(stats.rigs[&rig()].blocks_declared_lost, 5);

    // The watermark is retained: a client that subscribes now (a restarted edge) sees 20.
    let (late, late_loop) = client(broker.port, "late-edge");
    let (mut late_watermarks, late_task) = follow_watermarks(late_loop);
    late.subscribe(topic::rig(&rig(), RigTopic::Persisted), QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(wait_for_watermark(&mut late_watermarks, 0).await, 20);
    late_task.abort();

    // InfluxDB's holes are exactly the declared range.
    let seqs = audit::stored_seqs_v1(&influx.url, DB, &rig(), Duration::from_secs(10))
        .await
        .unwrap();
    let report = audit::holes(0..=20, &seqs);
    assert_eq!(report.holes, [(10, 14)], "{report:?}");
    assert!(
        report.duplicated.is_empty() && report.outside == 0,
        "{report:?}"
    );

    // Blocks the edge evicted after the broker had them may still be on their way: one that
    // storage acknowledges after all stops counting as lost.
    let mut evicted = loss(RIG, 21, 23);
    evicted.reason = LossReason::EvictedUnconfirmed as i32;
    publish(RigTopic::Loss, evicted.encode_to_vec()).await;
    assert_eq!(wait_for_watermark(&mut watermarks, 23).await, 23);
    publish(RigTopic::Samples, block(22)).await;
    let stats = wait_stats(&mut handle, "block 22 stored after all", |s| {
        s.store
            .rigs
            .get(&rig())
            .is_some_and(|r| r.loss_blocks_stored_after_all == 1)
    })
    .await;
    let r = &stats.store.rigs[&rig()];
    assert_eq!(r.blocks_lost_at_edge.get("evicted_unconfirmed"), Some(&2));
    assert_eq!(
        r.samples_lost_at_edge.get("evicted_unconfirmed"),
        Some(&200)
    );
    assert_eq!(r.blocks_duplicate_stored, 0);
    assert_eq!(r.persisted_seq, Some(23));

    edge_task.abort();
    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .expect("the twin stops")
        .unwrap()
        .unwrap();
}
