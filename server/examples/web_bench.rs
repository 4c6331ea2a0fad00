//! The browser benchmarks of issue 13 (BENCHMARKS.md § "Web platform"), in Debian's headless
//! Chromium driven over WebDriver against the real server and the real live pipeline in this
//! process (dtop-broker with logins, the rig simulator at 1 kHz, dtop-edge, dtop-twin), through
//! the browser tests' own harness (`tests/common/`): login to first live plot; sample taken to
//! drawn (with an MQTT subscriber and a WebSocket client as peers in the same run), the feed's
//! bytes per second and the redraw time; page weight from the browser's Resource Timing; the
//! JS heap over a long live watch. Prints a table per measurement and exits; asserts no time.
//!
//! `cargo run --release -p dtop-server --example web_bench -- --help`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use common::browser::{
    Driver, browser, cdp, click, eval, fill, log_in, path, snap, start_driver, until,
};
use common::pipeline::{Pipeline, RIG, mqtt_tap, start_broker};
use common::{Options, Server, password};
use dtop_proto::Message as _;
use dtop_proto::v1::SampleBlock;
use fantoccini::Client;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// What to measure, and for how long.
#[derive(Debug, Parser)]
#[command(about = "Browser benchmarks of the web platform (BENCHMARKS.md § Web platform)")]
struct Args {
    /// Measurements to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "login,latency,weight,memory"
    )]
    only: Vec<Measure>,
    /// Logins with an emptied browser cache, and as many with a warm one (alternating).
    #[arg(long, default_value_t = 20)]
    logins: usize,
    /// Seconds of live feed for the latency, bytes and redraw figures.
    #[arg(long, default_value_t = 60)]
    latency_s: u64,
    /// Minutes of watching the live rig page for the memory figure.
    #[arg(long, default_value_t = 10)]
    memory_min: u64,
    /// Seconds between two heap samples.
    #[arg(long, default_value_t = 30)]
    memory_every_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Measure {
    Login,
    Latency,
    Weight,
    Memory,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Our own subscriber first, so the harness's capturing one (debug, in memory) stays off.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let Some(driver) = start_driver().await else {
        bail!(
            "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install -y chromium chromium-driver)"
        );
    };
    say(&format!(
        "machine: {} cores; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    ));
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path()).await;
    let mqtt_port = broker.mqtt_addr().port();
    let server = Server::start(Options {
        mqtt: Some(broker.mqtt_addr()),
        workers: 1,
        ..Options::default()
    })
    .await;
    let pipeline = Pipeline::start(dir.path(), mqtt_port).await;
    let profile = tempfile::tempdir()?;
    let c = browser(&driver, profile.path()).await;
    let bench = Bench {
        driver,
        c,
        server,
        pipeline,
        mqtt_port,
    };
    let outcome = bench.run(&args).await;
    let Bench {
        driver,
        c,
        server,
        pipeline,
        ..
    } = bench;
    c.close().await.context("closing the browser")?;
    drop(driver);
    pipeline.stop().await;
    server.stop().await;
    drop(broker);
    outcome
}

/// Prints a line at once (the run is long; the output is the product).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// This process's wall clock, ms since the Unix epoch: the clock the edge stamps samples with.
fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn rig_page() -> String {
    format!("/rigs/{RIG}")
}

/// The JS condition "the rig page drew live samples".
const DREW_SAMPLES: &str = "window.dtopLive && window.dtopLive.draws.some(d => d[1] !== null)";

struct Bench {
    driver: Driver,
    c: Client,
    server: Server,
    pipeline: Pipeline,
    mqtt_port: u16,
}

impl Bench {
    async fn run(&self, args: &Args) -> Result<()> {
        self.clock_check().await?;
        // The rig runs and its page shows a full window before anything is measured.
        log_in(&self.c, &self.server, "op", &rig_page()).await;
        until(
            &self.c,
            "window.dtopLive && window.dtopLive.points() >= 10000",
            "a full 10 s window",
        )
        .await;
        if args.only.contains(&Measure::Login) {
            self.login(args.logins).await?;
        }
        if args.only.contains(&Measure::Latency) {
            self.latency(Duration::from_secs(args.latency_s)).await?;
        }
        if args.only.contains(&Measure::Weight) {
            self.weight().await?;
        }
        if args.only.contains(&Measure::Memory) {
            self.memory(
                Duration::from_secs(60 * args.memory_min),
                Duration::from_secs(args.memory_every_s),
            )
            .await?;
        }
        self.clock_check().await
    }

