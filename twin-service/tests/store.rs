//! The storage sinks against real servers: InfluxDB 1.x (`influxd`) through the InfluxV1 sink,
//! VictoriaMetrics through the InfluxV2 sink. Values and timestamps are read back and compared
//! exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use dtop_proto::RigId;
use dtop_twin::config::{
    BackoffConfig, HttpConfig, InfluxV1Config, InfluxV2Config, StorageConfig, TwinConfig,
};
use dtop_twin::lineproto::{self, BlockHeader, Column, Precision};
use dtop_twin::rig::Chunk;
use dtop_twin::stats::StoreStats;
use dtop_twin::store::{Sink, WriteError, Writer, WriterConfig};
use serde_json::{Value, json};
use support::{InfluxD, VictoriaMetrics};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const T0_NS: u64 = 1_700_000_000_123_456_000;

/// Raw values chosen to exercise float formatting: integral, negative, tiny and huge results.
const RAW_A: [i32; 4] = [2, -3, 0, i32::MAX];
const RAW_B: [i32; 4] = [1, 7, -1, 1_000_000];

fn header(first_timestamp_ns: u64, sample_period_ns: u64) -> BlockHeader<'static> {
    BlockHeader {
        rig: "lab-3s",
        stream_id: 0,
        session: 3,
        seq: 17,
        first_sample_index: 4000,
        first_timestamp_ns,
        sample_period_ns,
        backfill: true,
    }
}

fn columns() -> [Column<'static>; 2] {
    [
        // Spaces, commas and equals signs must survive escaping.
        Column {
            name: "floor 1,accel=x",
            scale: 0.5,
            offset: 0.0,
            raw: &RAW_A,
        },
        Column {
            name: "force_n",
            scale: 1e-9,
            offset: 0.25,
            raw: &RAW_B,
        },
    ]
}

fn encode(first_timestamp_ns: u64, sample_period_ns: u64, precision: Precision) -> (Bytes, usize) {
    let mut out = String::new();
    let lines = lineproto::encode_block(
        &mut out,
        &header(first_timestamp_ns, sample_period_ns),
        &columns(),
        precision,
    )
    .unwrap();
    (Bytes::from(out), lines)
}

fn v1_config(influx: &InfluxD, database: &str, precision: Precision) -> TwinConfig {
    TwinConfig {
        storage: StorageConfig::InfluxV1(InfluxV1Config {
            url: influx.url.clone(),
            database: database.into(),
            username: None,
            password_file: None,
            precision,
        }),
        ..TwinConfig::default()
    }
}

fn expected_value(column: &Column<'_>, k: usize) -> f64 {
    column.value(k).unwrap()
}

/// A takeover without a watermark waits for a late one only when the previous owner stored a
/// run to continue (`replay::restore::any_run`, `dtop_twin::rig`): a rig with samples but no
/// estimate has none, a rig with one feed record has one, and another rig's records count
/// for that rig alone.
#[tokio::test]
async fn any_run_sees_a_rigs_stored_estimates_and_only_its_own() {
    use dtop_twin::replay::record::FEED_MEASUREMENT;
    use dtop_twin::replay::restore::any_run;
    use dtop_twin::store::query::InfluxQuery;

    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database("dtop").await;
    let config = v1_config(&influx, "dtop", Precision::Us);
    let StorageConfig::InfluxV1(v1) = &config.storage else {
        unreachable!("v1_config is InfluxDB 1.x");
    };
    let query = InfluxQuery::influx_v1(v1, Duration::from_secs(10)).unwrap();
    let (a, b) = (RigId::new("lab-3s").unwrap(), RigId::new("lab-b").unwrap());
    assert!(!any_run(&query, &a).await.unwrap(), "an empty database");

    // Rig a: samples and its block's audit line, as a twin that is not estimating stores.
    let mut sink = Sink::from_config(&config).await.unwrap();
    let (body, _) = encode(1_700_000_000_000_000_000, 1_000_000, Precision::Us);
    sink.write(&body).await.unwrap();
    assert!(
        !any_run(&query, &a).await.unwrap(),
        "samples without estimates"
    );

    // Rig b: one feed record, in the recorder's layout.
    let feed = format!(
        "{FEED_MEASUREMENT},rig=lab-b run=7i,session=1i,seq=0i,first_sample_index=0i,\
         samples=100i,first_timestamp_ns=1700000000000000000i,sample_period_ns=1000000i,\
         controller_version=0i 1700000000000000\n"
    );
    sink.write(&Bytes::from(feed)).await.unwrap();
    assert!(any_run(&query, &b).await.unwrap(), "a stored feed record");
    assert!(!any_run(&query, &a).await.unwrap(), "another rig's record");
}

