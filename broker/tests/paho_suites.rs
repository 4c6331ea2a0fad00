//! The Eclipse Paho interoperability suites (eclipse/paho.mqtt.testing: `client_test.py` for
//! MQTT 3.1.1, `client_test5.py` for MQTT 5), as our own equivalent cases in
//! `tests/peers/paho_suites.py` driven by the Paho Python client, run case by case against
//! dtop-broker and against Mosquitto. dtop-broker must pass every case Mosquitto passes.
//!
//! Mosquitto is the one `scripts/test.sh` starts (`DTOP_TEST_MOSQUITTO_PORT`); without it the
//! test starts a private one from `/usr/sbin/mosquitto` on a free loopback port and stops it by
//! PID. With `DTOP_REQUIRE_SERVICES=1` or `CI`, a missing Python or Mosquitto fails the test.
//! The comparison table is printed (`--nocapture`) in the form BENCHMARKS.md quotes.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{require_python, start_broker};
use tokio::process::{Child, Command};

/// Every test of `client_test.py`, in its order.
const V311_CASES: [&str; 10] = [
    "testBasic",
    "test_retained_messages",
    "test_zero_length_clientid",
    "test_offline_message_queueing",
    "test_overlapping_subscriptions",
    "test_keepalive",
    "test_redelivery_on_reconnect",
    "test_subscribe_failure",
    "test_dollar_topics",
    "test_unsubscribe",
];

/// Every test of `client_test5.py`, in its order.
const V5_CASES: [&str; 27] = [
    "test_basic",
    "test_retained_message",
    "test_will_message",
    "test_zero_length_clientid",
    "test_offline_message_queueing",
    "test_overlapping_subscriptions",
    "test_keepalive",
    "test_redelivery_on_reconnect",
    "test_subscribe_failure",
    "test_dollar_topics",
    "test_unsubscribe",
    "test_session_expiry",
    "test_user_properties",
    "test_payload_format",
    "test_publication_expiry",
    "test_subscribe_options",
    "test_assigned_clientid",
    "test_subscribe_identifiers",
    "test_request_response",
    "test_client_topic_alias",
    "test_server_topic_alias",
    "test_maximum_packet_size",
    "test_server_keep_alive",
    "test_flow_control1",
    "test_flow_control2",
    "test_will_delay",
    "test_shared_subscriptions",
];

/// Longest one suite run may take (the v5 suite sleeps about 60 s in total); the script is
/// killed past it.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Mosquitto for the comparison: the shared one, or a private one stopped on drop.
struct Mosquitto {
    addr: SocketAddr,
    /// A private instance (killed by PID on drop) and its directory.
    own: Option<(Child, tempfile::TempDir)>,
}

impl Mosquitto {
    async fn require() -> Option<Self> {
        if let Some(port) = std::env::var("DTOP_TEST_MOSQUITTO_PORT")
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
        {
            return Some(Self {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                own: None,
            });
        }
        let binary = Path::new("/usr/sbin/mosquitto");
        if !binary.is_file() {
            assert!(
                !common::services_required(),
                "Mosquitto is required: set DTOP_TEST_MOSQUITTO_PORT (scripts/test.sh) or install mosquitto"
            );
            eprintln!("SKIPPED: no DTOP_TEST_MOSQUITTO_PORT and no /usr/sbin/mosquitto");
            return None;
        }
        let addr = dtop_broker::reserve_loopback_addr().expect("a free loopback port");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        // The same settings as scripts/test.sh's instance.
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nmessage_size_limit 0\n",
                addr.port()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start mosquitto");
        // Bounded wait for its listener.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Some(Self {
                    addr,
                    own: Some((child, dir)),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mosquitto did not listen on {addr} within 5 s");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self.own {
            // kill_on_drop also does this; explicit so the PID is signalled before the
            // directory is removed.
            let _ = child.start_kill();
        }
    }
}

/// One case's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    passed: bool,
    detail: String,
}

/// Runs `suite` (`v311` or `v5`) against `addr`, restricted to `only` when non-empty, and
/// returns each case's outcome by name.
async fn run_suite(
    python: &Path,
    addr: SocketAddr,
    suite: &str,
    prefix: &str,
    only: &[&str],
) -> BTreeMap<String, Outcome> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/paho_suites.py");
    let child = Command::new(python)
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(suite)
        .arg(prefix)
        .args(only)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Paho suite script");
    let output = tokio::time::timeout(SUITE_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{suite} on {addr} did not finish within {SUITE_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the suite script broke ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("RESULT "))
        .map(|json| {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            (
                value["case"].as_str().unwrap().to_owned(),
                Outcome {
                    passed: value["passed"].as_bool().unwrap(),
                    detail: value["detail"].as_str().unwrap_or_default().to_owned(),
                },
            )
        })
        .collect()
}

