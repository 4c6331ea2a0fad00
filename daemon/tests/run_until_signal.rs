//! `run_until_signal` against real signals: each test raises SIGINT at this very process. They
//! live in their own test binary, and take turns (one lock), because a signal reaches every
//! handler in the process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::Duration;

use dtop_daemon::{Ending, Signals, run_until_signal};
use nix::sys::signal::{Signal, raise};
use tokio_util::sync::CancellationToken;

/// One test at a time: a raised signal is seen by every `Signals` alive in the process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Long enough that no test passes by waiting it out by accident.
const LONG: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn work_that_ends_on_its_own_is_finished_and_nothing_is_cancelled() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let ending =
            run_until_signal(Signals::new().unwrap(), async { 7 }, shutdown.clone(), LONG).await;
        assert_eq!(ending, Ending::Finished(7));
        assert!(!shutdown.is_cancelled());
    });
}

#[test]
fn a_signal_cancels_the_token_and_the_work_drains_within_the_grace_period() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let signals = Signals::new().unwrap();
        let work = {
            let shutdown = shutdown.clone();
            async move {
                // Works until told to stop, then takes a while to drain, as a daemon does.
                shutdown.cancelled().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                "drained"
            }
        };
        raise(Signal::SIGINT).unwrap();
        let ending = run_until_signal(signals, work, shutdown.clone(), LONG).await;
        assert_eq!(ending, Ending::Drained("drained"));
        assert!(shutdown.is_cancelled());
    });
}

#[test]
fn work_still_draining_when_the_grace_period_ends_is_given_up() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let signals = Signals::new().unwrap();
        raise(Signal::SIGINT).unwrap();
        let started = tokio::time::Instant::now();
        let grace = Duration::from_millis(200);
        let ending = run_until_signal(
            signals,
            std::future::pending::<()>(),
            shutdown.clone(),
            grace,
        )
        .await;
        assert_eq!(ending, Ending::GraceExceeded);
        assert!(shutdown.is_cancelled());
        assert!(
            started.elapsed() >= grace,
            "gave up after {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn a_second_signal_while_draining_gives_up_at_once() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let signals = Signals::new().unwrap();
        let work = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                // The drain has begun: the operator loses patience.
                raise(Signal::SIGINT).unwrap();
                std::future::pending::<()>().await;
            }
        };
        raise(Signal::SIGINT).unwrap();
        let ending = tokio::time::timeout(
            LONG / 2,
            run_until_signal(signals, work, shutdown.clone(), LONG),
        )
        .await
        .expect("the second signal ends the wait well before the grace period");
        assert_eq!(ending, Ending::SecondSignal);
    });
}