    /// Shows that the page's clocks (`Date.now()`, `performance.timeOrigin +
    /// performance.now()`) are this process's `SystemTime`, which the edge stamps samples with:
    /// each page reading falls between two readings taken here around the WebDriver call.
    async fn clock_check(&self) -> Result<()> {
        let (mut worst_outside_ms, mut widest_ms) = (0.0_f64, 0.0_f64);
        for _ in 0..20 {
            let before = epoch_ms();
            let page: [f64; 2] = serde_json::from_value(
                eval(
                    &self.c,
                    "[Date.now(), performance.timeOrigin + performance.now()]",
                )
                .await,
            )?;
            let after = epoch_ms();
            widest_ms = widest_ms.max(after - before);
            // Date.now() is whole milliseconds, rounded down.
            let outside = (before.floor() - page[0]).max(page[0] - after).max(0.0);
            let precise = (before - page[1]).max(page[1] - after).max(0.0);
            worst_outside_ms = worst_outside_ms.max(outside).max(precise);
        }
        say(&format!(
            "clock: 20 page readings of Date.now() and timeOrigin+now() against this process's SystemTime read around each call: \
             worst distance outside the bracket {worst_outside_ms:.3} ms (bracket up to {widest_ms:.1} ms)"
        ));
        ensure!(
            worst_outside_ms < 2.0,
            "the page's clock is not this process's wall clock ({worst_outside_ms:.1} ms apart)"
        );
        Ok(())
    }

    /// From submitting the login form to the rig page's first draw of live samples, each time
    /// with a fresh session; cache emptied (a first visit) and warm (a returning user) alternate.
    async fn login(&self, per_state: usize) -> Result<()> {
        let c = &self.c;
        let mut total = [Vec::new(), Vec::new()];
        let mut html = [Vec::new(), Vec::new()];
        let mut loaded = [Vec::new(), Vec::new()];
        let load_before = load_average();
        for i in 0..2 * per_state {
            let cold = usize::from(i % 2 == 0);
            c.delete_all_cookies().await?;
            if cold == 1 {
                cdp(&self.driver, c, "Network.clearBrowserCache", json!({})).await;
            }
            c.goto(&self.server.url(&rig_page())).await?;
            let at = path(c).await;
            ensure!(
                at.starts_with("/login?next="),
                "not sent to the login page: {at}"
            );
            fill(c, "#username", "op").await;
            fill(c, "#password", &password("op")).await;
            eval(
                c,
                "(document.querySelector('form[action=\"/login\"]').addEventListener('submit', () => \
                 sessionStorage.setItem('dtopBenchSubmitMs', String(performance.timeOrigin + performance.now()))), 0)",
            )
            .await;
            click(c, "#login-submit").await;
            until(
                c,
                &format!("location.pathname === '/rigs/{RIG}' && {DREW_SAMPLES}"),
                "the first live draw after login",
            )
            .await;
            let t: [f64; 4] = serde_json::from_value(
                eval(
                    c,
                    "(() => { const nav = performance.getEntriesByType('navigation')[0]; \
                     const first = window.dtopLive.draws.find(d => d[1] !== null); \
                     const submit = Number(sessionStorage.getItem('dtopBenchSubmitMs')); \
                     sessionStorage.removeItem('dtopBenchSubmitMs'); \
                     return [submit, performance.timeOrigin + nav.responseEnd, \
                             performance.timeOrigin + nav.loadEventEnd, first[0]]; })()",
                )
                .await,
            )?;
            ensure!(t[0] > 0.0, "the submit time was not kept");
            total[cold].push(t[3] - t[0]);
            html[cold].push(t[1] - t[0]);
            loaded[cold].push(t[2] - t[0]);
            if i == 0 {
                snap(c, "bench-login-first-plot").await;
            }
        }
        say(&format!(
            "\nlogin to first live plot (submit of the login form → first draw of live samples on /rigs/{RIG}), \
             a fresh session each time; load average {load_before} before, {} after",
            load_average()
        ));
        say(
            "| browser cache | n | p50 ms | p95 ms | max ms | page HTML received, p50 ms | page loaded, p50 ms |",
        );
        say("| --- | --- | --- | --- | --- | --- | --- |");
        for (cold, name) in [(1, "emptied before the login page"), (0, "warm")] {
            let s = Summary::of(&total[cold]);
            say(&format!(
                "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                s.n,
                s.p50,
                s.p95,
                s.max,
                Summary::of(&html[cold]).p50,
                Summary::of(&loaded[cold]).p50
            ));
        }
        Ok(())
    }