async fn check_v1_round_trip(
    precision: Precision,
    first_ns: u64,
    period_ns: u64,
    expected_first_ns: i64,
) {
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database("dtop").await;
    let config = v1_config(&influx, "dtop", precision);
    config.validate().unwrap();
    let mut sink = Sink::from_config(&config).await.unwrap();
    let (body, lines) = encode(first_ns, period_ns, precision);
    assert_eq!(lines, 5);
    sink.write(&body).await.unwrap();

    let rows = influx
        .rows(
            "dtop",
            "SELECT * FROM dtop_samples WHERE rig = 'lab-3s' ORDER BY time",
        )
        .await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let cols = columns();
    for (k, row) in rows.iter().enumerate() {
        let expected_ns = expected_first_ns + k as i64 * period_ns as i64;
        assert_eq!(row["time"], json!(expected_ns), "sample {k}");
        assert_eq!(row["rig"], json!("lab-3s"));
        assert_eq!(row["stream"], json!("0"));
        for c in &cols {
            let stored = row[c.name]
                .as_f64()
                .unwrap_or_else(|| panic!("no float {} in {row:?}", c.name));
            assert_eq!(
                stored.to_bits(),
                expected_value(c, k).to_bits(),
                "{} sample {k}",
                c.name
            );
        }
    }

    let blocks = influx.rows("dtop", "SELECT * FROM dtop_blocks").await;
    assert_eq!(blocks.len(), 1);
    let b = &blocks[0];
    assert_eq!(b["time"], json!(expected_first_ns));
    assert_eq!(
        (
            b["seq"].clone(),
            b["first_sample_index"].clone(),
            b["samples"].clone()
        ),
        (json!(17), json!(4000), json!(4))
    );
    assert_eq!(
        (b["sample_period_ns"].clone(), b["session"].clone()),
        (json!(period_ns), json!(3))
    );
    assert_eq!(b["backfill"], json!(true));

    // Integers must have been stored as integers and samples as floats.
    let types = influx
        .rows("dtop", "SHOW FIELD KEYS FROM dtop_blocks")
        .await;
    let types: BTreeMap<String, Value> = types
        .into_iter()
        .map(|r| {
            (
                r["fieldKey"].as_str().unwrap().to_owned(),
                r["fieldType"].clone(),
            )
        })
        .collect();
    assert_eq!(types["seq"], json!("integer"));
    assert_eq!(types["backfill"], json!("boolean"));
    let types = influx
        .rows("dtop", "SHOW FIELD KEYS FROM dtop_samples")
        .await;
    assert!(
        types.iter().all(|r| r["fieldType"] == json!("float")),
        "{types:?}"
    );
}

#[tokio::test]
async fn influx_v1_stores_exact_values_and_microsecond_timestamps() {
    // 1 kHz from a whole-microsecond start: us precision is exact.
    check_v1_round_trip(Precision::Us, T0_NS, 1_000_000, T0_NS as i64).await;
}

#[tokio::test]
async fn influx_v1_stores_exact_nanosecond_timestamps() {
    // An odd start and period only survive at ns precision.
    check_v1_round_trip(Precision::Ns, T0_NS + 789, 333_333, (T0_NS + 789) as i64).await;
}

#[tokio::test]
async fn influx_v1_truncates_sub_microsecond_starts_at_us_precision() {
    check_v1_round_trip(Precision::Us, T0_NS + 999, 1_000_000, T0_NS as i64).await;
}

#[tokio::test]
async fn influx_v1_missing_database_needs_an_operator_and_is_not_dropped() {
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    let mut sink = Sink::from_config(&v1_config(&influx, "nope", Precision::Us))
        .await
        .unwrap();
    let (body, _) = encode(T0_NS, 1_000_000, Precision::Us);
    match sink.write(&body).await {
        Err(WriteError::NeedsOperator {
            status: 404,
            message,
        }) => assert!(message.contains("database not found"), "{message}"),
        other => panic!("expected a 404 needing an operator, got {other:?}"),
    }
}

