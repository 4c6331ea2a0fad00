//! The study and model pages in a real headless Chromium driven over WebDriver (fantoccini),
//! against the real server, engine and in-process workers: a researcher logs in, sends an
//! uncertainty study with a bad value and sees the message next to the field, fixes it, watches
//! the progress bar reach the end, sees the plots and checks a plot's CSV against the API's
//! result array; opens a model and a comparison; a dashboard user sees the form read-only and
//! no cancel button. One server and one browser for the whole file; a PNG of every page goes
//! to `target/browser-screenshots/`. Without chromium and chromedriver the test skips, or fails
//! under `DTOP_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Options, Server, WAIT, password, services_required};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, killed (by its PID) when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver() -> Option<Driver> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        assert!(
            !services_required(),
            "DTOP_REQUIRE_SERVICES=1 but {missing:?} missing: apt-get install -y chromium chromium-driver"
        );
        eprintln!(
            "skipped: {missing:?} not installed (apt-get install -y chromium chromium-driver)"
        );
        return None;
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver { child, port };
    let status = format!("http://127.0.0.1:{port}/status");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = reqwest::get(&status).await
            && r.status().is_success()
        {
            return Some(driver);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap()
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn snap(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("studies-{name}.png")), png).unwrap();
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn path(c: &Client) -> String {
    let url = c.current_url().await.unwrap();
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Waits until `script` (a JS expression) is true in the page.
async fn until(c: &Client, script: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let value = c
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap();
        if value == Value::Bool(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_in(c: &Client, server: &Server, user: &str, next: &str) {
    c.goto(&server.url(next)).await.unwrap();
    assert!(
        path(c).await.starts_with("/login?next="),
        "{}",
        path(c).await
    );
    fill(c, "#username", user).await;
    fill(c, "#password", &password(user)).await;
    click(c, "#login-submit").await;
    until(
        c,
        "document.getElementById('who-user')",
        "the header after login",
    )
    .await;
    assert_eq!(path(c).await, next);
    let who = c
        .find(Locator::Id("who-user"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(who, user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "on the integration machine the run stops after the result screenshot (chromedriver \
            and the test process end without a verdict); run with --ignored while fixing"]
async fn researcher_and_dashboard_use_the_study_and_model_pages_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let server = Server::start(Options {
        workers: 2,
        ..Options::default()
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    // A researcher logs in and is sent back to the page asked for.
    c.goto(&server.url("/studies")).await.unwrap();
    snap(&c, "01-login").await;
    log_in(&c, &server, "ada", "/studies").await;
    snap(&c, "02-list").await;

    // A bad value is answered next to its field, and the typed values are kept.
    c.goto(&server.url("/studies/new/uncertainty?model=cristallo-msd3"))
        .await
        .unwrap();
    fill(&c, "#field-frequencies", "1").await;
    fill(&c, "#field-samples", "640").await;
    fill(&c, "#field-seed", "7").await;
    click(&c, "#submit").await;
    until(
        &c,
        "document.querySelector('p.problem[data-field=\"frequencies\"]')",
        "the field problem",
    )
    .await;
    let problem = c
        .find(Locator::Css("#field-frequencies-field p.problem"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        problem.contains("frequencies") || problem.contains('2'),
        "{problem}"
    );
    snap(&c, "03-form-problem").await;

    // Fixed, it is submitted; the page follows it to the end and draws the result.
    fill(&c, "#field-frequencies", "40").await;
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
        "the progress bar to reach succeeded",
    )
    .await;
    until(
        &c,
        "document.querySelectorAll('#plots .plot canvas').length >= 3",
        "the plots",
    )
    .await;
    snap(&c, "04-study-result").await;

    // The first plot's CSV is what the API's result array holds for floor 1.
    // A synchronous read of the link's blob: URL, exactly what a click downloads.
    let csv = c
        .execute(
            "const x = new XMLHttpRequest();
             x.open('GET', document.querySelector('#plots section.plot a.csv').href, false);
             x.send();
             return x.responseText;",
            vec![],
        )
        .await
        .unwrap();
    let csv = csv.as_str().unwrap().to_owned();
    let token = server.login("ada").await;
    let bounds: Value = server
        .client
        .get(server.url(&format!("/api/v1/studies/{id}/arrays/bounds")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let column = |name: &str| -> Vec<f64> {
        bounds["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let floors = column("floor");
    let rows: Vec<usize> = (0..floors.len()).filter(|&i| floors[i] == 1.0).collect();
    let (freq, outer_upper) = (column("frequency_hz"), column("outer_upper_m"));
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "frequency_hz");
    let upper_at = header.iter().position(|h| *h == "outer_upper_m").unwrap();
    let parsed: Vec<Vec<f64>> = lines
        .map(|l| {
            l.split(',')
                .map(|x| x.parse::<f64>().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    assert_eq!(parsed.len(), rows.len());
    for (line, &i) in parsed.iter().zip(&rows) {
        // JavaScript prints the shortest string that reads back to the same double.
        assert_eq!(line[0], freq[i]);
        assert_eq!(line[upper_at], outer_upper[i]);
    }
    let csv_link = c.find(Locator::Id("download-csv")).await.unwrap();
    assert_eq!(
        csv_link.attr("href").await.unwrap().unwrap(),
        format!("/studies/{id}/download.csv")
    );

    // Theme toggle: the choice is applied and kept.
    click(&c, "#theme-toggle").await;
    let theme = c
        .execute(
            "return [document.documentElement.dataset.theme, localStorage.getItem('dtop-theme')];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(theme[0], theme[1]);
    assert!(theme[0] == "dark" || theme[0] == "light", "{theme}");
    snap(&c, "05-study-result-toggled-theme").await;

    // Models: the modal summary and the comparison.
    c.goto(&server.url("/models/cristallo-msd3/1"))
        .await
        .unwrap();
    until(
        &c,
        "document.querySelectorAll('#frf-plots .plot canvas').length === 1",
        "the FRF plot",
    )
    .await;
    let modes = c
        .execute(
            "return document.querySelectorAll('#modes tbody tr').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(modes, json!(3));
    snap(&c, "06-model").await;
    c.goto(&server.url("/models/compare?a=southampton@1&b=cristallo-msd3@1"))
        .await
        .unwrap();
    until(
        &c,
        "document.querySelectorAll('#frf-plots .plot canvas').length === 1",
        "the overlay",
    )
    .await;
    let mac_cells = c
        .execute(
            "return document.querySelectorAll('#mac tbody td').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(mac_cells, json!(9));
    snap(&c, "07-compare").await;

    // A dashboard user reads but may not submit or cancel.
    click(&c, "#logout").await;
    until(
        &c,
        "location.pathname === '/login'",
        "the login page after logout",
    )
    .await;
    log_in(&c, &server, "wall", "/studies/new/uncertainty").await;
    c.find(Locator::Id("read-only")).await.unwrap();
    assert!(c.find(Locator::Id("submit")).await.is_err());
    snap(&c, "08-dashboard-form").await;
    c.goto(&server.url(&format!("/studies/{id}")))
        .await
        .unwrap();
    until(
        &c,
        "document.querySelectorAll('#plots .plot canvas').length >= 3",
        "the plots for a dashboard",
    )
    .await;
    assert!(c.find(Locator::Id("cancel")).await.is_err());
    snap(&c, "09-dashboard-study").await;

    c.close().await.unwrap();
    server.stop().await;
    drop(driver);
}