    /// Sample taken to drawn, from the page's own record of its draws, with two peers in the
    /// same run: an MQTT subscriber on the broker and a WebSocket client of the server's feed.
    /// Also the feed's bytes per second and the redraw time of the full window.
    async fn latency(&self, span: Duration) -> Result<()> {
        let c = &self.c;
        if path(c).await != rig_page() {
            log_in(c, &self.server, "op", &rig_page()).await;
        }
        until(
            c,
            "window.dtopLive && window.dtopLive.points() >= 10000",
            "a full 10 s window",
        )
        .await;
        let period_ms = 1e3 / sample_rate_hz(c).await?;
        let token = self.server.login("op").await;
        let ws_url = self
            .server
            .url(&rig_page().replacen("/rigs", "/ws/rigs", 1))
            .replacen("http://", "ws://", 1);
        let mqtt = tokio::spawn(mqtt_peer(self.mqtt_port, span));
        let ws = tokio::spawn(ws_peer(ws_url, token, span));
        let load_before = load_average();
        eval(
            c,
            "(window.dtopLive.draws.length = 0, window.dtopLive.redrawMs.length = 0, 0)",
        )
        .await;
        let bytes0 = eval(c, "window.dtopLive.bytes")
            .await
            .as_f64()
            .unwrap_or(0.0);
        let t0 = Instant::now();
        let mut draws: Vec<Draw> = Vec::new();
        let mut redraws: Vec<f64> = Vec::new();
        // The page keeps its last 1 000 draws (about 50 s); take them well before they go.
        let take_draws = "(() => { const d = window.dtopLive.draws; return d.splice(0, Math.max(0, d.length - 1)); })()";
        let read_page = async {
            while t0.elapsed() < span {
                tokio::time::sleep(Duration::from_secs(5).min(span)).await;
                draws.extend(serde_json::from_value::<Vec<Draw>>(
                    eval(c, take_draws).await,
                )?);
                redraws.extend(serde_json::from_value::<Vec<f64>>(
                    eval(c, "window.dtopLive.redrawMs.splice(0)").await,
                )?);
            }
            anyhow::Ok(())
        };
        let (read, zero) = tokio::join!(read_page, sampling_clock(&self.pipeline, period_ms, span));
        read?;
        let bytes = eval(c, "window.dtopLive.bytes")
            .await
            .as_f64()
            .unwrap_or(0.0)
            - bytes0;
        let bytes_per_s = bytes / t0.elapsed().as_secs_f64();
        let points = eval(c, "window.dtopLive.points()").await;
        snap(c, "bench-live").await;
        let mqtt = mqtt.await??;
        let ws = ws.await??;
        let load_after = load_average();
        let (drawn_newest, drawn_all) = draw_latencies(&draws, period_ms, |d| Some(d.0));
        let (shown_newest, shown_all) = draw_latencies(&draws, period_ms, |d| d.2);
        say(&format!(
            "\nsample taken (the edge's timestamp) → reached, {} s of the live feed at {:.0} Hz; \
             load average {load_before} before, {load_after} after",
            span.as_secs(),
            1e3 / period_ms,
        ));
        let rows = [
            (
                "MQTT subscriber (peer)",
                "newest of each block",
                &mqtt.newest,
            ),
            ("MQTT subscriber (peer)", "every sample", &mqtt.all),
            (
                "server's WebSocket, Rust client (peer)",
                "newest of each block",
                &ws.newest,
            ),
            (
                "server's WebSocket, Rust client (peer)",
                "every sample",
                &ws.all,
            ),
            (
                "browser: drawn (canvas calls done)",
                "newest of each draw",
                &drawn_newest,
            ),
            (
                "browser: drawn (canvas calls done)",
                "every sample",
                &drawn_all,
            ),
            (
                "browser: on screen (next frame began)",
                "newest of each draw",
                &shown_newest,
            ),
            (
                "browser: on screen (next frame began)",
                "every sample",
                &shown_all,
            ),
        ];
        latency_table(&rows, 0.0);
        say(&format!(
            "MQTT newest-sample latency, first and last quarter of the run, p50: {:.1} ms and {:.1} ms \
             (the sample clock does not drift from the wall clock over the run if these agree)",
            Summary::of(&mqtt.newest[..mqtt.newest.len() / 4]).p50,
            Summary::of(&mqtt.newest[3 * mqtt.newest.len() / 4..]).p50
        ));
        // The edge's stamp against when the simulator took each sample.
        let offsets: Vec<f64> = mqtt
            .stamps
            .iter()
            .map(|&(index, stamp_ms)| stamp_ms - (zero.hi + index as f64 * period_ms))
            .collect();
        let off = Summary::of(&offsets);
        let low = offsets.iter().copied().fold(f64::MAX, f64::min);
        say(&format!(
            "edge stamp − simulator's sampling instant (sample i due at t0 + i × period; t0 from the earliest of {} \
             reads of the simulator's samples-taken counter, one per {:.1} ms; the figures below may be that much \
             too low): n={} min={low:.2} p50={:.2} max={:.2} ms",
            zero.reads,
            span.as_secs_f64() * 1e3 / zero.reads.max(1) as f64,
            off.n,
            off.p50,
            off.max
        ));
        say(
            "the same latencies from the simulator's sampling instant (each figure above + the p50 offset):",
        );
        latency_table(&rows, off.p50);
        let r = Summary::of(&redraws);
        say(&format!(
            "\nlive feed: {bytes_per_s:.0} B/s to the browser over {:.0} s; WebSocket window snapshot at open: {} B",
            t0.elapsed().as_secs_f64(),
            ws.snapshot_bytes
        ));
        say(&format!(
            "redraw of the full window ({points} points per channel; setData and drawing of all plots): \
             n={} p50={:.2} ms p95={:.2} ms max={:.2} ms",
            r.n, r.p50, r.p95, r.max
        ));
        Ok(())
    }

