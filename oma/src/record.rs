//! Owns the checks on an output-only record (channels × samples at one sample rate): sizes,
//! non-finite samples, dead (constant) and clipped channels. Computes nothing modal.

/// A channel is called clipped when at least this many samples sit exactly at its maximum
/// (or exactly at its minimum)...
pub const CLIPPED_MIN_SAMPLES: usize = 5;
/// ...and those samples are at least this fraction of the record. A continuous random signal
/// reaches its extreme once; an ADC quantises to a few thousand levels, so a handful of ties at
/// the extreme are normal, but 0.1 % of a record pinned to one value is a rail.
pub const CLIPPED_MIN_FRACTION: f64 = 1e-3;

/// Every problem with `channels` (one `Vec` per channel, all of equal length) and
/// `sample_rate_hz`, as sentences. Empty when the record is usable.
pub fn record_problems(channels: &[Vec<f64>], sample_rate_hz: f64) -> Vec<String> {
    let mut problems = Vec::new();
    if !(sample_rate_hz.is_finite() && sample_rate_hz > 0.0) {
        problems.push(format!(
            "sample_rate_hz = {sample_rate_hz} must be positive and finite"
        ));
    }
    if channels.is_empty() {
        problems.push("the record has no channels: give at least one output channel".into());
        return problems;
    }
    let samples = channels[0].len();
    for (c, channel) in channels.iter().enumerate().skip(1) {
        if channel.len() != samples {
            problems.push(format!(
                "channel {c} has {} samples but channel 0 has {samples}: all channels must \
                 cover the same instants",
                channel.len()
            ));
        }
    }
    for (c, channel) in channels.iter().enumerate() {
        channel_problems(c, channel, &mut problems);
    }
    problems
}

fn channel_problems(c: usize, channel: &[f64], problems: &mut Vec<String>) {
    if channel.is_empty() {
        problems.push(format!("channel {c} is empty"));
        return;
    }
    let non_finite = channel.iter().filter(|x| !x.is_finite()).count();
    if non_finite > 0 {
        let first = channel.iter().position(|x| !x.is_finite()).unwrap_or(0);
        problems.push(format!(
            "channel {c} has {non_finite} NaN or infinite samples (the first at index \
             {first}): cut the range around the gap or repair the channel"
        ));
        return;
    }
    let (min, max) = channel
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    if min == max {
        problems.push(format!(
            "channel {c} is constant at {min} (zero variance): a dead or disconnected sensor; \
             leave it out"
        ));
        return;
    }
    let threshold =
        CLIPPED_MIN_SAMPLES.max((CLIPPED_MIN_FRACTION * channel.len() as f64).ceil() as usize);
    for (what, rail) in [("maximum", max), ("minimum", min)] {
        let at_rail = channel.iter().filter(|&&x| x == rail).count();
        if at_rail >= threshold {
            problems.push(format!(
                "channel {c} looks clipped: {at_rail} samples ({:.2} %) sit exactly at its \
                 {what} {rail}; lower the sensor gain or range, or leave the channel out",
                100.0 * at_rail as f64 / channel.len() as f64
            ));
        }
    }
}

/// The channels with their means removed (OMA identifies the fluctuating response; an offset
/// would appear as a pole at 0 Hz).
pub(crate) fn centred(channels: &[Vec<f64>]) -> Vec<Vec<f64>> {
    channels
        .iter()
        .map(|channel| {
            let mean = channel.iter().sum::<f64>() / channel.len().max(1) as f64;
            channel.iter().map(|x| x - mean).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic signal with no repeated values at its extremes.
    fn ramp(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (i as f64 * 0.7371).sin() * (1.0 + 0.5 * (i as f64 * 0.013).cos()))
            .collect()
    }

    #[test]
    fn a_clean_record_has_no_problems() {
        assert!(record_problems(&[ramp(1000), ramp(1000)], 100.0).is_empty());
    }

    #[test]
    fn every_problem_of_a_bad_record_is_reported_at_once() {
        let mut with_nan = ramp(1000);
        with_nan[17] = f64::NAN;
        with_nan[18] = f64::INFINITY;
        let constant = vec![3.0; 1000];
        let mut clipped = ramp(1000);
        for x in clipped.iter_mut().step_by(50) {
            *x = 2.0;
        }
        let short = ramp(999);
        let problems = record_problems(&[with_nan, constant, clipped, short], -1.0);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("sample_rate_hz"));
        assert!(problems[1].contains("channel 3 has 999 samples"));
        assert!(problems[2].contains("2 NaN or infinite samples (the first at index 17)"));
        assert!(problems[3].contains("channel 1 is constant"));
        assert!(problems[4].contains("channel 2 looks clipped: 20 samples"));
    }

    #[test]
    fn a_few_ties_at_the_extreme_are_not_clipping() {
        let mut channel = ramp(100_000);
        for x in channel.iter_mut().take(4) {
            *x = 9.0;
        }
        assert!(record_problems(&[channel], 1.0).is_empty());
    }

    #[test]
    fn no_channels_is_a_problem() {
        let problems = record_problems(&[], 1.0);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("no channels"));
    }
}
