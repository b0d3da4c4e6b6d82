//! How late packets arrive: the fastest recent transit time, and the distribution of delays
//! relative to it.
//!
//! Every packet's *transit* is its arrival time minus its media time (its timestamp on the
//! receiver's clock, up to an unknown constant offset). Transit differences are all that
//! matter: the *baseline* is the smallest transit of the packets that arrived within
//! [`JitterConfig::baseline_window`](crate::JitterConfig::baseline_window), and a packet's
//! *relative delay* is its transit minus the baseline: zero for a packet that came by the
//! fastest path, 300 ms for one held back by a 300 ms stall. Taking the minimum over a window,
//! rather than over the whole call, lets the baseline follow clock drift and route changes.
//!
//! Relative delays go into a histogram with exponential forgetting (as in WebRTC's NetEQ):
//! before each packet is counted, every bucket is scaled by a forgetting factor, so a burst of
//! late packets raises the high quantiles at once and fades after a few seconds of calm.

use std::collections::VecDeque;

/// Width of one histogram bucket.
const BUCKET_NANOS: i64 = 5_000_000;

/// The most baseline candidates kept, so that a flood of packets cannot grow memory.
const MAX_BASELINE_CANDIDATES: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct DelayEstimator {
    window_nanos: i64,
    /// Candidates for the baseline as `(arrival, transit)` in nanoseconds: arrivals
    /// increasing, transits strictly increasing, so the front is the window's minimum.
    minima: VecDeque<(i64, i64)>,
    /// Weight of relative delays per bucket; the last bucket holds everything beyond.
    weights: Vec<f64>,
    total: f64,
    /// Kept share of the existing weight per packet counted.
    forget: f64,
    quantile: f64,
}

impl DelayEstimator {
    /// `span_nanos` is the largest delay the histogram resolves, `forget` the weight kept per
    /// packet, `quantile` the share of delays [`Self::delay_quantile`] covers.
    pub(crate) fn new(window_nanos: i64, span_nanos: i64, forget: f64, quantile: f64) -> Self {
        let n_buckets = usize::try_from(span_nanos / BUCKET_NANOS + 2).unwrap_or(2);
        Self {
            window_nanos,
            minima: VecDeque::new(),
            weights: vec![0.0; n_buckets],
            total: 0.0,
            forget,
            quantile,
        }
    }

    /// Changes the forgetting factor, as when the frame duration (and so the packet rate)
    /// changes.
    pub(crate) fn set_forget(&mut self, forget: f64) {
        self.forget = forget;
    }

    /// Counts a packet that arrived at `arrival` with `transit`, both in nanoseconds, and
    /// returns its relative delay. Arrivals must not go backwards.
    pub(crate) fn observe(&mut self, arrival: i64, transit: i64) -> i64 {
        while self.minima.back().is_some_and(|&(_, t)| t >= transit) {
            self.minima.pop_back();
        }
        self.minima.push_back((arrival, transit));
        while self.minima.len() > 1
            && (self.minima.len() > MAX_BASELINE_CANDIDATES
                || self.minima.front().is_some_and(|&(a, _)| a < arrival - self.window_nanos))
        {
            self.minima.pop_front();
        }
        let relative = transit - self.baseline().unwrap_or(transit);
        self.count(relative);
        relative
    }

    fn count(&mut self, relative: i64) {
        let last = self.weights.len() - 1;
        let bucket = usize::try_from(relative / BUCKET_NANOS).unwrap_or(0).min(last);
        for weight in &mut self.weights {
            *weight *= self.forget;
        }
        self.weights[bucket] += 1.0 - self.forget;
        self.total = self.total * self.forget + (1.0 - self.forget);
    }

    /// The smallest recent transit, once a packet has been seen since the last reset.
    pub(crate) fn baseline(&self) -> Option<i64> {
        self.minima.front().map(|&(_, transit)| transit)
    }

    /// Forgets the baseline, for a new stream whose timestamps have a new origin. The
    /// histogram stays: the network is the same.
    pub(crate) fn reset_baseline(&mut self) {
        self.minima.clear();
    }

    /// The relative delay that the configured share of recent packets did not exceed, rounded
    /// up to the histogram's resolution; zero before any packet.
    pub(crate) fn delay_quantile(&self) -> i64 {
        if self.total <= 0.0 {
            return 0;
        }
        let wanted = self.quantile * self.total;
        let mut cumulative = 0.0;
        for (idx, weight) in self.weights.iter().enumerate() {
            cumulative += weight;
            if cumulative >= wanted {
                return (idx as i64 + 1) * BUCKET_NANOS;
            }
        }
        self.weights.len() as i64 * BUCKET_NANOS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn estimator() -> DelayEstimator {
        DelayEstimator::new(2_000 * MS, 500 * MS, 0.995, 0.95)
    }

    #[test]
    fn relative_delay_is_measured_from_the_fastest_recent_packet() {
        let mut e = estimator();
        assert_eq!(e.delay_quantile(), 0);
        assert_eq!(e.observe(0, 30 * MS), 0);
        assert_eq!(e.observe(20 * MS, 50 * MS), 20 * MS);
        assert_eq!(e.observe(40 * MS, 25 * MS), 0);
        assert_eq!(e.baseline(), Some(25 * MS));
        assert_eq!(e.observe(60 * MS, 45 * MS), 20 * MS);
    }

    #[test]
    fn the_baseline_forgets_packets_older_than_its_window() {
        let mut e = estimator();
        e.observe(0, 10 * MS);
        for idx in 1..=101 {
            e.observe(idx * 20 * MS, 40 * MS);
        }
        assert_eq!(e.baseline(), Some(40 * MS), "the fast packet at 0 ms is more than 2 s old");
        e.reset_baseline();
        assert_eq!(e.baseline(), None);
        assert_eq!(e.observe(3_000 * MS, 500 * MS), 0);
    }

    #[test]
    fn the_quantile_rises_with_a_burst_and_fades_with_calm() {
        let mut e = estimator();
        let mut arrival = 0;
        let mut feed = |e: &mut DelayEstimator, n: i64, relative: i64| {
            for _ in 0..n {
                arrival += 20 * MS;
                e.observe(arrival, 100 * MS + relative);
            }
        };
        feed(&mut e, 500, 0);
        assert_eq!(e.delay_quantile(), 5 * MS);
        feed(&mut e, 20, 200 * MS);
        assert!(e.delay_quantile() >= 200 * MS, "{}", e.delay_quantile());
        feed(&mut e, 300, 0);
        assert_eq!(e.delay_quantile(), 5 * MS, "six seconds of calm forget twenty late packets");
    }

    #[test]
    fn delays_beyond_the_span_land_in_the_last_bucket() {
        let mut e = DelayEstimator::new(2_000 * MS, 100 * MS, 0.5, 0.95);
        e.observe(0, 0);
        e.observe(1, 10_000 * MS);
        assert_eq!(e.delay_quantile(), 110 * MS);
    }
}