    /// Every byte each page downloads, as the browser's Resource Timing saw it, with the cache
    /// emptied before each page; and uPlot's share of the bundles.
    async fn weight(&self) -> Result<()> {
        let c = &self.c;
        let load_before = load_average();
        // A study result to weigh: an uncertainty study sent through its own form.
        log_in(c, &self.server, "root", "/studies").await;
        let form = "/studies/new/uncertainty?model=cristallo-msd3";
        c.goto(&self.server.url(form)).await?;
        fill(c, "#field-frequencies", "40").await;
        fill(c, "#field-samples", "640").await;
        fill(c, "#field-seed", "7").await;
        click(c, "#submit").await;
        until(
            c,
            "location.pathname.startsWith('/studies/st_') && document.getElementById('study-state').textContent === 'succeeded'",
            "the study to succeed",
        )
        .await;
        let study = path(c).await;
        let pages: [(&str, String, &str); 7] = [
            ("login", "/login".to_owned(), "true"),
            ("rigs overview", "/rigs".to_owned(), "true"),
            ("one rig, live", rig_page(), DREW_SAMPLES),
            ("studies list", "/studies".to_owned(), "true"),
            ("a study form (uncertainty)", form.to_owned(), "true"),
            (
                "a study result (uncertainty)",
                study,
                "document.querySelectorAll('#plots canvas').length >= 3",
            ),
            ("models", "/models".to_owned(), "true"),
        ];
        let mut rows = Vec::new();
        for (name, url, ready) in &pages {
            if *name == "login" {
                c.delete_all_cookies().await?;
            } else if path(c).await.starts_with("/login") {
                log_in(c, &self.server, "root", "/rigs").await;
            }
            cdp(&self.driver, c, "Network.clearBrowserCache", json!({})).await;
            c.goto(&self.server.url(url)).await?;
            until(c, "document.readyState === 'complete'", "the page's load").await;
            until(c, ready, "the page's content").await;
            quiet(c).await;
            let w: Weight = serde_json::from_value(eval(c, WEIGHT_JS).await)?;
            let slug: String = name
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
                .collect();
            snap(c, &format!("bench-weight-{slug}")).await;
            rows.push((*name, url.clone(), w));
        }
        say(&format!(
            "\npage weight: every response the page loaded (document, scripts, styles, fetches) by the browser's Resource Timing, \
             browser cache emptied before each page; load average {load_before} before, {} after",
            load_average()
        ));
        say(
            "| page | requests | bodies as served B | transferSize B | bodies decoded B | document as served / decoded B | largest |",
        );
        say("| --- | --- | --- | --- | --- | --- | --- |");
        for (name, url, w) in &rows {
            let largest = w
                .entries
                .iter()
                .max_by_key(|e| e.encoded)
                .map_or(String::new(), |e| {
                    format!("{} ({} B)", short(&e.name), e.encoded)
                });
            let document = w
                .entries
                .first()
                .map_or(String::new(), |e| format!("{} / {}", e.encoded, e.decoded));
            say(&format!(
                "| {name} `{url}` | {} | {} | {} | {} | {document} | {largest} |",
                w.entries.len(),
                w.entries.iter().map(|e| e.encoded).sum::<u64>(),
                w.entries.iter().map(|e| e.transfer).sum::<u64>(),
                w.entries.iter().map(|e| e.decoded).sum::<u64>(),
            ));
        }
        let served: Vec<&Entry> = rows.iter().flat_map(|(_, _, w)| &w.entries).collect();
        say(
            "\nuPlot's share of the bundles (esbuild with the build's flags, with and without uplot external; gzip level 9 as build.rs):",
        );
        say("| bundle | gzip B | without uPlot, gzip B | uPlot's share B | served gzip B |");
        say("| --- | --- | --- | --- | --- |");
        for (entry, with, without) in uplot_share()? {
            let stem = entry
                .trim_start_matches("src/")
                .rsplit_once('.')
                .map_or("", |p| p.0);
            let ext = match entry.rsplit_once('.').map_or("", |p| p.1) {
                "ts" => "js",
                other => other,
            };
            let served_gz = served
                .iter()
                .find(|e| e.name.contains(&format!("/assets/{stem}-")) && e.name.ends_with(ext))
                .map_or("–".to_owned(), |e| e.encoded.to_string());
            say(&format!(
                "| {entry} | {with} | {without} | {} | {served_gz} |",
                with.saturating_sub(without)
            ));
        }
        Ok(())
    }

