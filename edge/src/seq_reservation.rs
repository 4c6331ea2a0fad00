//! Pure: the block-seq reservation (a hi/lo allocator). The `next_seq` state file holds an
//! exclusive bound every seq ever sent lies below; the acquisition task renews it ahead of use
//! instead of persisting every block, so the edge fsyncs once per [`reservation_seqs`] / 2
//! blocks, not once per block. Knows no files or tasks; the acquisition task does the writes.
//!
//! A seq is never reused across a crash or power loss: no block leaves with a seq at or above
//! the durable bound, and a restart starts at the bound (or above the spool's last seq, if
//! higher). What a crash leaves between the last seq used and the bound is declared `skipped`
//! at the next start (`losses`); a clean shutdown writes the exact next seq back, so only a
//! crash leaves such a gap.

use std::time::Duration;

/// Fewest seqs reserved ahead of the next one. At 1 kHz with one-sample blocks (1000 blocks/s)
/// that still means a write only every ~2 s; at the default 10 blocks/s, every ~3.5 min.
pub const MIN_RESERVED_SEQS: u64 = 4096;
/// Most seqs reserved ahead: bounds the gap a crash leaves (one declaration covers it; the
/// twin accepts up to 2^25 per declaration).
pub const MAX_RESERVED_SEQS: u64 = 1 << 20;
/// Seq consumption the reservation should cover beyond the next seq, so writes stay rarer than
/// one per ~5 s even at block rates where [`MIN_RESERVED_SEQS`] would not be enough.
pub const RESERVED_SPAN: Duration = Duration::from_secs(10);

/// Where a run starts numbering: the durable bound of the last run, or above the highest seq
/// its spool holds when that is higher (a lost or restored state file), whichever is higher.
pub const fn start_seq(reserved_until: Option<u64>, spool_last_seq: Option<u64>) -> u64 {
    let from_file = match reserved_until {
        Some(r) => r,
        None => 0,
    };
    let from_spool = match spool_last_seq {
        Some(s) => s.saturating_add(1),
        None => 0,
    };
    if from_file > from_spool {
        from_file
    } else {
        from_spool
    }
}

/// Shortest time a rate is measured over: a burst (a backlog batched at start) must not look
/// like a sustained rate and reserve a huge range.
pub const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

/// Seqs to reserve ahead after `used_seqs` were used in `elapsed`: about [`RESERVED_SPAN`] of
/// them at that rate (measured over at least [`MIN_RATE_WINDOW`]), within
/// [`MIN_RESERVED_SEQS`]..=[`MAX_RESERVED_SEQS`].
pub fn reservation_seqs(used_seqs: u64, elapsed: Duration) -> u64 {
    let span_ns = RESERVED_SPAN.as_nanos();
    let elapsed_ns = elapsed.max(MIN_RATE_WINDOW).as_nanos();
    let ahead = u128::from(used_seqs).saturating_mul(span_ns) / elapsed_ns;
    u64::try_from(ahead)
        .unwrap_or(u64::MAX)
        .clamp(MIN_RESERVED_SEQS, MAX_RESERVED_SEQS)
}

/// What the next block with a given seq needs before it may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Below the durable bound: send it.
    Go,
    /// Not covered yet; wait for the renewal in flight (or start one: [`SeqReservation::renewal`]).
    Wait,
}

/// The reservation bookkeeping. See the module docs.
#[derive(Debug, Clone)]
pub struct SeqReservation {
    /// Every seq below it may be sent: the state file holds it (written and fsynced).
    durable_until: u64,
    /// The bound a write in flight will make durable.
    pending: Option<u64>,
    /// The seq and time the last renewal was started at, to size the next one by the rate.
    last_renewal: Option<(u64, tokio::time::Instant)>,
}

impl SeqReservation {
    /// Nothing reserved yet: `durable_until` is where this run starts (the last run's bound is
    /// durable, and nothing at or above it may be sent before a renewal).
    pub const fn new(start_seq: u64) -> Self {
        Self {
            durable_until: start_seq,
            pending: None,
            last_renewal: None,
        }
    }

    pub const fn durable_until(&self) -> u64 {
        self.durable_until
    }

    pub const fn pending(&self) -> Option<u64> {
        self.pending
    }

    /// Whether the block with `seq` may leave now.
    pub const fn gate(&self, seq: u64) -> Gate {
        if seq < self.durable_until {
            Gate::Go
        } else {
            Gate::Wait
        }
    }

    /// The bound to write now, if a renewal is due: none is in flight and fewer than half the
    /// reserved seqs are left beyond `next_seq` (the next seq to be numbered), or `next_seq`
    /// already reached the bound. Marks it in flight; report the outcome with
    /// [`Self::renewed`] or [`Self::renewal_failed`].
    pub fn renewal(&mut self, next_seq: u64, now: tokio::time::Instant) -> Option<u64> {
        if self.pending.is_some() {
            return None;
        }
        let ahead = match self.last_renewal {
            Some((seq, at)) => reservation_seqs(
                next_seq.saturating_sub(seq),
                now.saturating_duration_since(at),
            ),
            None => MIN_RESERVED_SEQS,
        };
        let left = self.durable_until.saturating_sub(next_seq);
        if left > ahead / 2 {
            return None;
        }
        let until = next_seq.saturating_add(ahead);
        self.pending = Some(until);
        self.last_renewal = Some((next_seq, now));
        Some(until)
    }

