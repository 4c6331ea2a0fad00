//! Subscriptions a broker refused, pure: which SUBSCRIBE each SUBACK answers, which of its
//! filters were refused, and when to ask for those again. Sends nothing and knows nothing of
//! MQTT clients: the daemon hands the filters it asks for to its own client and reports what
//! goes out and what comes back.
//!
//! Why: a SUBACK may refuse a filter for a passing reason. NATS's MQTT gateway refuses a QoS 1
//! filter (0x80) when the JetStream consumer behind it is not created within its
//! `js_api_timeout`, which happens while the cluster re-elects leaders after a node's death. A
//! daemon that only logged the refusal stayed deaf to that topic for the whole connection (an
//! edge that never hears its watermark again keeps every block spooled). Asking again, with a
//! backoff, heals it; a refusal that lasts (a rule forbids the filter) is logged at every
//! attempt, at most one per `max` ([`RETRY_MAX`] by default) and the broker's own time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::backoff::Backoff;

/// The first wait before a refused filter is asked for again, for daemons without a reason to
/// choose another. Short, because a refusal already took the broker's time: NATS answers a
/// consumer it could not create only after its `js_api_timeout` (4 s in DTOP's deployments).
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest wait between two attempts: about one `js_api_timeout`, so a filter refused
/// under load is asked again at most every ~8 s (the wait and the broker's answer), while the
/// consumer the broker may have gone on creating can be found by the next attempt.
pub const RETRY_MAX: Duration = Duration::from_secs(4);

/// What a SUBACK said about the filters of the SUBSCRIBE it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<F> {
    /// The filters granted, in the SUBSCRIBE's order.
    pub granted: Vec<F>,
    /// The filters refused, in the SUBSCRIBE's order; asked again after `retry_in`.
    pub refused: Vec<F>,
    /// When the refused filters are asked again (`Some` exactly when `refused` is not empty).
    pub retry_in: Option<Duration>,
}

/// Why a SUBACK could not be matched to a SUBSCRIBE of this connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmatched {
    #[error("no SUBSCRIBE with packet id {0} is waiting for its SUBACK")]
    UnknownPacket(u16),
    #[error("the SUBACK for packet id {pkid} has {codes} return codes for {filters} filters")]
    CodeCount {
        pkid: u16,
        codes: usize,
        filters: usize,
    },
}

