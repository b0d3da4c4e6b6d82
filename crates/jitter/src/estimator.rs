//! How late packets arrive: the fastest recent transit time, the distribution of recent delays
//! relative to it, and the delay peaks that come back periodically.
//!
//! Every packet's *transit* is its arrival time minus its media time (its timestamp on the
//! receiver's clock, up to an unknown constant offset). Transit differences are all that
//! matter: the *baseline* is the smallest transit of the packets that arrived within
//! [`JitterConfig::baseline_window`](crate::JitterConfig::baseline_window), and a packet's
//! *relative delay* is its transit minus the baseline: zero for a packet that came by the
//! fastest path, 300 ms for one held back by a 300 ms stall. Taking the minimum over a window,
//! rather than over the whole call, lets the baseline follow clock drift and route changes.
//!
//! Relative delays are counted per *arrival*: packets that arrive together (within a quarter
//! of a frame of each other) count once, with the largest delay among them. Over TCP a late
//! packet holds back the ones behind it, which then arrive with it; what decides whether
//! playout runs dry is how late each such arrival is, not how many packets it carries. So the
//! burst released by a two-second stall counts as one arrival, not as a hundred.
//!
//! The recent arrivals, those within
//! [`JitterConfig::delay_memory`](crate::JitterConfig::delay_memory), go into a histogram of
//! 5 ms buckets; its quantile is the recent delay. An arrival that comes far above it (by
//! [`JitterConfig::peak_threshold`](crate::JitterConfig::peak_threshold)) is a *peak*. Peaks
//! that keep coming back within
//! [`JitterConfig::peak_period`](crate::JitterConfig::peak_period) of each other are
//! periodic (as in the delay peak detector of WebRTC's NetEQ): from the third one on, the
//! peak level is the highest of them, until no peak has come for twice the longest period
//! between them.

use std::collections::VecDeque;

/// Width of one histogram bucket.
const BUCKET_NANOS: i64 = 5_000_000;

/// The most baseline candidates kept, so that a flood of packets cannot grow memory.
const MAX_BASELINE_CANDIDATES: usize = 1024;

/// The most arrivals the delay memory holds, whatever its length: 20 s of 2.5 ms packets.
const MAX_ARRIVALS: usize = 8192;

/// Peaks remembered, as in NetEQ.
const MAX_PEAKS: usize = 8;

/// Peaks it takes, each within the peak period of the one before, before they count as
/// periodic: two periods, as NetEQ asks.
const PEAKS_TO_TRIGGER: usize = 3;

#[derive(Debug, Clone)]
pub(crate) struct DelayEstimator {
    window_nanos: i64,
    /// Candidates for the baseline as `(arrival, transit)` in nanoseconds: arrivals
    /// increasing, transits strictly increasing, so the front is the window's minimum.
    minima: VecDeque<(i64, i64)>,
    memory_nanos: i64,
    /// Arrivals within the delay memory as `(arrival, bucket)`, oldest first; the last one
    /// may still be gathering packets.
    arrivals: VecDeque<(i64, usize)>,
    /// When the last packet arrived, and the largest relative delay of the arrival it belongs
    /// to.
    last_packet: Option<(i64, i64)>,
    /// Packets closer together than this belong to one arrival.
    burst_gap_nanos: i64,
    /// Arrivals per bucket; the last bucket holds everything beyond.
    counts: Vec<u32>,
    quantile: f64,
    peaks: PeakDetector,
}

#[derive(Debug, Clone)]
struct PeakDetector {
    threshold_nanos: i64,
    /// Zero when peak tracking is off.
    period_nanos: i64,
    /// `(arrival, relative delay)` of the last peaks, oldest first, each within the period of
    /// the one before.
    peaks: VecDeque<(i64, i64)>,
    /// Whether the last arrival counted is a peak (its delay may still grow).
    last_is_peak: bool,
}

impl DelayEstimator {
    /// `window_nanos` is the baseline window, `memory_nanos` how long arrivals count,
    /// `span_nanos` the largest delay the histogram resolves, `quantile` the share of
    /// arrivals [`Self::recent_delay`] covers, and `threshold_nanos` and `period_nanos` define
    /// peaks.
    pub(crate) fn new(
        window_nanos: i64,
        memory_nanos: i64,
        span_nanos: i64,
        quantile: f64,
        threshold_nanos: i64,
        period_nanos: i64,
    ) -> Self {
        let n_buckets = usize::try_from(span_nanos / BUCKET_NANOS + 2).unwrap_or(2);
        Self {
            window_nanos,
            minima: VecDeque::new(),
            memory_nanos,
            arrivals: VecDeque::new(),
            last_packet: None,
            burst_gap_nanos: 5_000_000,
            counts: vec![0; n_buckets],
            quantile,
            peaks: PeakDetector {
                threshold_nanos,
                period_nanos,
                peaks: VecDeque::with_capacity(MAX_PEAKS),
                last_is_peak: false,
            },
        }
    }

