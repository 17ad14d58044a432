//! Percentiles by the nearest-rank method: p(q) is the smallest sample with at least q of the
//! samples at or below it — always an observed value, never interpolated.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[f64]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mean = if n == 0 {
        f64::NAN
    } else {
        sorted.iter().sum::<f64>() / n as f64
    };
    Summary {
        n,
        min: sorted.first().copied().unwrap_or(f64::NAN),
        p50: percentile(&sorted, 0.50),
        p90: percentile(&sorted, 0.90),
        p99: percentile(&sorted, 0.99),
        max: sorted.last().copied().unwrap_or(f64::NAN),
        mean,
    }
}

/// The most events inside any window of `width` seconds (times in seconds, any order).
pub fn peak_in_window(times: &[f64], width: f64) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&samples);
        assert_eq!((s.p50, s.p90, s.p99, s.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        let s = summarize(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.p50, s.max, s.mean), (1.0, 2.0, 3.0, 2.0));
    }

    #[test]
    fn peak_window_counts_events_less_than_a_width_apart() {
        assert_eq!(peak_in_window(&[0.0, 0.5, 0.99, 1.0, 1.5, 3.0], 1.0), 3);
        assert_eq!(peak_in_window(&[], 1.0), 0);
    }
}