fn mark(outcome: Option<&Outcome>) -> &'static str {
    match outcome {
        Some(o) if o.passed => "pass",
        Some(_) => "FAIL",
        None => "not run",
    }
}

/// The comparison as a Markdown table, with each failure's reason.
fn table(
    suite: &str,
    cases: &[&str],
    dtop: &BTreeMap<String, Outcome>,
    mosquitto: &BTreeMap<String, Outcome>,
) -> String {
    let mut out = format!(
        "| {suite} case | dtop-broker | Mosquitto | why a case fails |\n|---|---|---|---|\n"
    );
    for case in cases {
        let (d, m) = (dtop.get(*case), mosquitto.get(*case));
        let why: Vec<String> = [("dtop-broker", d), ("Mosquitto", m)]
            .into_iter()
            .filter_map(|(who, o)| {
                o.filter(|o| !o.passed)
                    .map(|o| format!("{who}: {}", o.detail))
            })
            .collect();
        out.push_str(&format!(
            "| `{case}` | {} | {} | {} |\n",
            mark(d),
            mark(m),
            why.join("; ")
        ));
    }
    let passed = |r: &BTreeMap<String, Outcome>| r.values().filter(|o| o.passed).count();
    out.push_str(&format!(
        "| **total** | **{}/{}** | **{}/{}** | |\n",
        passed(dtop),
        cases.len(),
        passed(mosquitto),
        cases.len()
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtop_broker_passes_every_paho_suite_case_that_mosquitto_passes() {
    let Some(python) = require_python() else {
        return;
    };
    let Some(mosquitto) = Mosquitto::require().await else {
        return;
    };
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    // A prefix per run keeps topics, retained messages and client ids apart from other tests
    // sharing scripts/test.sh's Mosquitto.
    let run = std::process::id();
    let prefixes = ["d311", "d5", "m311", "m5"].map(|p| format!("{p}-{run}/"));
    let (d311, d5, m311, m5) = tokio::join!(
        run_suite(&python, broker.mqtt_addr(), "v311", &prefixes[0], &[]),
        run_suite(&python, broker.mqtt_addr(), "v5", &prefixes[1], &[]),
        run_suite(&python, mosquitto.addr, "v311", &prefixes[2], &[]),
        run_suite(&python, mosquitto.addr, "v5", &prefixes[3], &[]),
    );
    let report = format!(
        "{}\n{}",
        table("MQTT 3.1.1", &V311_CASES, &d311, &m311),
        table("MQTT 5", &V5_CASES, &d5, &m5)
    );
    println!("{report}");

    for (suite, cases, results) in [
        ("v311 on dtop-broker", &V311_CASES[..], &d311),
        ("v5 on dtop-broker", &V5_CASES[..], &d5),
        ("v311 on Mosquitto", &V311_CASES[..], &m311),
        ("v5 on Mosquitto", &V5_CASES[..], &m5),
    ] {
        let ran: Vec<&str> = results.keys().map(String::as_str).collect();
        let mut want = cases.to_vec();
        want.sort_unstable();
        assert_eq!(ran, want, "{suite}: every suite case runs once\n{report}");
    }
    let behind: Vec<&str> = V311_CASES
        .iter()
        .filter(|c| m311[**c].passed && !d311[**c].passed)
        .chain(
            V5_CASES
                .iter()
                .filter(|c| m5[**c].passed && !d5[**c].passed),
        )
        .copied()
        .collect();
    assert!(
        behind.is_empty(),
        "dtop-broker fails cases Mosquitto passes: {behind:?}\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_maximum_packet_size_and_publication_expiry_cases_pass_on_dtop_broker() {
    let Some(python) = require_python() else {
        return;
    };
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let cases = ["test_maximum_packet_size", "test_publication_expiry"];
    let prefix = format!("focus-{}/", std::process::id());
    let results = run_suite(&python, broker.mqtt_addr(), "v5", &prefix, &cases).await;
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|case| match results.get(*case) {
            Some(o) if o.passed => None,
            Some(o) => Some(format!("{case}: {}", o.detail)),
            None => Some(format!("{case}: did not run")),
        })
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
