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
        if !sd_notify::watchdog_enabled(false, &mut usec) {
            usec = 0;
        }
        Self::from_watchdog_usec(usec)
    }

    /// The watchdog for a `WATCHDOG_USEC` of `usec`; 0 means systemd asked for no pings.
    pub fn from_watchdog_usec(usec: u64) -> Self {
        let every = Some(Duration::from_micros(usec / 2)).filter(|d| !d.is_zero());
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

    /// How often it pings; `None` when disarmed.
    pub fn interval(&self) -> Option<Duration> {
        self.every
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn pings_at_half_the_interval_systemd_asked_for() {
        let dog = Watchdog::from_watchdog_usec(10_000_000);
        assert!(dog.is_armed());
        assert_eq!(dog.interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn an_interval_too_short_to_halve_disarms_it() {
        assert!(!Watchdog::from_watchdog_usec(0).is_armed());
        assert!(!Watchdog::from_watchdog_usec(1).is_armed());
    }

    #[tokio::test]
    async fn is_disarmed_without_systemd_and_its_loop_returns_at_once() {
        // cargo does not run tests under a systemd watchdog; if it ever does, this test is
        // about something else and must say so rather than pass.
        assert!(
            std::env::var_os("WATCHDOG_USEC").is_none()
                && std::env::var_os("NOTIFY_SOCKET").is_none(),
            "run this test outside a systemd service"
        );
        let mut dog = Watchdog::from_env();
        assert!(!dog.is_armed());
        assert_eq!(dog.interval(), None);
        dog.pet();
        // Never cancelled: only a disarmed watchdog's loop can end.
        tokio::time::timeout(Duration::from_secs(5), dog.run(CancellationToken::new()))
            .await
            .expect("a disarmed watchdog's loop returns at once");
        // Without NOTIFY_SOCKET these are no-ops, not errors.
        ready("test");
        stopping();
    }
}