    /// The write of `until` is durable.
    pub fn renewed(&mut self, until: u64) {
        self.durable_until = self.durable_until.max(until);
        if self.pending == Some(until) {
            self.pending = None;
        }
    }

    /// The write of the pending bound failed: nothing new is durable; the next
    /// [`Self::renewal`] tries again.
    pub fn renewal_failed(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn a_run_starts_at_the_durable_bound_or_above_the_spool_whichever_is_higher() {
        assert_eq!(start_seq(None, None), 0);
        assert_eq!(start_seq(Some(4096), None), 4096);
        assert_eq!(start_seq(Some(4096), Some(100)), 4096);
        // A state file older than the spool (restored from a backup, or lost).
        assert_eq!(start_seq(Some(10), Some(100)), 101);
        assert_eq!(start_seq(None, Some(7)), 8);
        assert_eq!(start_seq(None, Some(u64::MAX)), u64::MAX);
    }

    #[test]
    fn nothing_leaves_before_the_first_reservation_is_durable() {
        let now = Instant::now();
        let mut r = SeqReservation::new(500);
        assert_eq!(r.gate(500), Gate::Wait);
        let until = r.renewal(500, now).unwrap();
        assert_eq!(until, 500 + MIN_RESERVED_SEQS);
        // In flight: no second write, and still not covered.
        assert_eq!(r.renewal(500, now), None);
        assert_eq!(r.gate(500), Gate::Wait);
        r.renewed(until);
        assert_eq!(r.gate(500), Gate::Go);
        assert_eq!(r.gate(until - 1), Gate::Go);
        assert_eq!(r.gate(until), Gate::Wait);
    }

    #[test]
    fn renews_when_half_the_reservation_is_used_so_the_boundary_block_rarely_waits() {
        let t0 = Instant::now();
        let mut r = SeqReservation::new(0);
        let first = r.renewal(0, t0).unwrap();
        r.renewed(first);
        // Slow use (10 blocks/s): the minimum reservation applies.
        let half = MIN_RESERVED_SEQS / 2;
        assert_eq!(r.renewal(half - 1, t0 + Duration::from_secs(204)), None);
        let secs = |n: u64| Duration::from_secs(n);
        let next = r.renewal(half, t0 + secs(205)).unwrap();
        assert_eq!(next, half + MIN_RESERVED_SEQS);
        // The old bound still covers every seq until the new one is durable.
        assert_eq!(r.gate(first - 1), Gate::Go);
        r.renewed(next);
        assert_eq!(r.durable_until(), next);
        assert_eq!(r.pending(), None);
    }

    #[test]
    fn a_fast_block_rate_reserves_ten_seconds_of_blocks() {
        let t0 = Instant::now();
        let mut r = SeqReservation::new(0);
        let first = r.renewal(0, t0).unwrap();
        r.renewed(first);
        // The write waited on: 20 480 seqs in 2 s is 10 240 blocks/s, so 102 400 seqs
        // cover 10 s.
        let until = r.renewal(20_480, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(until, 20_480 + 102_400);
        assert_eq!(
            reservation_seqs(u64::MAX, Duration::from_secs(1)),
            MAX_RESERVED_SEQS
        );
        assert_eq!(reservation_seqs(0, Duration::ZERO), MIN_RESERVED_SEQS);
        // A burst of 3000 seqs in 5 ms is measured over a second: no huge reservation.
        assert_eq!(reservation_seqs(3000, Duration::from_millis(5)), 30_000);
    }

    #[test]
    fn a_failed_write_leaves_the_bound_and_is_retried() {
        let now = Instant::now();
        let mut r = SeqReservation::new(10);
        let until = r.renewal(10, now).unwrap();
        r.renewal_failed();
        assert_eq!(r.gate(10), Gate::Wait);
        assert_eq!(r.durable_until(), 10);
        assert_eq!(r.renewal(10, now), Some(until));
        // A late report of an older, lower bound never lowers it.
        r.renewed(until);
        r.renewed(until - 5);
        assert_eq!(r.durable_until(), until);
    }

    #[test]
    fn a_restart_after_a_crash_starts_at_the_bound_and_never_reuses_a_sent_seq() {
        let now = Instant::now();
        // Run 1 sends seqs 0..3000 at once, renewing as it goes, then dies.
        let mut r = SeqReservation::new(start_seq(None, None));
        let mut file = None;
        let mut sent_max = None;
        for seq in 0..3000u64 {
            if let Some(until) = r.renewal(seq, now) {
                r.renewed(until);
                file = Some(until);
            }
            assert_eq!(r.gate(seq), Gate::Go);
            sent_max = Some(seq);
        }
        // Its spool holds up to 2990 (the last blocks died in a channel).
        let next = start_seq(file, Some(2990));
        assert!(next > sent_max.unwrap());
        assert_eq!(next, file.unwrap());
        // The next run's gap to declare: 2991..next - 1.
        assert!(next - 2991 <= MAX_RESERVED_SEQS);
    }
}
