//! Owns the edge's conversation with systemd (`Type=notify`): READY once the devices are open,
//! and WATCHDOG pings from the serial task's loop, at half the interval systemd asked for, so a
//! stalled acquisition loop gets the daemon restarted. Without systemd (no `NOTIFY_SOCKET`)
//! every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Tells systemd the edge is up: the serial port (and Modbus buses) are open.
pub fn ready() {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        warn!(error = %e, "Could not tell systemd the edge is ready.");
    }
}

/// Tells systemd the edge is stopping, so a slow shutdown is not taken for a hang.
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
}
