//! Owns one rig's sliding window of recent frames: encoded once for every browser, decoded for
//! the RMS per floor, trimmed to a span of sample time. Pure: no clock, no I/O.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::frame::Frame;

/// A frame as kept: its bytes for browsers and its values for the RMS.
#[derive(Debug, Clone)]
struct Kept {
    /// Time just after its last sample, ns since the Unix epoch.
    end_ns: u64,
    frame: Frame,
    bytes: Bytes,
}

/// Recent frames of one kind (measured or estimated), at most `span_ns` of sample time.
#[derive(Debug, Clone)]
pub struct Window {
    span_ns: u64,
    kept: VecDeque<Kept>,
}

impl Window {
    /// A window of `span_ns` of sample time.
    pub fn new(span_ns: u64) -> Self {
        Self {
            span_ns,
            kept: VecDeque::new(),
        }
    }

    /// Adds a frame (its encoded bytes too) and forgets frames that fell out of the span.
    pub fn push(&mut self, frame: Frame, bytes: Bytes) {
        let n = frame.samples() as u64;
        let end_ns = frame
            .first_timestamp_ns
            .saturating_add(n.saturating_mul(frame.sample_period_ns));
        self.kept.push_back(Kept {
            end_ns,
            frame,
            bytes,
        });
        let newest = self.kept.iter().map(|k| k.end_ns).max().unwrap_or(0);
        let oldest_allowed = newest.saturating_sub(self.span_ns);
        while self
            .kept
            .front()
            .is_some_and(|k| k.end_ns <= oldest_allowed)
        {
            self.kept.pop_front();
        }
    }

    /// The span of sample time kept, ns.
    pub fn span_ns(&self) -> u64 {
        self.span_ns
    }

    /// Forgets everything (a new session).
    pub fn clear(&mut self) {
        self.kept.clear();
    }

    /// The encoded frames, oldest first.
    pub fn frames(&self) -> impl Iterator<Item = &Bytes> {
        self.kept.iter().map(|k| &k.bytes)
    }

    /// Frames kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Root mean square of each channel over the window, NaN samples left out; channels with no
    /// value are absent.
    pub fn rms_by_channel(&self) -> BTreeMap<u16, f64> {
        let mut sums: BTreeMap<u16, (f64, u64)> = BTreeMap::new();
        for k in &self.kept {
            for (id, values) in &k.frame.channels {
                let entry = sums.entry(*id).or_default();
                for v in values.iter().filter(|v| !v.is_nan()) {
                    entry.0 += f64::from(*v) * f64::from(*v);
                    entry.1 += 1;
                }
            }
        }
        sums.into_iter()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(id, (sum, n))| (id, (sum / n as f64).sqrt()))
            .collect()
    }
}

/// RMS per floor: the root mean square over every value of the channels on that floor, where
/// `floors` maps a channel id to its floor and `rms` gives each channel's RMS with its sample
/// count equal (channels of one stream carry the same number of samples).
pub fn rms_by_floor(rms: &BTreeMap<u16, f64>, floors: &BTreeMap<u16, u32>) -> BTreeMap<u32, f64> {
    let mut by_floor: BTreeMap<u32, (f64, u32)> = BTreeMap::new();
    for (id, floor) in floors {
        if let Some(r) = rms.get(id) {
            let e = by_floor.entry(*floor).or_default();
            e.0 += r * r;
            e.1 += 1;
        }
    }
    by_floor
        .into_iter()
        .map(|(floor, (sq, n))| (floor, (sq / f64::from(n)).sqrt()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::live::frame::{FrameKind, encode};

    fn frame(first_index: u64, period_ns: u64, values: Vec<f32>) -> Frame {
        Frame {
            kind: FrameKind::Samples,
            stream_id: 0,
            first_sample_index: first_index,
            first_timestamp_ns: first_index * period_ns,
            sample_period_ns: period_ns,
            channels: vec![(1, values)],
        }
    }

    #[test]
    fn keeps_only_the_span_of_sample_time() {
        // 1 kHz blocks of 100 samples, a 1 s window: 10 blocks stay.
        let mut w = Window::new(1_000_000_000);
        for b in 0..25u64 {
            let f = frame(b * 100, 1_000_000, vec![0.0; 100]);
            let bytes = encode(&f);
            w.push(f, bytes);
        }
        assert_eq!(w.len(), 10);
        let first = crate::live::frame::decode(w.frames().next().unwrap()).unwrap();
        assert_eq!(first.first_sample_index, 1500);
    }

    #[test]
    fn rms_of_a_sine_over_whole_periods_is_amplitude_over_root_two() {
        // 5 Hz sine of amplitude 2 at 1 kHz for 1 s: exactly 5 periods, so the closed form
        // A/√2 holds up to f32 rounding of the samples (relative 1e-6).
        let mut w = Window::new(10_000_000_000);
        let a = 2.0f64;
        for b in 0..10u64 {
            let values = (0..100u64)
                .map(|k| {
                    let t = (b * 100 + k) as f64 / 1000.0;
                    (a * (2.0 * std::f64::consts::PI * 5.0 * t).sin()) as f32
                })
                .collect();
            let f = frame(b * 100, 1_000_000, values);
            let bytes = encode(&f);
            w.push(f, bytes);
        }
        let rms = w.rms_by_channel()[&1];
        assert!((rms - a / 2f64.sqrt()).abs() < 1e-6 * a, "{rms}");
    }

    #[test]
    fn floor_rms_combines_that_floors_channels_and_skips_missing_values() {
        let mut w = Window::new(10_000_000_000);
        let f = Frame {
            channels: vec![
                (1, vec![3.0, 3.0]),
                (2, vec![4.0, f32::NAN]),
                (3, vec![1.0, 1.0]),
            ],
            ..frame(0, 1_000_000, vec![])
        };
        let bytes = encode(&f);
        w.push(f, bytes);
        let rms = w.rms_by_channel();
        assert_eq!(rms[&2], 4.0);
        let floors = BTreeMap::from([(1, 1), (2, 1), (3, 2)]);
        let by_floor = rms_by_floor(&rms, &floors);
        assert!((by_floor[&1] - (12.5f64).sqrt()).abs() < 1e-12);
        assert_eq!(by_floor[&2], 1.0);
    }
}
