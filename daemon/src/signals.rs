//! Owns signal handling and the drain every daemon does on SIGINT or SIGTERM: cancel the
//! daemon's shutdown token, tell systemd it is stopping, wait up to a grace period for the work
//! to finish, and give up at once on a second signal.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// SIGINT and SIGTERM as one stream of names.
#[derive(Debug)]
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Installs the handlers. Do it before starting work, so a signal during startup is kept.
    ///
    /// # Errors
    /// When the runtime cannot register a handler.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal's name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// How a daemon's main task ended under [`run_until_signal`].
#[derive(Debug, PartialEq, Eq)]
pub enum Ending<T> {
    /// It ended on its own, before any signal.
    Finished(T),
    /// A signal asked it to stop and it drained within the grace period.
    Drained(T),
    /// A signal asked it to stop and it was still draining when the grace period ran out.
    GraceExceeded,
    /// A second signal arrived while it was draining.
    SecondSignal,
}

/// Runs `work` until it ends or a signal arrives. On the first signal it cancels `shutdown`,
/// tells systemd it is stopping, and waits for `work` up to `grace`.
pub async fn run_until_signal<T>(
    mut signals: Signals,
    work: impl Future<Output = T>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Ending<T> {
    tokio::pin!(work);
    let name = tokio::select! {
        out = &mut work => return Ending::Finished(out),
        name = signals.next() => name,
    };
    let grace_ms = grace.as_millis() as u64;
    info!(signal = name, grace_ms, "Shutting down.");
    shutdown.cancel();
    crate::notify::stopping();
    tokio::select! {
        out = &mut work => Ending::Drained(out),
        () = tokio::time::sleep(grace) => {
            error!(grace_ms, "Shutdown did not finish in time; exiting anyway.");
            Ending::GraceExceeded
        }
        name = signals.next() => {
            warn!(signal = name, "Second signal; exiting without finishing shutdown.");
            Ending::SecondSignal
        }
    }
}