    /// The JS heap of the live rig page at full rate, sampled every `every` over `span`, as
    /// the page lives and again after a forced garbage collection.
    async fn memory(&self, span: Duration, every: Duration) -> Result<()> {
        let c = &self.c;
        log_in(c, &self.server, "op", &rig_page()).await;
        until(
            c,
            "window.dtopLive && window.dtopLive.points() >= 10000",
            "a full 10 s window",
        )
        .await;
        cdp(&self.driver, c, "Performance.enable", json!({})).await;
        let load_before = load_average();
        let t0 = Instant::now();
        let mut rows: Vec<HeapSample> = Vec::new();
        say(&format!(
            "\nmemory of the live rig page over {} min, a sample every {} s (JS heap used, before and after a forced GC):",
            span.as_secs() / 60,
            every.as_secs()
        ));
        say(
            "| t min | heap used MB | heap used after GC MB | heap total MB | DOM nodes | listeners | frames received |",
        );
        say("| --- | --- | --- | --- | --- | --- | --- |");
        for k in 0.. {
            let at = every * k;
            if at > span {
                break;
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + at)).await;
            let before = metrics(&self.driver, c).await;
            cdp(&self.driver, c, "HeapProfiler.collectGarbage", json!({})).await;
            let after = metrics(&self.driver, c).await;
            let frames = eval(c, "window.dtopLive.frames")
                .await
                .as_f64()
                .unwrap_or(0.0);
            let row = HeapSample {
                t_min: t0.elapsed().as_secs_f64() / 60.0,
                used_mb: metric(&before, "JSHeapUsedSize")? / 1e6,
                used_after_gc_mb: metric(&after, "JSHeapUsedSize")? / 1e6,
                total_mb: metric(&before, "JSHeapTotalSize")? / 1e6,
                nodes: metric(&after, "Nodes")?,
                listeners: metric(&after, "JSEventListeners")?,
                frames,
            };
            say(&format!(
                "| {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
                row.t_min,
                row.used_mb,
                row.used_after_gc_mb,
                row.total_mb,
                row.nodes,
                row.listeners,
                row.frames
            ));
            rows.push(row);
        }
        snap(c, "bench-memory-end").await;
        ensure!(rows.len() >= 2, "fewer than two heap samples");
        let live = rows[rows.len() - 1].frames - rows[0].frames;
        for (name, pick) in [
            (
                "heap used",
                (|r: &HeapSample| r.used_mb) as fn(&HeapSample) -> f64,
            ),
            ("heap used after GC", |r: &HeapSample| r.used_after_gc_mb),
        ] {
            let ys: Vec<f64> = rows.iter().map(pick).collect();
            let ts: Vec<f64> = rows.iter().map(|r| r.t_min).collect();
            say(&format!(
                "{name}: start {:.2} MB, end {:.2} MB, max {:.2} MB, least-squares slope {:+.1} kB/min",
                ys[0],
                ys[ys.len() - 1],
                ys.iter().copied().fold(f64::MIN, f64::max),
                slope(&ts, &ys) * 1e3
            ));
        }
        say(&format!(
            "{live:.0} frames received over the watch; load average {load_before} before, {} after",
            load_average()
        ));
        Ok(())
    }
}

