//! History against the real InfluxDB 1.x, on the real pipeline in one process (dtop-broker with
//! logins, the rig simulator, dtop-edge, and dtop-twin storing to a database of this test's own
//! on `DTOP_TEST_INFLUX_V1_URL`): the server's min/max per bucket, as JSON and as CSV, equals
//! the same buckets computed here from the raw samples of a plain `SELECT`; a range before the
//! rig started is all gaps, not zeros; bad ranges are refused naming the field; an InfluxDB
//! that does not answer in time, or is gone, is a 503 that says so. The same buckets from
//! VictoriaMetrics (`DTOP_TEST_VM_URL`, the twin's v2 writer) equal its raw export.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::influx::{Influx, Raw, Victoria, assert_csv_equals, assert_json_equals, bucket};
use common::pipeline::{Pipeline, RIG, start_broker};
use common::{Options, Server, WAIT};
use serde_json::Value;

/// A study on a stored range: the server reads the raw samples as the study's `acceleration`
/// input, and the input the study keeps equals the store's raw samples, row by row. (The `oma`
/// parameters keep the identification light: what is checked here is the record.)
async fn assert_record_equals(server: &Server, token: &str, raw: &Raw, from_ms: i64, to_ms: i64) {
    let body = serde_json::json!({
        "kind": "oma",
        "model": "southampton",
        "params": {"segments": 0, "fdd": false, "block_rows": 20, "max_order": 12},
        "record": {"rig": RIG, "from_ms": from_ms, "to_ms": to_ms},
    });
    let r = server
        .client
        .post(server.url("/api/v1/studies"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let study: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{study}");
    let id = study["id"].as_str().unwrap();
    assert_eq!(study["inputs"][0]["name"], "acceleration", "{study}");
    let (status, text) = get(
        server,
        token,
        &format!("/api/v1/studies/{id}/inputs/acceleration"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let table: Value = serde_json::from_str(&text).unwrap();
    let columns = table["columns"].as_array().unwrap();
    assert_eq!(columns[0]["name"], "time_s");
    let times: Vec<f64> = serde_json::from_value(columns[0]["values"].clone()).unwrap();
    let mut checked = 0;
    for column in &columns[1..] {
        let name = column["name"].as_str().unwrap();
        let values: Vec<f64> = serde_json::from_value(column["values"].clone()).unwrap();
        let Some(stored) = raw.get(name) else {
            panic!("channel {name} of the record is not in the store");
        };
        assert_eq!(values.len(), stored.len(), "{name}: rows");
        for (k, ((t_ns, v), (t_s, got))) in stored.iter().zip(times.iter().zip(&values)).enumerate()
        {
            let t_from_start_s = (t_ns - from_ms * 1_000_000) as f64 * 1e-9;
            assert!(
                (t_s - t_from_start_s).abs() < 1e-6,
                "{name} row {k}: {t_s} s vs {t_from_start_s} s"
            );
            assert_eq!(got, v, "{name} row {k}");
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "the record holds every floor's channel: {checked}"
    );
}

async fn get(server: &Server, token: &str, path: &str) -> (u16, String) {
    let r = server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn history_path(ext: &str, from_ms: i64, to_ms: i64, px: u32) -> String {
    format!("/api/v1/rigs/{RIG}/history{ext}?from_ms={from_ms}&to_ms={to_ms}&px={px}")
}

/// The problem fields of a 400 answer.
fn problem_fields(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap();
    v["problems"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|p| p["field"].as_str().unwrap().to_owned())
        .collect()
}

/// The JSON and CSV of `[from_ms, to_ms)` at widths whose last bucket is whole (1000 px: 5 ms)
/// or cut by `to_ms` (333 px: 14 ms; 7 px: 643 ms) equal the buckets of `raw`, gaps first.
async fn assert_history_equals(server: &Server, token: &str, raw: &Raw, from_ms: i64, to_ms: i64) {
    for px in [1_000, 333, 7] {
        let expected = bucket(raw, from_ms, to_ms, px);
        assert!(
            expected.channels.len() >= 4,
            "channels stored: {:?}",
            expected.channels.keys()
        );
        let (status, body) = get(server, token, &history_path("", from_ms, to_ms, px)).await;
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_json_equals(&answer, &expected);
        let (status, csv) = get(server, token, &history_path(".csv", from_ms, to_ms, px)).await;
        assert_eq!(status, 200, "{csv}");
        assert_csv_equals(&csv, &expected);
        // Both ends of the range show: gaps before the rig's first sample, values after it.
        let (min, _) = expected.channels.values().next().unwrap();
        assert!(
            min[0].is_none() && min[min.len() - 1].is_some(),
            "{px} px: {min:?}"
        );
    }
}

/// A range an hour before the rig started: every bucket answered, each a gap.
async fn assert_no_data_is_all_gaps(server: &Server, token: &str, first_ms: i64) {
    let (status, body) = get(
        server,
        token,
        &history_path("", first_ms - 3_600_000, first_ms - 3_000_000, 600),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let empty: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(empty["t_ms"].as_array().unwrap().len(), 600);
    assert_eq!(empty["bucket_ms"], 1000);
    assert!(empty["channels"].as_array().unwrap().len() >= 4, "{body}");
    for c in empty["channels"].as_array().unwrap() {
        assert!(
            c["min"].as_array().unwrap().iter().all(Value::is_null),
            "{c}"
        );
        assert!(
            c["max"].as_array().unwrap().iter().all(Value::is_null),
            "{c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_buckets_equal_the_raw_influx_samples_and_bad_ranges_or_a_silent_store_are_refused()
{
    let Some(influx) = Influx::create("history").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let server = Server::start(Options {
        mqtt: Some(broker.mqtt_addr()),
        history: Some(influx.history_config()),
        ..Options::default()
    })
    .await;
    let pipeline = Pipeline::start_storing(
        dir.path(),
        broker.mqtt_addr().port(),
        &influx.storage_toml(),
    )
    .await;
    let token = server.login("ada").await;

    // Some seconds stored, and the server has the rig's channels (its birth).
    let deadline = tokio::time::Instant::now() + WAIT;
    let (first_ns, _) = loop {
        if let Some((first, last)) = influx.stored_span_ns(RIG).await
            && last - first > 6_000_000_000
        {
            break (first, last);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "6 s of samples stored"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let first_ms = first_ns.div_euclid(1_000_000);

    // A past range from 1.2 s before the first sample (gaps there, not zeros), on a grid that
    // is neither the epoch's nor the second's (3.5 s over 333 px: 11 ms buckets, from an odd ms).
    let from_ms = first_ms - 1_203;
    let to_ms = from_ms + 4_500;
    assert_history_equals(
        &server,
        &token,
        &influx.raw(RIG, from_ms, to_ms).await,
        from_ms,
        to_ms,
    )
    .await;
    assert_no_data_is_all_gaps(&server, &token, first_ms).await;
    assert_record_equals(
        &server,
        &token,
        &influx.raw(RIG, first_ms, first_ms + 4_500).await,
        first_ms,
        first_ms + 4_500,
    )
    .await;

    // Bad ranges, each refused naming its field.
    for (path, fields) in [
        (history_path("", to_ms, to_ms, 100), vec!["to_ms"]),
        (history_path("", to_ms, from_ms, 100), vec!["to_ms"]),
        (history_path("", from_ms, to_ms, 0), vec!["px"]),
        (history_path("", from_ms, to_ms, 10_001), vec!["px"]),
        (
            history_path(".csv", from_ms, from_ms + 86_400_001, 100),
            vec!["to_ms"],
        ),
        (history_path("", to_ms, from_ms, 0), vec!["to_ms", "px"]),
    ] {
        let (status, body) = get(&server, &token, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(problem_fields(&body), fields, "{path}: {body}");
    }
    let (status, body) = get(
        &server,
        &token,
        &history_path("", from_ms, from_ms + 86_400_001, 100),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("live.history.max_range_s"), "{body}");

    // InfluxDB that accepts connections and never answers: a 503 saying so, after the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let mut history = influx.history_config();
    history.url.clone_from(&silent_url);
    history.timeout_s = 1.0;
    let stuck = Server::start(Options {
        mqtt: Some(broker.mqtt_addr()),
        history: Some(history),
        ..Options::default()
    })
    .await;
    let stuck_token = stuck.login("ada").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let (status, body) = loop {
        // 409 until this server has the rig's (retained) birth.
        let (status, body) =
            get(&stuck, &stuck_token, &history_path("", from_ms, to_ms, 100)).await;
        if status != 409 || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "store_unavailable", "{body}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "InfluxDB at {silent_url} did not answer in time (1 s)"
        )),
        "{message}"
    );
    // InfluxDB gone (the port closed): a 503 at once.
    held.abort();
    let _ = held.await;
    let (status, body) = get(&stuck, &stuck_token, &history_path("", from_ms, to_ms, 100)).await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "store_unavailable", "{body}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("InfluxDB at {silent_url} did not answer: ")),
        "{message}"
    );
    assert!(
        !message.contains("q=SELECT"),
        "the query URL leaks: {message}"
    );
    stuck.stop().await;

    pipeline.stop().await;
    server.stop().await;
    drop(broker);
    influx.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_from_victoria_metrics_equals_its_raw_samples_bucket_by_bucket() {
    let Some(vm) = Victoria::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let server = Server::start(Options {
        mqtt: Some(broker.mqtt_addr()),
        history: Some(vm.history_config()),
        ..Options::default()
    })
    .await;
    let pipeline = Pipeline::start_storing(
        dir.path(),
        broker.mqtt_addr().port(),
        &vm.storage_toml(dir.path()),
    )
    .await;
    let token = server.login("ada").await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let first_ms = loop {
        if let Some((first, last)) = vm.stored_span_ms(RIG).await
            && last - first > 6_000
        {
            break first;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "6 s of samples stored"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let from_ms = first_ms - 1_203;
    let to_ms = from_ms + 4_500;
    assert_history_equals(
        &server,
        &token,
        &vm.raw(RIG, from_ms, to_ms).await,
        from_ms,
        to_ms,
    )
    .await;
    assert_no_data_is_all_gaps(&server, &token, first_ms).await;
    assert_record_equals(
        &server,
        &token,
        &vm.raw(RIG, first_ms, first_ms + 4_500).await,
        first_ms,
        first_ms + 4_500,
    )
    .await;

    pipeline.stop().await;
    server.stop().await;
    drop(broker);
}

/// The twin's parameter history, as its tracking stores it (ARCHITECTURE § Storage schema):
/// two windows and an alarm, for a rig of this test's own.
fn parameter_lines(rig: &str, t0_ms: i64) -> String {
    format!(
        "dtop_twin_modes,rig={rig},mode=1 start_s=0,end_s=120,identified=true,frequency_hz=7.11,damping_ratio=0.002,mac=0.9999,reference_hz=7.114,in_band=true,alarm=false {t0}\n\
         dtop_twin_modes,rig={rig},mode=none start_s=120,end_s=240,identified=false,reason=\"too quiet, no stable mode\" {t1}\n\
         dtop_twin_modes,rig={rig},mode=1 start_s=240,end_s=360,identified=true,frequency_hz=6.98,damping_ratio=0.002,mac=0.9998,reference_hz=7.114,in_band=false,alarm=true {t2}\n\
         dtop_twin_drift,rig={rig},mode=1 raised=true,frequency_hz=6.98,reference_hz=7.114,band_low_hz=7.043,band_high_hz=7.185,since_s=360 {t2}\n",
        t0 = t0_ms,
        t1 = t0_ms + 120_000,
        t2 = t0_ms + 240_000,
    )
}

/// Polls `path` until its JSON has `rows` rows (VictoriaMetrics makes writes searchable within
/// a second or so); the answer.
async fn parameters_with(server: &Server, token: &str, path: &str, rows: usize) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(server, token, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        if answer["rows"].as_array().map(Vec::len) == Some(rows) {
            return answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rigs_parameter_history_reads_back_from_influx_and_victoria_as_json_and_csv() {
    let (Some(influx), Some(vm)) = (Influx::create("parameters").await, Victoria::shared()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    // Recent times: VictoriaMetrics drops samples older than its retention (a month by default).
    let t0_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        / 1000
        - 600)
        * 1000;
    let rig = format!("params-{}", std::process::id());
    influx.write_lines(&parameter_lines(&rig, t0_ms)).await;
    vm.write_lines(&parameter_lines(&rig, t0_ms)).await;
    let range = |record: &str, ext: &str| {
        format!(
            "/api/v1/rigs/{rig}/parameters{ext}?from_ms={}&to_ms={}&record={record}",
            t0_ms - 1,
            t0_ms + 3_600_000
        )
    };
    for history in [influx.history_config(), vm.history_config()] {
        let server = Server::start(Options {
            mqtt: Some(broker.mqtt_addr()),
            history: Some(history),
            ..Options::default()
        })
        .await;
        let token = server.login("ada").await;
        let modes = parameters_with(&server, &token, &range("modes", ""), 3).await;
        let rows = modes["rows"].as_array().unwrap();
        assert_eq!(rows[0]["time_ms"], t0_ms);
        assert_eq!(rows[0]["mode"], "1");
        assert_eq!(rows[0]["fields"]["frequency_hz"], 7.11);
        assert_eq!(rows[1]["mode"], "none");
        assert_eq!(rows[2]["fields"]["frequency_hz"], 6.98);
        let drift = parameters_with(&server, &token, &range("drift", ""), 1).await;
        assert_eq!(drift["rows"][0]["fields"]["frequency_hz"], 6.98);
        let (status, csv) = get(&server, &token, &range("modes", ".csv")).await;
        assert_eq!(status, 200);
        let header = csv.lines().next().unwrap();
        assert!(
            header.starts_with("time_ms,mode,") && header.contains("frequency_hz"),
            "{header}"
        );
        assert_eq!(csv.lines().count(), 4, "{csv}");
        // A bad range names its field.
        let (status, body) = get(
            &server,
            &token,
            &format!("/api/v1/rigs/{rig}/parameters?from_ms=10&to_ms=5"),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(problem_fields(&body), ["to_ms"]);
        server.stop().await;
    }
    // InfluxDB keeps the failed window's reason; VictoriaMetrics keeps no strings.
    let server = Server::start(Options {
        mqtt: Some(broker.mqtt_addr()),
        history: Some(influx.history_config()),
        ..Options::default()
    })
    .await;
    let token = server.login("ada").await;
    let modes = parameters_with(&server, &token, &range("modes", ""), 3).await;
    assert_eq!(
        modes["rows"][1]["fields"]["reason"],
        "too quiet, no stable mode"
    );
    server.stop().await;
    influx.drop_database().await;
    drop(broker);
}
