//! The browser tests' harness: Debian's chromedriver and headless Chromium started per test
//! file (killed by PID when dropped), a fantoccini client, and the few page actions the tests
//! share (fill, click, wait for a JS condition, log in through the form, save a screenshot to
//! `target/browser-screenshots/`), and Chrome DevTools Protocol commands through chromedriver
//! for what WebDriver does not offer (cache, heap metrics). Without chromium and chromedriver a
//! test skips, or fails under `DTOP_REQUIRE_SERVICES=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::{Server, WAIT, password, services_required};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Longest wait for a condition in a page (a study may have to run first).
const PAGE_WAIT: Duration = Duration::from_secs(180);

/// chromedriver, killed (by its PID) when dropped.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// chromedriver's base URL, for its vendor commands (see [`cdp`]).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
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

/// chromedriver on a free loopback port, once it answers; `None` (the test skips) when Chromium
/// or chromedriver is not installed and services are not required.
pub async fn start_driver() -> Option<Driver> {
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

/// A headless Chromium session with a fresh profile in `profile`, with the flags that keep it
/// off the (closed) network.
pub async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,1400",
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

/// Saves a PNG of the page as `target/browser-screenshots/{name}.png`.
pub async fn snap(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Replaces the text of the field at `css`.
pub async fn fill(c: &Client, css: &str, text: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Clicks the element at `css`.
pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The `href` of the element with id `id`.
pub async fn href(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap()
}

/// The value of the JS expression `script` in the page.
pub async fn eval(c: &Client, script: &str) -> Value {
    c.execute(&format!("return ({script});"), vec![])
        .await
        .unwrap()
}

/// The page's path and query.
pub async fn path(c: &Client) -> String {
    let url = c.current_url().await.unwrap();
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Waits until `script` (a JS expression) is true in the page.
pub async fn until(c: &Client, script: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + PAGE_WAIT;
    loop {
        if eval(c, &format!("!!({script})")).await == Value::Bool(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs `user` in through the form: a fresh visit to `next` is sent to the login page with
/// the page remembered, and lands back on `next` as `user`.
pub async fn log_in(c: &Client, server: &Server, user: &str, next: &str) {
    log_in_with_password(c, server, user, &password(user), next).await;
}

/// [`log_in`] with a password that is not the test users' (e.g. `dtop up`'s first-run admin).
pub async fn log_in_with_password(
    c: &Client,
    server: &Server,
    user: &str,
    secret: &str,
    next: &str,
) {
    c.delete_all_cookies().await.unwrap();
    c.goto(&server.url(next)).await.unwrap();
    let at = path(c).await;
    assert!(at.starts_with("/login?next="), "{at}");
    fill(c, "#username", user).await;
    fill(c, "#password", secret).await;
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

/// Runs the Chrome DevTools Protocol command `cmd` (e.g. `Performance.getMetrics`) in the page
/// of `c`, through chromedriver's `goog/cdp/execute`; its result.
pub async fn cdp(driver: &Driver, c: &Client, cmd: &str, params: Value) -> Value {
    let session = c.session_id().await.unwrap().expect("a WebDriver session");
    let response = reqwest::Client::new()
        .post(format!(
            "{}/session/{session}/goog/cdp/execute",
            driver.url()
        ))
        .json(&json!({"cmd": cmd, "params": params}))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let mut body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "CDP {cmd}: {status} {body}");
    body["value"].take()
}
