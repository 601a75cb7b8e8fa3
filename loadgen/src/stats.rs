//! Latency histograms (HDR, microseconds) and fairness.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant figures the histograms keep (0.1% resolution at any magnitude).
const SIGFIG: u8 = 3;

/// An HDR histogram of latencies in microseconds, 1 us up to an hour (values above are
/// clamped: a lock wait of an hour is reported as one).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, SIGFIG).expect("static bounds are valid")
}

/// Records `d` in microseconds (at least 1, at most the histogram's top).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, h.high());
    h.record(us)
        .expect("value clamped to the histogram's range");
}

/// The percentiles a report prints, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    /// The percentile curve: `[percentile, microseconds]` points for plots, spaced evenly
    /// on the 1/(1-q) log scale as far as the sample count supports.
    pub curve: Vec<[f64; 2]>,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            curve: curve(h),
        })
    }
}

/// Points of the percentile curve, at `x = log10(1 / (1 - q))` steps of 0.05 from q = 0 up to
/// where the samples run out (x = log10(count)), and the maximum at the end.
pub fn curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    let count = h.len();
    if count == 0 {
        return Vec::new();
    }
    let x_max = (count as f64).log10().min(6.0);
    let steps = (x_max * 20.0 + 1e-9).floor() as usize;
    let mut points = Vec::with_capacity(steps + 2);
    for i in 0..=steps {
        let x = i as f64 / 20.0;
        let q = 1.0 - 10f64.powf(-x);
        points.push([q * 100.0, h.value_at_quantile(q) as f64]);
    }
    points.push([100.0, h.max() as f64]);
    points
}

/// Jain's fairness index over per-client grant counts: (sum x)^2 / (n * sum x^2).
/// 1 when every client got the same, 1/n when one client got everything. None for no
/// clients or no grants at all.
pub fn jain_index(grants: &[u64]) -> Option<f64> {
    let n = grants.len() as f64;
    let sum: f64 = grants.iter().map(|&x| x as f64).sum();
    let sum_sq: f64 = grants.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if grants.is_empty() || sum_sq == 0.0 {
        return None;
    }
    Some(sum * sum / (n * sum_sq))
}

/// How evenly grants went to clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fairness {
    pub clients: usize,
    pub jain: Option<f64>,
    pub max_grants: u64,
    pub min_grants: u64,
    /// max / min; None when some client got nothing (infinitely unfair).
    pub max_min_ratio: Option<f64>,
}

impl Fairness {
    pub fn of(grants: &[u64]) -> Fairness {
        let max = grants.iter().copied().max().unwrap_or(0);
        let min = grants.iter().copied().min().unwrap_or(0);
        Fairness {
            clients: grants.len(),
            jain: jain_index(grants),
            max_grants: max,
            min_grants: min,
            max_min_ratio: (min > 0).then(|| max as f64 / min as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn jain_index_on_known_inputs() {
        assert!(close(jain_index(&[5, 5, 5, 5]).unwrap(), 1.0));
        // One of four clients got everything: 1/n.
        assert!(close(jain_index(&[10, 0, 0, 0]).unwrap(), 0.25));
        // (1+2+3)^2 / (3 * (1+4+9)) = 36/42.
        assert!(close(jain_index(&[1, 2, 3]).unwrap(), 36.0 / 42.0));
        // Half the clients share everything equally: 1/2.
        assert!(close(jain_index(&[7, 7, 0, 0]).unwrap(), 0.5));
        assert_eq!(jain_index(&[]), None);
        assert_eq!(jain_index(&[0, 0]), None);
    }

    #[test]
    fn fairness_max_min() {
        let f = Fairness::of(&[10, 20, 40]);
        assert_eq!((f.max_grants, f.min_grants), (40, 10));
        assert!(close(f.max_min_ratio.unwrap(), 4.0));
        assert_eq!(Fairness::of(&[3, 0]).max_min_ratio, None);
    }

    #[test]
    fn histogram_percentiles_of_a_known_distribution() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let l = Latency::from_histogram(&h).unwrap();
        assert_eq!(l.count, 10_000);
        assert_eq!(l.min, 1);
        // Within the histogram's 0.1% resolution.
        let within = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001;
        assert!(within(l.p50, 5_000), "{}", l.p50);
        assert!(within(l.p90, 9_000), "{}", l.p90);
        assert!(within(l.p99, 9_900), "{}", l.p99);
        assert!(within(l.p999, 9_990), "{}", l.p999);
        assert!(within(l.max, 10_000), "{}", l.max);
        assert!((l.mean - 5_000.5).abs() < 10.0);
        // The curve rises and ends at the maximum; 10^4 samples reach x = 4 (99.99%).
        assert!(l.curve.windows(2).all(|w| w[0][1] <= w[1][1]));
        assert_eq!(l.curve.last().unwrap()[0], 100.0);
        assert_eq!(l.curve.len(), 4 * 20 + 2);
    }

    #[test]
    fn records_clamp_to_the_range() {
        let mut h = histogram();
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(10 * 3600));
        assert_eq!(h.min(), 1);
        assert!(h.max() >= 3_600_000_000);
        assert_eq!(Latency::from_histogram(&histogram()), None);
    }
}