/// The summary's sample rate on the rig page.
async fn sample_rate_hz(c: &Client) -> Result<f64> {
    until(
        c,
        "Number(document.querySelector('#summary [data-field=\"sample_rate_hz\"]').textContent) > 0",
        "the sample rate in the summary",
    )
    .await;
    eval(
        c,
        "Number(document.querySelector('#summary [data-field=\"sample_rate_hz\"]').textContent)",
    )
    .await
    .as_f64()
    .context("the sample rate")
}

/// Waits until the page started no new request for 2 s (at most 30 s).
async fn quiet(c: &Client) {
    let mut last = -1.0;
    let mut still = 0;
    for _ in 0..120 {
        let n = eval(c, "performance.getEntriesByType('resource').length")
            .await
            .as_f64()
            .unwrap_or(0.0);
        still = if n == last { still + 1 } else { 0 };
        if still >= 8 {
            return;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The document and every resource of the page, as Resource Timing reports them.
const WEIGHT_JS: &str = "(() => { const e = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]; \
     return { entries: e.map(r => ({ name: r.name, transfer: r.transferSize, encoded: r.encodedBodySize, decoded: r.decodedBodySize })) }; })()";

#[derive(Debug, serde::Deserialize)]
struct Weight {
    entries: Vec<Entry>,
}

#[derive(Debug, serde::Deserialize)]
struct Entry {
    name: String,
    /// Chromium's `transferSize`: the body as served plus a fixed 300 B that Resource Timing
    /// reports in place of the real header size.
    transfer: u64,
    /// The body as served (gzipped where it was).
    encoded: u64,
    /// The body decoded.
    decoded: u64,
}

/// A URL's path, without the server's address.
fn short(url: &str) -> &str {
    url.find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| &url[i + 3 + j..]))
        .unwrap_or(url)
}

/// `(entry, gzip bytes, gzip bytes with uplot left out)` of each bundle that imports uPlot.
fn uplot_share() -> Result<Vec<(&'static str, usize, usize)>> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let esbuild = esbuild_bin(&web);
    let mut out = Vec::new();
    for entry in ["src/rig.ts", "src/study.ts", "src/model.ts", "src/app.css"] {
        let bundle = |external: bool| -> Result<usize> {
            let mut cmd = Command::new(&esbuild);
            cmd.arg(entry)
                .args([
                    "--bundle",
                    "--minify",
                    "--format=iife",
                    "--target=es2020",
                    "--log-level=warning",
                ])
                .current_dir(&web);
            if external {
                cmd.args(["--external:uplot", "--external:uplot/*"]);
            }
            let output = cmd
                .output()
                .with_context(|| format!("running {}", esbuild.display()))?;
            ensure!(
                output.status.success(),
                "esbuild {entry}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            gzip_len(&output.stdout)
        };
        out.push((entry, bundle(false)?, bundle(true)?));
    }
    Ok(out)
}

/// esbuild's native binary as build.rs finds it (installed by the build's `npm ci`).
fn esbuild_bin(web: &Path) -> PathBuf {
    std::fs::read_dir(web.join("node_modules/@esbuild"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin/esbuild"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| web.join("node_modules/.bin/esbuild"))
}

fn gzip_len(body: &[u8]) -> Result<usize> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body)?;
    Ok(encoder.finish()?.len())
}

/// One heap sample.
struct HeapSample {
    t_min: f64,
    used_mb: f64,
    used_after_gc_mb: f64,
    total_mb: f64,
    nodes: f64,
    listeners: f64,
    frames: f64,
}

async fn metrics(driver: &Driver, c: &Client) -> Value {
    cdp(driver, c, "Performance.getMetrics", json!({})).await
}

fn metric(metrics: &Value, name: &str) -> Result<f64> {
    metrics["metrics"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["name"] == name))
        .and_then(|m| m["value"].as_f64())
        .with_context(|| format!("no {name} in {metrics}"))
}

/// One draw of the rig page: `(drawn, newest sample shown, next frame began)`, ms since the
/// Unix epoch (`server/web/src/live/rig_page.ts`).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct Draw(f64, Option<f64>, Option<f64>);

/// Latencies from sample time to `when(draw)`: of the newest sample of each draw that showed
/// new samples, and of every sample, each counted at the first draw that showed it (the
/// samples after the previous draw's newest up to this draw's newest, `period_ms` apart).
fn draw_latencies(
    draws: &[Draw],
    period_ms: f64,
    when: impl Fn(&Draw) -> Option<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut newest, mut all) = (Vec::new(), Vec::new());
    let mut shown: Option<f64> = None;
    for d in draws {
        let Some(n) = d.1 else { continue };
        let Some(prev) = shown else {
            shown = Some(n);
            continue;
        };
        if n <= prev {
            continue;
        }
        shown = Some(n);
        let Some(at) = when(d) else { continue };
        newest.push(at - n);
        let mut t = n;
        while t > prev + period_ms / 2.0 {
            all.push(at - t);
            t -= period_ms;
        }
    }
    (newest, all)
}