    /// Sets the frame duration, which decides which packets arrive together: those within a
    /// quarter of a frame of each other.
    pub(crate) fn set_frame_nanos(&mut self, frame_nanos: i64) {
        self.burst_gap_nanos = frame_nanos / 4;
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
        self.count(arrival, relative);
        relative
    }

    fn count(&mut self, arrival: i64, relative: i64) {
        let bucket = self.bucket(relative);
        match self.last_packet {
            Some((last, largest)) if arrival - last <= self.burst_gap_nanos => {
                // Another packet of the same arrival: it counts only if it came later still.
                self.last_packet = Some((arrival, largest.max(relative)));
                if relative > largest
                    && let Some((_, counted)) = self.arrivals.back_mut()
                {
                    self.counts[*counted] -= 1;
                    self.counts[bucket] += 1;
                    *counted = bucket;
                    self.peaks.grow_last(relative);
                }
            }
            _ => {
                self.last_packet = Some((arrival, relative));
                self.expire(arrival);
                // A peak stands out from the arrivals before it.
                let recent = self.recent_delay();
                self.peaks.observe(arrival, relative, recent);
                self.arrivals.push_back((arrival, bucket));
                self.counts[bucket] += 1;
            }
        }
    }

    fn expire(&mut self, now: i64) {
        while let Some(&(at, bucket)) = self.arrivals.front() {
            if at >= now - self.memory_nanos && self.arrivals.len() < MAX_ARRIVALS {
                break;
            }
            self.counts[bucket] -= 1;
            self.arrivals.pop_front();
        }
    }

    fn bucket(&self, relative: i64) -> usize {
        let last = self.counts.len() - 1;
        usize::try_from(relative / BUCKET_NANOS).unwrap_or(0).min(last)
    }

    /// The smallest recent transit, once a packet has been seen since the last reset.
    pub(crate) fn baseline(&self) -> Option<i64> {
        self.minima.front().map(|&(_, transit)| transit)
    }

    /// Forgets the baseline, for a new stream whose timestamps have a new origin. The delays
    /// stay: the network is the same.
    pub(crate) fn reset_baseline(&mut self) {
        self.minima.clear();
    }

    /// The relative delay that the configured share of the arrivals within the delay memory
    /// did not exceed, rounded up to the histogram's resolution; zero before any packet.
    pub(crate) fn recent_delay(&self) -> i64 {
        let total = self.arrivals.len();
        if total == 0 {
            return 0;
        }
        let wanted = (self.quantile * total as f64).ceil().max(1.0) as u64;
        let mut cumulative = 0u64;
        for (idx, count) in self.counts.iter().enumerate() {
            cumulative += u64::from(*count);
            if cumulative >= wanted {
                return (idx as i64 + 1) * BUCKET_NANOS;
            }
        }
        self.counts.len() as i64 * BUCKET_NANOS
    }

    /// The height of the periodic delay peaks at `now`, while they last.
    pub(crate) fn peak_delay(&self, now: i64) -> Option<i64> {
        self.peaks.level(now)
    }
}

impl PeakDetector {
    /// Takes in an arrival with delay `relative` while the recent delay is `recent`.
    fn observe(&mut self, arrival: i64, relative: i64, recent: i64) {
        self.last_is_peak = false;
        if self.period_nanos <= 0 || relative <= recent + self.threshold_nanos {
            return;
        }
        self.last_is_peak = true;
        if self.peaks.back().is_some_and(|&(last, _)| arrival - last > self.period_nanos) {
            // Too long since the last peak for the two to be a period: start over.
            self.peaks.clear();
        }
        if self.peaks.len() == MAX_PEAKS {
            self.peaks.pop_front();
        }
        self.peaks.push_back((arrival, relative));
    }

    /// The last arrival, if it was a peak, turned out later than first seen.
    fn grow_last(&mut self, relative: i64) {
        if self.last_is_peak
            && let Some((_, height)) = self.peaks.back_mut()
        {
            *height = (*height).max(relative);
        }
    }

