//! Owns a daemon's conversation with systemd (`Type=notify`): READY once the daemon serves,
//! STOPPING when it drains, and WATCHDOG pings from a loop that must keep turning, at half the
//! interval systemd asked for. Without systemd (no `NOTIFY_SOCKET`) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Tells systemd the daemon is up; `what` names it in the warning if systemd cannot be told.
pub fn ready(what: &str) {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        warn!(error = %e, daemon = what, "Could not tell systemd the daemon is ready.");
    }
}

/// Tells systemd the daemon is stopping, so a slow drain is not taken for a hang.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// Pings systemd's watchdog from a loop that must keep turning.
#[derive(Debug)]
pub struct Watchdog {
    /// Half of `WATCHDOG_USEC`; `None` when systemd did not ask for pings.
    every: Option<Duration>,
    next_at: Instant,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC` (set by systemd for this very process).
    pub fn from_env() -> Self {
        let mut usec = 0;
        let every = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2))
            .filter(|d| !d.is_zero());
        if let Some(every) = every {
            debug!(
                every_ms = every.as_millis() as u64,
                "systemd watchdog armed."
            );
        }
        Self {
            every,
            next_at: Instant::now(),
        }
    }

    /// Whether systemd asked for pings.
    pub fn is_armed(&self) -> bool {
        self.every.is_some()
    }

    /// The loop turned: ping if one is due.
    pub fn pet(&mut self) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if now >= self.next_at {
            self.next_at = now + every;
            if let Err(e) = sd_notify::notify(false, &[NotifyState::Watchdog]) {
                warn!(error = %e, "Could not ping the systemd watchdog.");
            }
        }
    }

    /// For daemons without a loop of their own to pet from: pings on time until `cancel`.
    pub async fn run(mut self, cancel: tokio_util::sync::CancellationToken) {
        let Some(every) = self.every else { return };
        loop {
            self.pet();
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