/// Latencies seen by a peer: of each block's newest sample, of every sample, and the bytes of
/// the snapshot it got at connect (WebSocket).
#[derive(Debug, Default)]
struct PeerLatency {
    newest: Vec<f64>,
    all: Vec<f64>,
    snapshot_bytes: usize,
    /// `(first sample index, its stamp in ms since the epoch)` of each block.
    stamps: Vec<(u64, f64)>,
}

impl PeerLatency {
    /// Records a block of `n` samples from `first_ns`, `period_ns` apart, reached at `now_ms`.
    fn block(&mut self, now_ms: f64, first_ns: u64, period_ns: u64, n: usize) {
        for k in 0..n {
            let t_ms = (first_ns + k as u64 * period_ns) as f64 / 1e6;
            self.all.push(now_ms - t_ms);
            if k + 1 == n {
                self.newest.push(now_ms - t_ms);
            }
        }
    }
}

/// An admin's MQTT subscription to the rig's samples for `span`.
async fn mqtt_peer(port: u16, span: Duration) -> Result<PeerLatency> {
    let mut rx = mqtt_tap(port).await;
    let deadline = tokio::time::Instant::now() + span;
    let mut seen = PeerLatency::default();
    while let Ok(Some((topic, payload))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let now = epoch_ms();
        if !topic.ends_with("/samples") {
            continue;
        }
        let block = SampleBlock::decode(payload.as_slice())?;
        if block.stream_id != 0 || block.backfill {
            continue;
        }
        let n = block.channels.first().map_or(0, |ch| ch.raw.len());
        seen.block(now, block.first_timestamp_ns, block.sample_period_ns, n);
        seen.stamps.push((
            block.first_sample_index,
            block.first_timestamp_ns as f64 / 1e6,
        ));
    }
    Ok(seen)
}

/// When the simulator's schedule puts sample 0, ms since the epoch: sample `i` is due at
/// `t0 + i × period`, and a frame leaves when its last sample is due or later, never earlier.
#[derive(Debug, Clone, Copy)]
struct SampleZero {
    /// At most this: the earliest a read showed the samples (see [`sampling_clock`]).
    hi: f64,
    reads: usize,
}

