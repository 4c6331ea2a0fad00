//! Owns the slow-down of failed logins: per user name and per client address, a few free
//! failures, then an exponentially growing wait (capped) before the next attempt is even
//! checked; a successful login clears both. Pure bookkeeping over `tokio::time::Instant`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// What a failure count is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// No attempt is checked before this.
    blocked_until: Instant,
    last_at: Instant,
}

/// Entries beyond this are pruned (oldest first), so a flood of names cannot grow memory.
const MAX_ENTRIES: usize = 10_000;

/// Failure counts by user name and by client address.
#[derive(Debug)]
pub struct Throttle {
    free_failures: u32,
    max_delay: Duration,
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Throttle {
    /// `free_failures` failures pass unslowed; then each failure doubles the wait from 1 s up
    /// to `max_delay`.
    pub fn new(free_failures: u32, max_delay: Duration) -> Self {
        Self {
            free_failures,
            max_delay,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(username: &str, addr: Option<IpAddr>) -> Vec<Key> {
        let mut keys = vec![Key::User(username.to_owned())];
        keys.extend(addr.map(Key::Addr));
        keys
    }

    /// How long this attempt must wait, if it must.
    pub fn wait(&self, username: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let map = self.lock();
        Self::keys(username, addr)
            .iter()
            .filter_map(|k| map.get(k))
            .map(|f| f.blocked_until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// A failed attempt.
    pub fn failed(&self, username: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            let forget_before = now.checked_sub(self.max_delay).unwrap_or(now);
            map.retain(|_, f| f.last_at > forget_before && f.blocked_until > now);
        }
        for key in Self::keys(username, addr) {
            let f = map.entry(key).or_insert(Failures {
                count: 0,
                blocked_until: now,
                last_at: now,
            });
            f.count = f.count.saturating_add(1);
            f.last_at = now;
            f.blocked_until = now + self.delay_after(f.count);
        }
    }

    /// A successful login: both counts start again.
    pub fn succeeded(&self, username: &str, addr: Option<IpAddr>) {
        let mut map = self.lock();
        for key in Self::keys(username, addr) {
            map.remove(&key);
        }
    }

    /// The wait imposed after `count` failures.
    fn delay_after(&self, count: u32) -> Duration {
        let over = count.saturating_sub(self.free_failures);
        if over == 0 {
            return Duration::ZERO;
        }
        let secs = 1u64.checked_shl(over - 1).unwrap_or(u64::MAX);
        Duration::from_secs(secs).min(self.max_delay)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        // Each operation leaves the map consistent, so a poisoned lock is still usable.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[tokio::test(start_paused = true)]
    async fn slows_down_after_the_free_failures_doubling_up_to_the_cap() {
        let t = Throttle::new(3, Duration::from_secs(5));
        for _ in 0..3 {
            assert_eq!(t.wait("ada", ip(1)), None);
            t.failed("ada", ip(1));
        }
        assert_eq!(t.wait("ada", ip(1)), None);
        t.failed("ada", ip(1));
        assert_eq!(t.wait("ada", ip(1)), Some(Duration::from_secs(1)));
        t.failed("ada", ip(1));
        assert_eq!(t.wait("ada", ip(1)), Some(Duration::from_secs(2)));
        t.failed("ada", ip(1));
        t.failed("ada", ip(1));
        assert_eq!(t.wait("ada", ip(1)), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(t.wait("ada", ip(1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_per_user_name_and_per_address_separately() {
        let t = Throttle::new(1, Duration::from_secs(60));
        t.failed("ada", ip(1));
        t.failed("ada", ip(2));
        // The name is slowed from any address; another name from a fresh address is not.
        assert!(t.wait("ada", ip(3)).is_some());
        assert_eq!(t.wait("bob", ip(3)), None);
        // One address guessing many names is slowed too.
        t.failed("c1", ip(9));
        t.failed("c2", ip(9));
        assert!(t.wait("c3", ip(9)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_login_clears_the_counts() {
        let t = Throttle::new(0, Duration::from_secs(60));
        t.failed("ada", ip(1));
        assert!(t.wait("ada", ip(1)).is_some());
        t.succeeded("ada", ip(1));
        assert_eq!(t.wait("ada", ip(1)), None);
    }
}
