//! The rig pages in a real headless Chromium driven over WebDriver (fantoccini), against the
//! real server and the real live pipeline in one process (dtop-broker with logins, the rig
//! simulator, dtop-edge, dtop-twin): an operator sees the overview and a live trace update,
//! sends a safety stop and sees its acknowledgement, and sees a live CBC run's points and
//! response curve as the twin publishes them; a dashboard user gets no command panel
//! and the API refuses their command; an operator of another rig gets the 403 page. With the
//! twin storing to InfluxDB (`DTOP_TEST_INFLUX_V1_URL`), the operator also switches to history
//! for a past range through the page's form, sees it plotted, and the CSV the page offers for
//! it equals the min/max per bucket of the raw samples read from InfluxDB. One
//! server, one pipeline and one browser for the whole file; a PNG of every page goes to
//! `target/browser-screenshots/`. It also prints the measured redraw time of the full window
//! and the bytes per second the rig's feed brought (BENCHMARKS.md). Without chromium and
//! chromedriver the test skips, or fails under `DTOP_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::browser::{browser, click, eval, href, log_in, snap, start_driver, until};
use common::influx::{Influx, assert_csv_equals, bucket};
use common::pipeline::{Pipeline, RIG, publish_retained_as_admin, start_broker};
use common::{Options, Server, password};
use dtop_auth::credentials::add_user;
use dtop_auth::{RigSpec, Role, Secret};
use fantoccini::Locator;
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_watch_a_rig_live_and_stop_it_while_other_roles_are_refused_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    // History needs the twin storing to InfluxDB; without one the history steps skip.
    let influx = Influx::create("browser_rigs").await;
    let server = Server::start(Options {
        mqtt: Some(broker.mqtt_addr()),
        history: influx.as_ref().map(Influx::history_config),
        ..Options::default()
    })
    .await;
    let users = server.credentials_file.clone();
    tokio::task::spawn_blocking(move || {
        add_user(
            &users,
            "op-b",
            Role::Operator,
            RigSpec::List(vec!["rig-b".into()]),
            Some(&Secret::new(password("op-b"))),
        )
        .unwrap();
    })
    .await
    .unwrap();
    let pipeline = match &influx {
        Some(influx) => {
            Pipeline::start_storing(
                dir.path(),
                broker.mqtt_addr().port(),
                &influx.storage_toml(),
            )
            .await
        }
        None => Pipeline::start(dir.path(), broker.mqtt_addr().port()).await,
    };
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    // The overview lists the rig, live.
    log_in(&c, &server, "op", "/rigs").await;
    until(&c, &format!("document.querySelector('tr[data-rig=\"{RIG}\"] td[data-field=\"online\"]')?.textContent === 'true'"), "the rig's row online").await;
    snap(&c, "rigs-01-overview").await;

    // One rig: the trace moves (more samples and a later newest time between two looks).
    c.goto(&server.url(&format!("/rigs/{RIG}"))).await.unwrap();
    until(
        &c,
        "window.dtopLive && window.dtopLive.points() > 1000",
        "live samples",
    )
    .await;
    let first = eval(&c, "window.dtopLive.frames").await.as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = eval(&c, "window.dtopLive.frames").await.as_u64().unwrap();
    assert!(
        second > first + 5,
        "frames {first} then {second}: the trace does not move"
    );
    until(
        &c,
        "document.querySelector('#summary [data-field=\"sample_rate_hz\"]').textContent === '1000'",
        "the summary",
    )
    .await;
    snap(&c, "rigs-02-rig-live").await;

    // The full window: redraw time of 4 × 10 000 points and bytes per second, measured here.
    until(
        &c,
        "window.dtopLive.points() >= 10000",
        "a full 10 s window",
    )
    .await;
    let (f0, b0) = (
        eval(&c, "window.dtopLive.bytes").await.as_f64().unwrap(),
        std::time::Instant::now(),
    );
    eval(&c, "(window.dtopLive.redrawMs.length = 0, 0)").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let bytes = eval(&c, "window.dtopLive.bytes").await.as_f64().unwrap() - f0;
    let per_s = bytes / b0.elapsed().as_secs_f64();
    let mut redraws: Vec<f64> =
        serde_json::from_value(eval(&c, "window.dtopLive.redrawMs").await).unwrap();
    redraws.sort_by(f64::total_cmp);
    assert!(!redraws.is_empty());
    println!(
        "BENCH live feed: {:.0} B/s to the browser; redraw of the full window ({} points per channel): n={} p50={:.2} ms p95={:.2} ms max={:.2} ms",
        per_s,
        eval(&c, "window.dtopLive.points()").await,
        redraws.len(),
        percentile(&redraws, 0.5),
        percentile(&redraws, 0.95),
        redraws[redraws.len() - 1]
    );

    // Drawn per pixel column, the full window keeps every extreme: per channel the drawn
    // minimum and maximum are those of the window's samples, with far fewer points than samples.
    let ex = eval(&c, "window.dtopLive.extremes()").await;
    assert_eq!(
        ex["drawn"], ex["samples"],
        "extremes drawn vs in the window: {ex}"
    );
    assert!(
        ex["drawn_points"].as_u64().unwrap() < ex["samples_n"].as_u64().unwrap() / 2,
        "the window is drawn per pixel column: {ex}"
    );

    if let Some(influx) = &influx {
        show_history_and_check_its_csv(&c, influx).await;
    }

    // A safety stop, one click; its acknowledgement shows as it arrives.
    click(&c, "#cmd-safety-stop").await;
    until(
        &c,
        "document.querySelector('#acks li.ack-latched, #acks li.ack-applied')",
        "the safety stop's ack",
    )
    .await;
    let ack = c
        .find(Locator::Css("#acks li.ack-latched, #acks li.ack-applied"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ack.contains("at sample"), "{ack}");
    until(&c, "document.querySelector('#summary [data-field=\"safety_state\"]').textContent === 'latched'", "the latched envelope").await;
    snap(&c, "rigs-03-safety-stop-ack").await;

    // A live CBC run as the twin publishes it (retained on twin/{rig}/cbc): the panel shows
    // its state, its points and the response curve they trace.
    let point = |f: f64, force: f64| {
        json!({"frequency_hz": f, "target_amplitude_m": 2e-4, "forcing_n": force,
            "response_amplitude_m": 2.001e-4, "invasiveness": 3e-3, "change": 1e-3,
            "iterations": 4, "converged": true})
    };
    let run = json!({"rig": RIG, "run": 7, "command_id": "web-1", "issued_by": "op",
        "state": "completed", "stop": {"kind": "completed"}, "reason": "every frequency converged",
        "channels": {"floor": 1, "accel_channel_id": 0, "force_channel_id": 3},
        "frequency_hz": 7.4, "targets_sent": 12, "controller_version": 42,
        "config": {"frequency_start_hz": 6.8, "frequency_end_hz": 7.4, "frequency_steps": 3,
            "target_amplitude_m": 2e-4},
        "points": [point(6.8, 2.1), point(7.1, 1.2), point(7.4, 0.9)]});
    publish_retained_as_admin(
        broker.mqtt_addr().port(),
        &format!("dtop/v1/twin/{RIG}/cbc"),
        serde_json::to_vec(&run).unwrap(),
    )
    .await;
    until(
        &c,
        "document.querySelectorAll('#cbc-points tbody tr').length === 3 && document.querySelector('#cbc canvas') !== null",
        "the live CBC panel with its points and plot",
    )
    .await;
    let state = eval(&c, "document.querySelector('#cbc-state').textContent").await;
    assert!(
        state
            .as_str()
            .is_some_and(|s| s.contains("Run 7 by op") && s.contains("completed")),
        "{state}"
    );
    snap(&c, "rigs-03b-live-cbc").await;

    // A dashboard watches without a command panel, and the API refuses its command.
    log_in(&c, &server, "wall", &format!("/rigs/{RIG}")).await;
    until(
        &c,
        "window.dtopLive && window.dtopLive.frames > 3",
        "the dashboard's live feed",
    )
    .await;
    assert!(
        c.find(Locator::Id("commands")).await.is_err(),
        "a dashboard gets the command panel"
    );
    let status = c
        .execute_async(
            &format!("const done = arguments[0]; fetch('/api/v1/rigs/{RIG}/commands', {{method: 'POST', headers: {{'content-type': 'application/json', 'x-csrf-token': document.querySelector('meta[name=\"csrf-token\"]').content}}, body: '{{\"kind\":\"safety_stop\"}}'}}).then(r => done(r.status));"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    snap(&c, "rigs-04-dashboard").await;

    // An operator of another rig gets the 403 page saying why.
    log_in(&c, &server, "op-b", "/rigs").await;
    c.goto(&server.url(&format!("/rigs/{RIG}"))).await.unwrap();
    let message = c
        .find(Locator::Id("error-message"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(message.contains("do not let you watch rig r1"), "{message}");
    snap(&c, "rigs-05-other-operator-refused").await;

    c.close().await.unwrap();
    drop(driver);
    pipeline.stop().await;
    server.stop().await;
    drop(broker);
    if let Some(influx) = influx {
        influx.drop_database().await;
    }
}

/// On the rig page: a past range through the history form (whole seconds, as the form takes
/// them), from a second before the first stored sample; the plots show every bucket of it with
/// the gap before the rig started; the CSV the page links for it equals the buckets computed
/// from InfluxDB's raw samples; then back to live.
async fn show_history_and_check_its_csv(c: &fantoccini::Client, influx: &Influx) {
    let (first_ns, last_ns) = influx.stored_span_ns(RIG).await.unwrap();
    let from_ms = (first_ns.div_euclid(1_000_000_000) - 1) * 1000;
    let to_ms = from_ms + 5_000;
    assert!(
        last_ns > (to_ms + 2_000) * 1_000_000,
        "the range is not past yet"
    );
    eval(
        c,
        &format!(
            "(() => {{ const f = (ms) => {{ const d = new Date(ms); const p = (n) => String(n).padStart(2, '0'); \
             return `${{d.getFullYear()}}-${{p(d.getMonth() + 1)}}-${{p(d.getDate())}}T${{p(d.getHours())}}:${{p(d.getMinutes())}}:${{p(d.getSeconds())}}`; }}; \
             document.getElementById('hist-from').value = f({from_ms}); document.getElementById('hist-to').value = f({to_ms}); return 0; }})()"
        ),
    )
    .await;
    click(c, "#hist-load").await;
    until(
        c,
        "window.dtopLive.shown().mode === 'history' && window.dtopLive.shown().range !== null",
        "the history view",
    )
    .await;
    let shown = eval(c, "window.dtopLive.shown()").await;
    assert_eq!(shown["range"]["from_ms"], json!(from_ms), "{shown}");
    assert_eq!(shown["range"]["to_ms"], json!(to_ms), "{shown}");
    assert_eq!(
        eval(c, "[document.getElementById('plots').hidden, document.getElementById('history-plots').hidden]").await,
        json!([true, false])
    );
    let link = href(c, "history-csv").await;
    let px: u32 = link
        .split("px=")
        .nth(1)
        .and_then(|v| v.split('&').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        link.contains(&format!("from_ms={from_ms}&to_ms={to_ms}")),
        "{link}"
    );
    snap(c, "rigs-02b-history").await;

    // The CSV the page offers, fetched in the page with its session, against InfluxDB.
    let csv = c
        .execute_async(
            &format!("const done = arguments[0]; fetch({link:?}, {{credentials: 'same-origin'}}).then(r => r.text()).then(done, e => done(String(e)));"),
            vec![],
        )
        .await
        .unwrap();
    let csv = csv.as_str().unwrap();
    let expected = bucket(&influx.raw(RIG, from_ms, to_ms).await, from_ms, to_ms, px);
    assert_csv_equals(csv, &expected);

    // The plots show those buckets: every one on the x axis from the range's start, and as
    // many values as InfluxDB holds for their channels (a gap before the rig started).
    let plots = shown["plots"].as_array().unwrap();
    let titles: Vec<&str> = plots.iter().map(|p| p["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Floor acceleration", "Force"], "{shown}");
    for p in plots {
        assert_eq!(p["points"], json!(expected.t_ms.len()), "{p}");
        assert_eq!(p["x0"].as_f64(), Some(from_ms as f64 / 1000.0), "{p}");
        let mut want = 0;
        for label in p["labels"].as_array().unwrap() {
            let label = label.as_str().unwrap();
            let (name, max) = label
                .strip_suffix("_max")
                .map(|n| (n, true))
                .unwrap_or_else(|| (label.strip_suffix("_min").unwrap(), false));
            let (lo, hi) = &expected.channels[name];
            want += if max { hi } else { lo }
                .iter()
                .filter(|v| v.is_some())
                .count();
        }
        assert_eq!(p["values"], json!(want), "{p}");
        assert!(want > 0, "{p}");
    }
    let (min, _) = expected.channels.values().next().unwrap();
    assert!(
        min[0].is_none(),
        "the second before the rig started is not a gap"
    );

    click(c, "#live").await;
    until(c, "window.dtopLive.shown().mode === 'live'", "back to live").await;
}