/// Reads the simulator's samples-taken counter `n`, then the wall clock `t`, about every
/// millisecond for `span`: sample `n - 1` was taken by `t`, so `t0 <= t - (n-1)p`; the
/// smallest over all reads. Frames are never early (tokio's interval), so this is late by at
/// most the read lag after the most punctual frame: about the read interval.
async fn sampling_clock(pipeline: &Pipeline, period_ms: f64, span: Duration) -> SampleZero {
    let mut zero = SampleZero {
        hi: f64::MAX,
        reads: 0,
    };
    let deadline = Instant::now() + span;
    while Instant::now() < deadline {
        let n = pipeline.sim_stats().samples_generated_total as f64;
        let t = epoch_ms();
        if n > 0.0 {
            zero.hi = zero.hi.min(t - (n - 1.0) * period_ms);
            zero.reads += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    zero
}

/// A Rust WebSocket client of the server's feed (as the browser's, with an operator's token)
/// for `span`; frames of the snapshot sent at connect are counted apart.
async fn ws_peer(url: String, token: String, span: Duration) -> Result<PeerLatency> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let connected_ms = epoch_ms();
    let deadline = tokio::time::Instant::now() + span;
    let mut seen = PeerLatency::default();
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, ws.next()).await {
        let now = epoch_ms();
        let Message::Binary(bytes) = message? else {
            continue;
        };
        let frame = dtop_server::live::frame::decode(&bytes)?;
        let n = frame.samples();
        let newest_ms = (frame.first_timestamp_ns
            + (n.saturating_sub(1) as u64) * frame.sample_period_ns) as f64
            / 1e6;
        if newest_ms < connected_ms {
            seen.snapshot_bytes += bytes.len();
            continue;
        }
        if frame.kind == dtop_server::live::frame::FrameKind::Samples && frame.stream_id == 0 {
            seen.block(now, frame.first_timestamp_ns, frame.sample_period_ns, n);
        }
    }
    Ok(seen)
}

/// n, median, 95th and 99th percentiles (nearest rank) and maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Summary {
    n: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Summary {
    fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |p: f64| {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let rank = (p * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        Self {
            n: sorted.len(),
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Prints one latency table: each row's summary, every figure shifted by `shift_ms`.
fn latency_table(rows: &[(&str, &str, &Vec<f64>)], shift_ms: f64) {
    say("| reached | samples | n | p50 ms | p95 ms | p99 ms | max ms |");
    say("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, which, values) in rows {
        let s = Summary::of(values);
        say(&format!(
            "| {name} | {which} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.n,
            s.p50 + shift_ms,
            s.p95 + shift_ms,
            s.p99 + shift_ms,
            s.max + shift_ms
        ));
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_counted_once_at_the_first_draw_that_shows_it() {
        // Samples 1 ms apart; the first draw only sets the start; the third draws nothing new.
        let draws = [
            Draw(1_000.0, Some(900.0), Some(1_010.0)),
            Draw(1_100.0, Some(903.0), Some(1_110.0)),
            Draw(1_150.0, Some(903.0), Some(1_160.0)),
            Draw(1_200.0, Some(905.0), None),
        ];
        let (newest, all) = draw_latencies(&draws, 1.0, |d| Some(d.0));
        assert_eq!(newest, vec![197.0, 295.0]);
        assert_eq!(all, vec![197.0, 198.0, 199.0, 295.0, 296.0]);
        let (shown, _) = draw_latencies(&draws, 1.0, |d| d.2);
        assert_eq!(shown, vec![207.0]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Summary::of(&values);
        assert_eq!(
            (s.n, s.p50, s.p95, s.p99, s.max),
            (20, 10.0, 19.0, 20.0, 20.0)
        );
    }

    #[test]
    fn the_slope_of_a_line_is_its_gradient() {
        assert_eq!(slope(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]), 2.0);
    }

    #[test]
    fn a_peer_block_gives_every_sample_and_the_newest() {
        let mut p = PeerLatency::default();
        p.block(1_010.0, 1_000_000_000, 1_000_000, 3);
        assert_eq!(p.all, vec![10.0, 9.0, 8.0]);
        assert_eq!(p.newest, vec![8.0]);
    }
}