/// The SUBSCRIBEs of one connection and the refused filters waiting to be asked again.
///
/// Use: [`Subscriptions::asked`] when a SUBSCRIBE is handed to the client,
/// [`Subscriptions::went_out`] when the client reports it sent (with its packet id),
/// [`Subscriptions::answered`] at its SUBACK, [`Subscriptions::due`] on a timer, and
/// [`Subscriptions::connected`] at every CONNACK (a clean session starts with none).
#[derive(Debug, Clone)]
pub struct Subscriptions<F> {
    /// Handed to the client, not yet reported sent; the client sends them in this order.
    handed: VecDeque<Vec<F>>,
    /// Sent, by packet id, waiting for their SUBACK.
    awaiting: HashMap<u16, Vec<F>>,
    /// Refused filters to ask for again.
    refused: Vec<F>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl<F: Clone> Subscriptions<F> {
    /// Refused filters are asked again after a jittered wait doubling from `initial` to `max`
    /// for as long as they keep being refused on the same connection.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            handed: VecDeque::new(),
            awaiting: HashMap::new(),
            refused: Vec::new(),
            retry_at: None,
            backoff: Backoff::new(initial, max),
        }
    }

    /// A new connection: with a clean session the daemon subscribes afresh, so nothing of
    /// the old connection is waited for or retried, and the backoff starts over.
    pub fn connected(&mut self) {
        self.handed.clear();
        self.awaiting.clear();
        self.refused.clear();
        self.retry_at = None;
        self.backoff.reset();
    }

    /// A SUBSCRIBE with these filters was handed to the client.
    pub fn asked(&mut self, filters: Vec<F>) {
        self.handed.push_back(filters);
    }

    /// The client sent the oldest SUBSCRIBE handed to it, under packet id `pkid`. `false` when
    /// none was waiting (one handed before the last [`Subscriptions::connected`]).
    pub fn went_out(&mut self, pkid: u16) -> bool {
        match self.handed.pop_front() {
            Some(filters) => {
                self.awaiting.insert(pkid, filters);
                true
            }
            None => false,
        }
    }

    /// The SUBACK for packet id `pkid`, one `granted` flag per filter. Refused filters join
    /// those waiting to be asked again; the wait doubles with every SUBACK that refuses some.
    pub fn answered(
        &mut self,
        pkid: u16,
        granted: &[bool],
        now: Instant,
        rng: &mut impl Rng,
    ) -> Result<Answer<F>, Unmatched> {
        let filters = self
            .awaiting
            .remove(&pkid)
            .ok_or(Unmatched::UnknownPacket(pkid))?;
        if filters.len() != granted.len() {
            return Err(Unmatched::CodeCount {
                pkid,
                codes: granted.len(),
                filters: filters.len(),
            });
        }
        let (mut ok, mut refused) = (Vec::new(), Vec::new());
        for (filter, &g) in filters.into_iter().zip(granted) {
            if g {
                ok.push(filter)
            } else {
                refused.push(filter)
            }
        }
        let retry_in = if refused.is_empty() {
            None
        } else {
            let wait = self.backoff.next_delay(rng);
            self.refused.extend(refused.iter().cloned());
            // The earliest pending retry wins: filters refused later go along with it.
            let at = now + wait;
            self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
            Some(wait)
        };
        Ok(Answer {
            granted: ok,
            refused,
            retry_in,
        })
    }

    /// When the next retry is due, if any filter waits for one.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The refused filters to ask for again, once their retry is due at `now`; the caller
    /// subscribes to them and reports the SUBSCRIBE with [`Subscriptions::asked`].
    pub fn due(&mut self, now: Instant) -> Option<Vec<F>> {
        match self.retry_at {
            Some(at) if at <= now => {
                self.retry_at = None;
                Some(std::mem::take(&mut self.refused))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(8);

    fn subs() -> Subscriptions<&'static str> {
        Subscriptions::new(MIN, MAX)
    }

    #[test]
    fn a_fully_granted_subscribe_leaves_nothing_to_retry() {
        let (mut s, mut rng, now) = (subs(), StdRng::seed_from_u64(1), Instant::now());
        s.asked(vec!["a", "b"]);
        assert!(s.went_out(7));
        let answer = s.answered(7, &[true, true], now, &mut rng).unwrap();
        assert_eq!(answer.granted, ["a", "b"]);
        assert!(answer.refused.is_empty() && answer.retry_in.is_none());
        assert_eq!(s.retry_at(), None);
        assert_eq!(s.due(now + MAX * 10), None);
    }

    #[test]
    fn refused_filters_are_asked_again_after_the_backoff_and_only_they() {
        let (mut s, mut rng, t0) = (subs(), StdRng::seed_from_u64(2), Instant::now());
        s.asked(vec!["drive", "controller", "cmd", "persisted"]);
        s.went_out(1);
        let answer = s
            .answered(1, &[true, false, true, false], t0, &mut rng)
            .unwrap();
        assert_eq!(answer.granted, ["drive", "cmd"]);
        assert_eq!(answer.refused, ["controller", "persisted"]);
        let wait = answer.retry_in.unwrap();
        // Equal jitter on the first step: between half of `MIN` and `MIN`.
        assert!(wait >= MIN / 2 && wait <= MIN, "{wait:?}");
        assert_eq!(s.due(t0 + wait - Duration::from_millis(1)), None);
        assert_eq!(s.due(t0 + wait), Some(vec!["controller", "persisted"]));
        // Taken once.
        assert_eq!(s.due(t0 + wait * 2), None);
    }

    #[test]
    fn each_refusal_on_the_same_connection_waits_longer_up_to_the_max_and_a_connect_starts_over() {
        let (mut s, mut rng, mut now) = (subs(), StdRng::seed_from_u64(3), Instant::now());
        let mut ceilings = Vec::new();
        for pkid in 1..=6 {
            s.asked(vec!["persisted"]);
            s.went_out(pkid);
            let wait = s
                .answered(pkid, &[false], now, &mut rng)
                .unwrap()
                .retry_in
                .unwrap();
            ceilings.push(wait);
            now += wait;
            assert_eq!(s.due(now), Some(vec!["persisted"]));
        }
        // Ceilings 1, 2, 4, 8, 8, 8 s; each wait lies in the upper half of its ceiling.
        for (wait, ceiling) in ceilings.iter().zip([1, 2, 4, 8, 8, 8]) {
            let c = Duration::from_secs(ceiling);
            assert!(*wait >= c / 2 && *wait <= c, "{wait:?} against {c:?}");
        }
        s.connected();
        s.asked(vec!["persisted"]);
        s.went_out(9);
        let wait = s
            .answered(9, &[false], now, &mut rng)
            .unwrap()
            .retry_in
            .unwrap();
        assert!(
            wait <= MIN,
            "the backoff starts over after a connect: {wait:?}"
        );
    }

    #[test]
    fn subacks_are_matched_by_packet_id_whatever_their_order() {
        let (mut s, mut rng, now) = (subs(), StdRng::seed_from_u64(4), Instant::now());
        s.asked(vec!["rig/+/birth", "rig/+/samples"]);
        s.asked(vec!["rig/+/cmd"]);
        s.went_out(10);
        s.went_out(11);
        let second = s.answered(11, &[false], now, &mut rng).unwrap();
        assert_eq!(second.refused, ["rig/+/cmd"]);
        let first = s.answered(10, &[true, false], now, &mut rng).unwrap();
        assert_eq!(first.refused, ["rig/+/samples"]);
        // Both wait for the earlier of the two retries, together.
        let at = s.retry_at().unwrap();
        assert_eq!(
            at,
            now + second.retry_in.unwrap().min(first.retry_in.unwrap())
        );
        assert_eq!(s.due(at), Some(vec!["rig/+/cmd", "rig/+/samples"]));
    }

    #[test]
    fn a_connect_forgets_the_old_connection_and_unmatched_subacks_are_errors() {
        let (mut s, mut rng, now) = (subs(), StdRng::seed_from_u64(5), Instant::now());
        s.asked(vec!["a"]);
        s.went_out(1);
        s.answered(1, &[false], now, &mut rng).unwrap();
        s.asked(vec!["b"]);
        s.connected();
        assert_eq!(s.retry_at(), None);
        assert_eq!(s.due(now + MAX * 10), None);
        assert!(
            !s.went_out(2),
            "the SUBSCRIBE handed before the connect is not waited for"
        );
        assert_eq!(
            s.answered(2, &[true], now, &mut rng),
            Err(Unmatched::UnknownPacket(2))
        );
        s.asked(vec!["a", "b"]);
        s.went_out(3);
        assert_eq!(
            s.answered(3, &[true], now, &mut rng),
            Err(Unmatched::CodeCount {
                pkid: 3,
                codes: 1,
                filters: 2
            })
        );
    }
}
