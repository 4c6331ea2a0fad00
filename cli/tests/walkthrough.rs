//! Issue 13's "done when" as one test, with the real `dtop up` binary and a real headless
//! Chromium: a newcomer opens the printed URL, logs in with the printed first-run admin
//! password, sees the simulated rig moving, switches on edge-hosted DVF from the rig page's
//! command form (confirming it) at a gain below the limit the page shows, sees the ack and the
//! RMS fall, then runs an uncertainty study from its form, watches the progress bar reach done
//! and downloads the result as JSON and CSV, which equal the API's. A PNG of every page goes to
//! `target/browser-screenshots/walkthrough-*.png`. Without chromium and chromedriver the test
//! skips, or fails under `DTOP_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::common::browser::{
    browser, click, eval, fill, href, log_in_with_password, path, snap, start_driver, until,
};
use crate::common::{Server, Up};

/// The rig `dtop up` simulates.
const RIG: &str = "southampton-3s";

/// The RMS per floor the rig page shows (its measured column, m/s²), by floor.
async fn rms_table(c: &Client) -> BTreeMap<u32, f64> {
    let rows = eval(
        c,
        "[...document.querySelectorAll('#rms tr')].map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])",
    )
    .await;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let floor = row[0].as_str().unwrap().trim_start_matches("floor ");
            let rms = row[1].as_str().unwrap();
            (floor.parse().unwrap(), rms.parse().unwrap())
        })
        .collect()
}