#[tokio::test]
async fn influx_v1_rejects_malformed_lines_with_the_server_message() {
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database("dtop").await;
    let mut sink = Sink::from_config(&v1_config(&influx, "dtop", Precision::Us))
        .await
        .unwrap();
    match sink
        .write(&Bytes::from_static(b"this is not line protocol\n"))
        .await
    {
        Err(WriteError::Rejected {
            status: 400,
            message,
        }) => assert!(message.contains("unable to parse"), "{message}"),
        other => panic!("expected a 400 rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn writer_batches_blocks_into_influx_v1_and_counts_them_per_rig() {
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database("dtop").await;
    let config = v1_config(&influx, "dtop", Precision::Us);
    let sink = Sink::from_config(&config).await.unwrap();
    let (chunk_tx, chunk_rx) = mpsc::channel(16);
    let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
    let writer = Writer::new(
        sink,
        chunk_rx,
        // Only max_lines and the channel closing may flush: no delay-based flush in this test.
        WriterConfig {
            max_lines: 12,
            max_delay: Duration::from_secs(3600),
            ..WriterConfig::from(&config)
        },
        CancellationToken::new(),
        stats_tx,
    );
    let task = tokio::spawn(writer.run());
    for block in 0..5u64 {
        let (body, lines) = encode(T0_NS + block * 4_000_000, 1_000_000, Precision::Us);
        let lines_text = String::from_utf8(body.to_vec()).unwrap();
        let rig = RigId::new("lab-3s").unwrap();
        chunk_tx
            .send(Chunk {
                rig_start_seq: None,
                rig,
                seq: block,
                lines: lines_text,
                line_count: lines,
            })
            .await
            .unwrap();
    }
    drop(chunk_tx);
    let stats = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.lines_written_total, 25);
    // 12 lines per batch at most, whole blocks of 5 lines: 15, then 10.
    assert_eq!(stats.batches_written_total, 2);
    assert_eq!(stats.rigs[&RigId::new("lab-3s").unwrap()].blocks_stored, 5);
    assert_eq!(stats_rx.borrow_and_update().lines_written_total, 25);
    let count = influx
        .rows("dtop", "SELECT count(force_n) FROM dtop_samples")
        .await;
    assert_eq!(count[0]["count"], json!(20));
}

fn v2_config(url: &str, token_file: &std::path::Path) -> TwinConfig {
    TwinConfig {
        storage: StorageConfig::InfluxV2(InfluxV2Config {
            url: url.into(),
            org: "dtop".into(),
            bucket: "dtop".into(),
            token_file: token_file.to_owned(),
            precision: Precision::Us,
        }),
        http: HttpConfig { timeout_ms: 2_000 },
        retry: BackoffConfig {
            initial_ms: 50,
            max_ms: 200,
        },
        ..TwinConfig::default()
    }
}

#[tokio::test]
async fn influx_v2_sink_stores_exact_values_in_victoria_metrics() {
    let Some(vm) = VictoriaMetrics::start_if_installed().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "secret-token\n").unwrap();
    let mut sink = Sink::from_config(&v2_config(&vm.url, &token))
        .await
        .unwrap();
    // VictoriaMetrics keeps milliseconds, so use a ms-aligned start and period.
    let first_ns = 1_700_000_000_123_000_000;
    let (body, _) = encode(first_ns, 1_000_000, Precision::Us);
    sink.write(&body).await.unwrap();

    // VictoriaMetrics names series <measurement>_<field> and keeps tags as labels.
    let series = vm
        .wait_for_export(r#"{__name__=~"dtop_.*"}"#, Duration::from_secs(30), |s| {
            s.len() == 8 && s.iter().all(|x| !x.values.is_empty())
        })
        .await;
    let by_name: BTreeMap<String, &support::ExportedSeries> = series
        .iter()
        .map(|s| (s.metric["__name__"].clone(), s))
        .collect();
    let first_ms = (first_ns / 1_000_000) as i64;
    let cols = columns();
    for (c, metric) in cols
        .iter()
        .zip(["dtop_samples_floor 1,accel=x", "dtop_samples_force_n"])
    {
        let s = by_name
            .get(metric)
            .unwrap_or_else(|| panic!("no {metric} in {:?}", by_name.keys()));
        assert_eq!(s.metric["rig"], "lab-3s");
        assert_eq!(s.metric["stream"], "0");
        assert_eq!(
            s.timestamps,
            (0..4).map(|k| first_ms + k).collect::<Vec<_>>()
        );
        let expected: Vec<f64> = (0..4).map(|k| expected_value(c, k)).collect();
        assert_eq!(s.values, expected, "{metric}");
    }
    assert_eq!(by_name["dtop_blocks_seq"].values, [17.0]);
    assert_eq!(by_name["dtop_blocks_backfill"].values, [1.0]);
    assert_eq!(by_name["dtop_blocks_seq"].timestamps, [first_ms]);
}