    fn level(&self, now: i64) -> Option<i64> {
        if self.peaks.len() < PEAKS_TO_TRIGGER {
            return None;
        }
        let (&(first, _), &(last, _)) = (self.peaks.front()?, self.peaks.back()?);
        let longest = self
            .peaks
            .iter()
            .zip(self.peaks.iter().skip(1))
            .map(|(a, b)| b.0 - a.0)
            .max()
            .unwrap_or(last - first);
        (now - last <= 2 * longest).then(|| self.peaks.iter().map(|&(_, height)| height).max().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn estimator() -> DelayEstimator {
        let mut e = DelayEstimator::new(2_000 * MS, 2_000 * MS, 500 * MS, 0.95, 60 * MS, 10_000 * MS);
        e.set_frame_nanos(20 * MS);
        e
    }

    #[test]
    fn relative_delay_is_measured_from_the_fastest_recent_packet() {
        let mut e = estimator();
        assert_eq!(e.recent_delay(), 0);
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

    /// Feeds `n` packets 20 ms apart from `*arrival` on, each `relative` late.
    fn feed(e: &mut DelayEstimator, arrival: &mut i64, n: i64, relative: i64) {
        for _ in 0..n {
            *arrival += 20 * MS;
            e.observe(*arrival, 100 * MS + relative);
        }
    }

    #[test]
    fn the_recent_delay_rises_with_jitter_and_forgets_it_after_the_memory() {
        let mut e = estimator();
        let mut arrival = 0;
        feed(&mut e, &mut arrival, 500, 0);
        assert_eq!(e.recent_delay(), 5 * MS);
        // Every tenth packet 150 ms late, for two seconds.
        for _ in 0..10 {
            feed(&mut e, &mut arrival, 1, 150 * MS);
            feed(&mut e, &mut arrival, 9, 0);
        }
        assert!(e.recent_delay() >= 150 * MS, "{}", e.recent_delay());
        // Half a second of calm: most of the late arrivals are still within the memory.
        feed(&mut e, &mut arrival, 25, 0);
        assert!(e.recent_delay() >= 150 * MS, "still within the memory: {}", e.recent_delay());
        // Two seconds after the last late one, none is.
        feed(&mut e, &mut arrival, 75, 0);
        assert_eq!(e.recent_delay(), 5 * MS, "two seconds of calm forget the jitter");
    }

    #[test]
    fn packets_arriving_together_count_once_with_the_latest_of_them() {
        let mut e = estimator();
        let mut arrival = 0;
        feed(&mut e, &mut arrival, 50, 0);
        // A 500 ms stall: the 25 packets it held back arrive at once, 500 ms to 20 ms late.
        arrival += 500 * MS;
        for idx in 0..25 {
            e.observe(arrival, 100 * MS + 500 * MS - idx * 20 * MS);
        }
        assert_eq!(e.arrivals.len(), 51, "the burst is one arrival");
        assert_eq!(e.recent_delay(), 5 * MS, "one late arrival in 51 is not the 95th percentile");
        // A reordered packet of an arrival that is later than the first one raises it.
        let mut e = estimator();
        e.observe(0, 100 * MS);
        e.observe(20 * MS, 120 * MS);
        e.observe(20 * MS, 200 * MS);
        assert_eq!(e.arrivals.len(), 2);
        assert_eq!(e.recent_delay(), 105 * MS, "100 ms, rounded up to the bucket's end");
    }

    #[test]
    fn delays_beyond_the_span_land_in_the_last_bucket() {
        let mut e = DelayEstimator::new(2_000 * MS, 2_000 * MS, 100 * MS, 0.95, 60 * MS, 0);
        e.observe(0, 0);
        e.observe(100 * MS, 10_000 * MS);
        assert_eq!(e.recent_delay(), 110 * MS);
        assert_eq!(e.peak_delay(100 * MS), None, "peak tracking is off");
    }

    #[test]
    fn periodic_peaks_are_covered_until_they_stop() {
        let mut e = estimator();
        let mut arrival = 0;
        feed(&mut e, &mut arrival, 100, 0);
        // A 300 ms peak every 4 s: the third one triggers the peak level.
        for n_peak in 1..=4 {
            feed(&mut e, &mut arrival, 1, (200 + 50 * n_peak) * MS);
            let level = e.peak_delay(arrival);
            if n_peak < 3 {
                assert_eq!(level, None, "peak {n_peak}");
            } else {
                assert_eq!(level, Some((200 + 50 * n_peak) * MS), "peak {n_peak}");
            }
            feed(&mut e, &mut arrival, 199, 0);
        }
        assert_eq!(e.peak_delay(arrival), Some(400 * MS), "4 s after the last peak");
        feed(&mut e, &mut arrival, 200, 0);
        assert_eq!(e.peak_delay(arrival), Some(400 * MS), "8 s after: twice the longest period");
        feed(&mut e, &mut arrival, 2, 0);
        assert_eq!(e.peak_delay(arrival), None, "the peaks stopped");
    }

    #[test]
    fn small_or_rare_peaks_do_not_count() {
        let mut e = estimator();
        let mut arrival = 0;
        feed(&mut e, &mut arrival, 100, 0);
        // 40 ms hiccups every second are below the threshold.
        for _ in 0..5 {
            feed(&mut e, &mut arrival, 1, 40 * MS);
            feed(&mut e, &mut arrival, 49, 0);
        }
        assert_eq!(e.peaks.peaks.len(), 0);
        // Peaks 11 s apart are not periodic.
        for _ in 0..4 {
            feed(&mut e, &mut arrival, 1, 300 * MS);
            feed(&mut e, &mut arrival, 550, 0);
        }
        assert_eq!(e.peak_delay(arrival), None);
    }
}