/// Picks `value` in the `<select>` at `css`.
async fn choose(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// The body of a same-origin GET made by the page itself, with its session cookie.
async fn fetch_in_page(c: &Client, url: &str) -> (u64, String) {
    let answer = c
        .execute_async(
            "const done = arguments[1]; fetch(arguments[0], {credentials: 'same-origin'})
               .then(r => r.text().then(t => done([r.status, t])))
               .catch(e => done([0, String(e)]));",
            vec![json!(url)],
        )
        .await
        .unwrap();
    (
        answer[0].as_u64().unwrap(),
        answer[1].as_str().unwrap().to_owned(),
    )
}

/// Clicks `button` of a command form on the rig page and accepts its "this makes the structure
/// move" confirmation.
async fn submit_confirmed(c: &Client, button: &str) {
    click(c, button).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match c.get_alert_text().await {
            Ok(text) => {
                assert!(text.contains("makes the structure move"), "{text}");
                c.accept_alert().await.unwrap();
                return;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no confirmation after {button}: {e}"),
        }
    }
}

/// Waits until `#acks` shows an `applied` line for a command sent after `seen` lines existed,
/// and returns its text.
async fn next_applied_ack(c: &Client, seen: u64, what: &str) -> String {
    until(
        c,
        &format!(
            "document.querySelectorAll('#acks li').length > {seen} && \
             [...document.querySelectorAll('#acks li')].some(li => li.classList.contains('ack-applied') \
               && !li.dataset.pending && li.dataset.commandId.startsWith('web-') \
               && !window.dtopSeenAcks?.includes(li.dataset.commandId))"
        ),
        what,
    )
    .await;
    let text = eval(
        c,
        "(() => { const li = [...document.querySelectorAll('#acks li')].find(li => li.classList.contains('ack-applied') \
           && li.dataset.commandId.startsWith('web-') && !window.dtopSeenAcks?.includes(li.dataset.commandId)); \
           window.dtopSeenAcks = [...(window.dtopSeenAcks ?? []), li.dataset.commandId]; return li.textContent; })()",
    )
    .await;
    text.as_str().unwrap().to_owned()
}

/// The second natural frequency of the model the simulator runs (Southampton with the
/// actuator on floor 3), Hz: the one between 15 and 25 Hz (the actuator's suspension mode
/// and the first storey mode are below 10 Hz, the third above 25 Hz).
fn second_mode_hz() -> f64 {
    let building = dtop_dynamics::ShearBuilding::southampton_with_actuator(3).unwrap();
    let frequencies = building.natural_frequencies_hz();
    let in_band: Vec<f64> = frequencies
        .iter()
        .copied()
        .filter(|f| (15.0..25.0).contains(f))
        .collect();
    assert_eq!(in_band.len(), 1, "{frequencies:?}");
    in_band[0]
}

/// Waits for the RMS table to cover a full window of samples taken under the present
/// conditions (the window is 10 s; 15 s leaves the mode's transient, a few time constants of
/// about 2.5 s, out of it).
async fn settled_rms(c: &Client) -> BTreeMap<u32, f64> {
    tokio::time::sleep(Duration::from_secs(15)).await;
    rms_table(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_runs_dtop_up_watches_the_rig_damps_it_with_edge_dvf_and_downloads_a_study() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(
        dir.path(),
        &[
            "--workers",
            "2",
            "--status-every-s",
            "60",
            "--duration-s",
            "900",
        ],
    );
    let printed_url = format!("http://{}/", up.http);
    assert!(
        up.printed.iter().any(|l| l.contains(&printed_url)),
        "no URL to open in {:?}",
        up.printed
    );
    let server = Server { base: up.base() };
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    // The printed URL asks for a login; the printed first-run password opens the rigs.
    c.goto(&printed_url).await.unwrap();
    assert!(path(&c).await.starts_with("/login?next="));
    snap(&c, "walkthrough-01-login").await;
    log_in_with_password(&c, &server, "admin", &up.admin_password, "/rigs").await;
    until(
        &c,
        &format!("document.querySelector('tr[data-rig=\"{RIG}\"] td[data-field=\"online\"]')?.textContent === 'true'"),
        "the simulated rig online in the overview",
    )
    .await;
    snap(&c, "walkthrough-02-rigs").await;

    // The rig page: the drawn trace moves between two reads.
    c.find(Locator::Css(&format!("a[href=\"/rigs/{RIG}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "window.dtopLive && window.dtopLive.drawn() && window.dtopLive.drawn().samples > 1000",
        "a drawn trace",
    )
    .await;
    let first = eval(&c, "window.dtopLive.drawn()").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = eval(&c, "window.dtopLive.drawn()").await;
    assert!(
        second["t_last"].as_f64().unwrap() > first["t_last"].as_f64().unwrap(),
        "the drawn trace did not move: {first} then {second}"
    );
    until(
        &c,
        "document.querySelectorAll('#rms tr').length === 3",
        "the RMS of the three floors",
    )
    .await;
    snap(&c, "walkthrough-03-rig-live").await;

    // Excitation from the page: a 1 N sine on floor 1 at the second natural frequency of the
    // model the simulator integrates (Southampton with the actuator on floor 3). Steady-state
    // resonance makes the RMS a deterministic figure (set by damping alone), where a
    // lightly damped structure under noise gives a 10 s RMS that scatters by tens of percent.
    let f2_hz = second_mode_hz();
    click(&c, "details summary").await;
    choose(
        &c,
        "form[data-command=\"excitation\"] select[name=\"waveform\"]",
        "sine",
    )
    .await;
    fill(
        &c,
        "form[data-command=\"excitation\"] input[name=\"amplitude_n\"]",
        "1",
    )
    .await;
    fill(
        &c,
        "form[data-command=\"excitation\"] input[name=\"frequency_hz\"]",
        &format!("{f2_hz:.4}"),
    )
    .await;
    let acks = eval(&c, "document.querySelectorAll('#acks li').length").await;
    submit_confirmed(
        &c,
        "form[data-command=\"excitation\"] button[type=\"submit\"]",
    )
    .await;
    next_applied_ack(&c, acks.as_u64().unwrap(), "the excitation's ack").await;
    // Mode 2's time constant 1/(ζω) is about 2.5 s: 15 s is steady state, and a response
    // still growing would only make the fall below smaller, never larger.
    let before = settled_rms(&c).await;
    assert_eq!(before.len(), 3, "{before:?}");
    snap(&c, "walkthrough-04-excited").await;

    // The limit the page shows comes from the twin; three quarters of it is inside.
    until(
        &c,
        "document.getElementById('critical-gain').dataset.maxGain",
        "the DVF gain limit on the page",
    )
    .await;
    let max_gain: f64 = eval(
        &c,
        "Number(document.getElementById('critical-gain').dataset.maxGain)",
    )
    .await
    .as_f64()
    .unwrap();
    assert!(max_gain > 1.0, "limit {max_gain} N·s/m");
    let gain = 0.75 * max_gain;

    // Edge-hosted DVF from the command form, confirmed; the twin's ack shows.
    choose(&c, "#form-control select[name=\"law\"]", "dvf").await;
    fill(&c, "#dvf-gain", &format!("{gain:.3}")).await;
    choose(&c, "#form-control select[name=\"placement\"]", "edge").await;
    let acks = eval(&c, "document.querySelectorAll('#acks li').length").await;
    submit_confirmed(&c, "#cmd-set-control").await;
    let ack = next_applied_ack(&c, acks.as_u64().unwrap(), "the DVF command's ack").await;
    assert!(ack.contains("applied"), "{ack}");
    until(
        &c,
        "document.querySelector('#summary [data-field=\"controller_running\"]').textContent === 'true'",
        "the controller running",
    )
    .await;
    snap(&c, "walkthrough-05-dvf-ack").await;

    // The RMS falls. Physics: at resonance a mode's steady amplitude is F/(2·ζ·k_modal), so
    // the RMS scales as 1/ζ₂. Mode 2 (about 19 Hz, shape 0.74 / 0.33 / −0.59 on floors
    // 1..3) has 0.2 % structural damping plus about 0.13 % from the actuator's suspension
    // damper (5 N·s/m, acting as a skyhook damper well above its 6.5 Hz suspension mode).
    // DVF at gain g on floor 3 is a skyhook damper there, adding ζ ≈ g·φ₃²/(2·ω₂·m) with
    // φ₃² ≈ 0.35 (unit-norm shape), ω₂ ≈ 120 rad/s, m = 5.2 kg: at 0.75 of the 14.4 N·s/m limit
    // (g ≈ 10.8) about 0.003, so ζ₂ roughly doubles and every floor's RMS should about
    // halve. Measured: falls of 28 to 35 % (the sampled loop's delay and the estimator give
    // less than the ideal damper); checked with margin: at least 20 % on every floor.
    let after = settled_rms(&c).await;
    snap(&c, "walkthrough-06-dvf-damped").await;
    for (floor, b) in &before {
        let a = after[floor];
        assert!(
            a < 0.8 * b,
            "floor {floor}: RMS {b:.4e} before DVF and {a:.4e} after (gain {gain:.2} N·s/m); before {before:?}, after {after:?}"
        );
    }
    println!(
        "walkthrough: sine 1 N at {f2_hz:.4} Hz, edge DVF gain {gain:.2} N·s/m (limit {max_gain:.2}); RMS per floor before {before:?}, after {after:?}"
    );

    // An uncertainty study from its form, small sizes.
    click(&c, "nav a[href=\"/studies\"]").await;
    until(&c, "location.pathname === '/studies'", "the studies page").await;
    click(&c, "#new-uncertainty").await;
    until(
        &c,
        "document.getElementById('field-samples')",
        "the uncertainty form",
    )
    .await;
    fill(&c, "#field-samples", "2000").await;
    fill(&c, "#field-frequencies", "40").await;
    fill(&c, "#field-seed", "7").await;
    snap(&c, "walkthrough-07-study-form").await;
    click(&c, "#submit").await;
    until(
        &c,
        "location.pathname.startsWith('/studies/st_')",
        "the study page",
    )
    .await;
    let id = path(&c).await.trim_start_matches("/studies/").to_owned();
    until(
        &c,
        "document.getElementById('study-state').textContent === 'succeeded' && document.getElementById('study-progress').value === 100",
        "the progress bar to reach done",
    )
    .await;
    until(
        &c,
        "document.querySelectorAll('#plots .plot canvas').length >= 1",
        "the result's plots",
    )
    .await;
    snap(&c, "walkthrough-08-study-result").await;

    // The downloads, fetched by the page with its session, equal the API's result.
    let api = reqwest::Client::new();
    let token: Value = api
        .post(server.url("/api/v1/login"))
        .json(&json!({"username": "admin", "password": up.admin_password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let get = |path: String| {
        let request = api.get(server.url(&path)).bearer_auth(&token);
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.text().await.unwrap()
        }
    };
    let result: Value =
        serde_json::from_str(&get(format!("/api/v1/studies/{id}/result")).await).unwrap();
    let json_href = href(&c, "download-json").await;
    let csv_href = href(&c, "download-csv").await;
    let (status, json_text) = fetch_in_page(&c, &json_href).await;
    assert_eq!(status, 200, "{json_text}");
    let (status, csv_text) = fetch_in_page(&c, &csv_href).await;
    assert_eq!(status, 200, "{csv_text}");
    let whole: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(whole["summary"], result["summary"]);
    assert_eq!(whole["study"]["id"], json!(id));
    let mut expected_csv = String::new();
    let names: Vec<&str> = result["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(!names.is_empty());
    assert_eq!(whole["arrays"].as_array().unwrap().len(), names.len());
    for (i, name) in names.iter().enumerate() {
        let array: Value =
            serde_json::from_str(&get(format!("/api/v1/studies/{id}/arrays/{name}")).await)
                .unwrap();
        assert_eq!(whole["arrays"][i], array, "array {name}");
        let csv = get(format!("/api/v1/studies/{id}/arrays/{name}?format=csv")).await;
        expected_csv.push_str(&format!("# array: {name}\n{csv}\n"));
    }
    assert_eq!(csv_text, expected_csv);

    c.close().await.unwrap();
    drop(driver);
    drop(up);
}