#[tokio::test]
async fn writer_keeps_a_batch_while_storage_is_down_and_writes_it_once_it_is_up() {
    if support::require_binary(support::VICTORIA_METRICS).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let port = support::free_port();
    let config = v2_config(&format!("http://127.0.0.1:{port}"), &token);
    let sink = Sink::from_config(&config).await.unwrap();
    let (chunk_tx, chunk_rx) = mpsc::channel(16);
    let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
    let task = tokio::spawn(
        Writer::new(
            sink,
            chunk_rx,
            WriterConfig::from(&config),
            CancellationToken::new(),
            stats_tx,
        )
        .run(),
    );
    let first_ns = 1_700_000_000_000_000_000;
    let (body, lines) = encode(first_ns, 1_000_000, Precision::Us);
    let rig = RigId::new("lab-3s").unwrap();
    chunk_tx
        .send(Chunk {
            rig_start_seq: None,
            rig,
            seq: 1,
            lines: String::from_utf8(body.to_vec()).unwrap(),
            line_count: lines,
        })
        .await
        .unwrap();

    // Nothing listens yet: the writer must fail, keep the batch, and retry.
    tokio::time::timeout(
        Duration::from_secs(30),
        stats_rx.wait_for(|s| s.write_errors_total >= 2),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stats_rx.borrow().lines_written_total, 0);
    assert_eq!(stats_rx.borrow().lines_pending, 5);

    let vm = VictoriaMetrics::start_on(Some(port)).await;
    let stats = tokio::time::timeout(
        Duration::from_secs(30),
        stats_rx.wait_for(|s| s.lines_written_total == 5),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(stats.lines_rejected_total, 0);
    assert_eq!(stats.lines_dropped_total, 0);
    vm.wait_for_export("dtop_samples_force_n", Duration::from_secs(30), |s| {
        s.len() == 1 && s[0].values.len() == 4
    })
    .await;
    drop(chunk_tx);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn writer_drops_a_stuck_batch_after_the_drain_timeout_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    // Nothing will ever listen here.
    let config = v2_config(
        &format!("http://127.0.0.1:{}", support::free_port()),
        &token,
    );
    let sink = Sink::from_config(&config).await.unwrap();
    let (chunk_tx, chunk_rx) = mpsc::channel(16);
    let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
    let shutdown = CancellationToken::new();
    let writer_config = WriterConfig {
        drain_timeout: Duration::from_millis(300),
        ..WriterConfig::from(&config)
    };
    let task =
        tokio::spawn(Writer::new(sink, chunk_rx, writer_config, shutdown.clone(), stats_tx).run());
    let (body, lines) = encode(T0_NS, 1_000_000, Precision::Us);
    let rig = RigId::new("lab-3s").unwrap();
    chunk_tx
        .send(Chunk {
            rig_start_seq: None,
            rig,
            seq: 1,
            lines: String::from_utf8(body.to_vec()).unwrap(),
            line_count: lines,
        })
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        stats_rx.wait_for(|s| s.write_errors_total >= 1),
    )
    .await
    .unwrap()
    .unwrap();
    shutdown.cancel();
    drop(chunk_tx);
    let stats = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.lines_dropped_total, 5);
    assert_eq!(stats.lines_written_total, 0);
}
