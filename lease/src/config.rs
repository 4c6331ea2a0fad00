//! Owns [`LeaseConfig`]: how long a lease lasts, how often it is renewed, and how early a holder
//! gives a rig up when it cannot renew; and the check of their ranges, every problem at once.
//! Knows nothing about where the config file lives (the twin's `[lease]` section embeds this).

use std::time::Duration;

use dtop_daemon::ConfigProblem;
use serde::{Deserialize, Serialize};

/// Lease timing, shared by every twin of one deployment (they compare expiry on one clock, the
/// database's, but each decides alone when to give up, from these numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// How long a rig lease and a twin's membership last after their last renewal, in ms of the
    /// database's clock. A crashed twin's rigs are taken over within about `ttl_ms` plus one
    /// `renew_interval_ms`.
    #[serde(default = "default_ttl_ms")]
    pub ttl_ms: u64,
    /// How often the coordinator heartbeats, reads the members and rigs, and renews its leases,
    /// in ms. Also the longest a handover waits for the new owner's next look.
    #[serde(default = "default_renew_interval_ms")]
    pub renew_interval_ms: u64,
    /// How long before a lease could lapse the holder gives the rig up (emits `Lost`) when it
    /// has not managed to renew, in ms: room for the consumer to stop, and for the local and
    /// database clocks to drift apart over one TTL.
    #[serde(default = "default_safety_margin_ms")]
    pub safety_margin_ms: u64,
}

/// Default of [`LeaseConfig::ttl_ms`] (SCALING.md §3: a killed twin's rigs re-owned within 10 s).
pub const fn default_ttl_ms() -> u64 {
    5_000
}
/// Default of [`LeaseConfig::renew_interval_ms`].
pub const fn default_renew_interval_ms() -> u64 {
    1_000
}
/// Default of [`LeaseConfig::safety_margin_ms`].
pub const fn default_safety_margin_ms() -> u64 {
    1_000
}

/// Least accepted `renew_interval_ms`: below this the heartbeats alone load the database.
pub const MIN_RENEW_INTERVAL_MS: u64 = 10;
/// Greatest accepted `renew_interval_ms`.
pub const MAX_RENEW_INTERVAL_MS: u64 = 60_000;
/// Greatest accepted `ttl_ms` (an hour: a longer one leaves a dead twin's rigs unowned for it).
pub const MAX_TTL_MS: u64 = 3_600_000;

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl_ms: default_ttl_ms(),
            renew_interval_ms: default_renew_interval_ms(),
            safety_margin_ms: default_safety_margin_ms(),
        }
    }
}

impl LeaseConfig {
    /// [`LeaseConfig::ttl_ms`] as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// [`LeaseConfig::renew_interval_ms`] as a duration.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(self.renew_interval_ms)
    }

    /// [`LeaseConfig::safety_margin_ms`] as a duration.
    pub fn safety_margin(&self) -> Duration {
        Duration::from_millis(self.safety_margin_ms)
    }

    /// How long after a renewal was *sent* its holder may still act on the rig: the TTL less the
    /// safety margin. Meaningful once [`LeaseConfig::problems`] is empty.
    pub fn hold_for(&self) -> Duration {
        self.ttl().saturating_sub(self.safety_margin())
    }

    /// Every problem of these settings, each under `prefix` (`"lease."` in the twin's config).
    pub fn problems(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !(MIN_RENEW_INTERVAL_MS..=MAX_RENEW_INTERVAL_MS).contains(&self.renew_interval_ms) {
            out.push(ConfigProblem::new(
                format!("{prefix}renew_interval_ms"),
                format!(
                    "must be {MIN_RENEW_INTERVAL_MS} to {MAX_RENEW_INTERVAL_MS} ms, got {} ms",
                    self.renew_interval_ms
                ),
            ));
        }
        if self.safety_margin_ms == 0 {
            out.push(ConfigProblem::new(
                format!("{prefix}safety_margin_ms"),
                "must be at least 1 ms: a holder must give a rig up before its lease can lapse",
            ));
        }
        // One failed renewal must not cost the rigs: the lease has to outlive two intervals with
        // the margin still left.
        let least_ttl_ms = self
            .renew_interval_ms
            .saturating_mul(2)
            .saturating_add(self.safety_margin_ms);
        if self.ttl_ms <= least_ttl_ms {
            out.push(ConfigProblem::new(
                format!("{prefix}ttl_ms"),
                format!(
                    "must be more than 2 × renew_interval_ms + safety_margin_ms ({least_ttl_ms} ms), \
                     so one failed renewal does not lose the rigs; got {} ms",
                    self.ttl_ms
                ),
            ));
        }
        if self.ttl_ms > MAX_TTL_MS {
            out.push(ConfigProblem::new(
                format!("{prefix}ttl_ms"),
                format!("must be at most {MAX_TTL_MS} ms, got {} ms", self.ttl_ms),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn paths(problems: &[ConfigProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn the_defaults_are_valid_and_an_empty_section_means_them() {
        assert_eq!(LeaseConfig::default().problems("lease."), vec![]);
        let parsed: LeaseConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, LeaseConfig::default());
        assert_eq!(LeaseConfig::default().hold_for(), Duration::from_secs(4));
    }

    #[test]
    fn reports_every_bad_field_at_once_with_its_range() {
        let config = LeaseConfig {
            ttl_ms: 100_000,
            renew_interval_ms: 70_000,
            safety_margin_ms: 0,
        };
        let problems = config.problems("lease.");
        assert_eq!(
            paths(&problems),
            [
                "lease.renew_interval_ms",
                "lease.safety_margin_ms",
                "lease.ttl_ms"
            ],
            "{problems:?}"
        );
        assert!(problems[0].message.contains("10 to 60000 ms, got 70000 ms"));
    }

    #[test]
    fn refuses_a_ttl_that_one_failed_renewal_would_outlast() {
        let config = LeaseConfig {
            ttl_ms: 2_500,
            renew_interval_ms: 1_000,
            safety_margin_ms: 500,
        };
        let problems = config.problems("");
        assert_eq!(paths(&problems), ["ttl_ms"]);
        assert!(problems[0].message.contains("(2500 ms)"), "{problems:?}");
        let longer = LeaseConfig {
            ttl_ms: 2_501,
            ..config
        };
        assert_eq!(longer.problems(""), vec![]);
    }

    #[test]
    fn refuses_unknown_keys() {
        assert!(toml::from_str::<LeaseConfig>("ttl_s = 5").is_err());
    }
}
