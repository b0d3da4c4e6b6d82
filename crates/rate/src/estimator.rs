//! What a link is doing, from what a sender can see: how fast its socket takes bytes, and how
//! long a round trip takes compared with the quickest one recently.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the delivered rate looks: short, so that a link that just got slower is seen
/// as slower at once.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// How far back the quickest round trip is remembered: long enough that a link kept full
/// (bufferbloat) does not pass for normal, short enough to follow a new route.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(30);
/// How far back the far end's counts look.
const FAR_END_WINDOW: Duration = Duration::from_millis(1000);
/// The queueing delay is the least excess over this long: a queue that stands, not the one a
/// single large frame makes for a moment (a 20 kB picture holds a 1 Mb/s link for 160 ms, and
/// a ping behind it sees all of that, though the link keeps up). Two pings' worth.
const STANDING_WINDOW: Duration = Duration::from_millis(500);
/// How much a new round trip counts in the smoothed one.
const RTT_GAIN: f64 = 0.3;

/// The smallest of recent samples and a smoothed latest one: the quick path and how far
/// above it things are now.
#[derive(Debug, Clone, Default)]
struct Delays {
    /// Samples that could still be the minimum, oldest first, as (when, value).
    window: VecDeque<(Instant, i64)>,
    /// Every sample of the last [`STANDING_WINDOW`], oldest first.
    recent: VecDeque<(Instant, i64)>,
    smoothed: Option<f64>,
}

impl Delays {
    fn handle(&mut self, now: Instant, value: i64) {
        while self.window.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > MIN_RTT_WINDOW) {
            self.window.pop_front();
        }
        // A later, smaller sample makes every larger one before it irrelevant.
        while self.window.back().is_some_and(|(_, earlier)| *earlier >= value) {
            self.window.pop_back();
        }
        self.window.push_back((now, value));
        while self.recent.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > STANDING_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back((now, value));
        let value = value as f64;
        self.smoothed = Some(match self.smoothed {
            // Rises are taken at once, falls smoothed: the round trip a person is shown.
            Some(smoothed) if value < smoothed => smoothed * (1.0 - RTT_GAIN) + value * RTT_GAIN,
            _ => value,
        });
    }

    fn min(&self) -> Option<i64> {
        self.window.front().map(|(_, value)| *value)
    }

    /// How far above the minimum every sample of the last [`STANDING_WINDOW`] is.
    fn excess(&self) -> Option<Duration> {
        let standing = self.recent.iter().map(|(_, value)| *value).min()?;
        let excess = standing - self.min()?;
        Some(Duration::from_micros(excess.max(0) as u64))
    }
}

/// Bytes accepted over time and round trips, in; delivered rate and queueing delay, out.
#[derive(Debug, Clone, Default)]
pub struct LinkEstimator {
    /// (when, bytes accepted by then, in total), oldest first.
    sent: VecDeque<(Instant, u64)>,
    sent_total: u64,
    /// Round trips, in microseconds.
    rtts: Delays,
    /// One-way delays towards the far end, in microseconds from an unknown offset.
    one_way: Delays,
    /// (far end's clock in µs, bytes it had received by then), oldest first.
    far_end: VecDeque<(u64, u64)>,
    last_rtt_at: Option<Instant>,
}

impl LinkEstimator {
    /// The socket has accepted `total` bytes since the connection began, as of `now`.
    pub fn handle_sent_total(&mut self, now: Instant, total: u64) {
        self.sent_total = self.sent_total.max(total);
        self.sent.push_back((now, self.sent_total));
        while self.sent.len() > 2
            && self.sent.get(1).is_some_and(|(at, _)| now.saturating_duration_since(*at) >= RATE_WINDOW)
        {
            self.sent.pop_front();
        }
    }

    /// A round trip measured at `now` (an application-level ping through every queue on the
    /// path, or the transport's own estimate).
    pub fn handle_rtt(&mut self, now: Instant, rtt: Duration) {
        self.rtts.handle(now, rtt.as_micros() as i64);
        self.last_rtt_at = Some(now);
    }

    /// A one-way delay towards the far end, measured at `now`: the far end's clock when the
    /// message arrived minus ours when it left, in microseconds. The clocks' offset is unknown
    /// and does not matter: only how far a sample is above the recent minimum does. When
    /// these arrive, the queueing delay is the way out's alone, so that a slow way back (the
    /// other direction's queue) does not pass for this direction's trouble.
    pub fn handle_one_way(&mut self, now: Instant, delay_us: i64) {
        self.one_way.handle(now, delay_us);
    }

    /// The far end had received `bytes` from us in all when its clock said `far_clock_us`.
    /// Rates from these are what the link really delivered, where the socket's acceptance also
    /// counts what went into queues on the way.
    pub fn handle_far_end(&mut self, far_clock_us: u64, bytes: u64) {
        if self.far_end.back().is_some_and(|(at, _)| *at >= far_clock_us) {
            return;
        }
        self.far_end.push_back((far_clock_us, bytes));
        let window = FAR_END_WINDOW.as_micros() as u64;
        while self.far_end.len() > 2
            && self.far_end.get(1).is_some_and(|(at, _)| far_clock_us - *at >= window)
        {
            self.far_end.pop_front();
        }
    }

    /// Bytes per second the link delivered recently: as the far end counted them where it
    /// does, else as the socket accepted them over the last half second.
    pub fn delivered_rate(&self) -> Option<f64> {
        self.far_end_rate().or_else(|| self.accepted_rate())
    }

    /// Bytes per second the socket accepted over the last half second.
    pub fn accepted_rate(&self) -> Option<f64> {
        let (first_at, first) = *self.sent.front()?;
        let (last_at, last) = *self.sent.back()?;
        let span = last_at.saturating_duration_since(first_at);
        (span >= Duration::from_millis(200)).then(|| (last - first) as f64 / span.as_secs_f64())
    }

    /// Bytes per second the far end received, over its last second.
    pub fn far_end_rate(&self) -> Option<f64> {
        let (first_at, first) = *self.far_end.front()?;
        let (last_at, last) = *self.far_end.back()?;
        let span = last_at.checked_sub(first_at)?;
        (span >= 400_000).then(|| last.saturating_sub(first) as f64 / (span as f64 / 1e6))
    }

    /// The quickest round trip of the last 30 s.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.rtts.min().map(|us| Duration::from_micros(us.max(0) as u64))
    }

    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.rtts.smoothed.map(|us| Duration::from_micros(us.max(0.0) as u64))
    }

    /// How much longer data takes now than on the quickest recent trip: what waits in queues
    /// along the path (the way out only, when one-way delays are known).
    pub fn queue_delay(&self) -> Option<Duration> {
        self.one_way.excess().or_else(|| self.rtts.excess())
    }

    /// When the last round trip was measured.
    pub fn last_rtt_at(&self) -> Option<Instant> {
        self.last_rtt_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_delivered_rate_is_bytes_accepted_over_the_last_second() {
        let start = Instant::now();
        let mut link = LinkEstimator::default();
        assert_eq!(link.delivered_rate(), None);
        // 125 000 B/s (1 Mb/s) for 3 s, in 10 ms steps, then nothing for a second.
        for step in 0..=300u32 {
            link.handle_sent_total(start + step * 10 * MS, u64::from(step) * 1250);
        }
        let rate = link.delivered_rate().unwrap();
        assert!((rate - 125_000.0).abs() < 2_000.0, "{rate}");
        for step in 301..=360u32 {
            link.handle_sent_total(start + step * 10 * MS, 300 * 1250);
        }
        assert!(link.delivered_rate().unwrap() < 2_000.0, "the link went quiet");
    }

    #[test]
    fn one_way_delays_tell_the_way_out_from_the_way_back() {
        let start = Instant::now();
        let mut link = LinkEstimator::default();
        // Far-end clock 5 s ahead of ours; the way out takes 20 ms, then 120 ms (a queue).
        link.handle_one_way(start, 5_020_000);
        link.handle_rtt(start, 40 * MS);
        for step in 1..=3u32 {
            link.handle_one_way(start + step * 250 * MS, 5_120_000);
            // The way back got slow too, but that is not this direction's queue.
            link.handle_rtt(start + step * 250 * MS, 400 * MS);
        }
        assert_eq!(link.queue_delay(), Some(100 * MS));
    }

    #[test]
    fn one_late_ping_behind_a_large_frame_is_no_queue_and_a_standing_one_is() {
        let start = Instant::now();
        let mut link = LinkEstimator::default();
        link.handle_rtt(start, 40 * MS);
        link.handle_rtt(start + 250 * MS, 40 * MS);
        // A ping that waited behind a 20 kB picture on a 1 Mb/s link; the next is quick again.
        link.handle_rtt(start + 500 * MS, 200 * MS);
        assert_eq!(link.queue_delay(), Some(Duration::ZERO));
        link.handle_rtt(start + 750 * MS, 41 * MS);
        assert_eq!(link.queue_delay(), Some(Duration::ZERO));
        // A queue that stands for half a second and more is seen.
        for step in 4..=6u32 {
            link.handle_rtt(start + step * 250 * MS, 140 * MS);
        }
        assert_eq!(link.queue_delay(), Some(100 * MS));
    }

    #[test]
    fn a_bloated_round_trip_never_becomes_the_minimum() {
        let start = Instant::now();
        let mut link = LinkEstimator::default();
        link.handle_rtt(start, 40 * MS);
        // Ten seconds of a full queue: the minimum stays, the queueing delay shows.
        for step in 1..=40u32 {
            link.handle_rtt(start + step * 250 * MS, 400 * MS);
        }
        assert_eq!(link.min_rtt(), Some(40 * MS));
        assert_eq!(link.queue_delay(), Some(360 * MS));
        // The queue drains: the smoothed round trip comes down within a few samples.
        for step in 41..=50u32 {
            link.handle_rtt(start + step * 250 * MS, 42 * MS);
        }
        assert!(link.queue_delay().unwrap() < 15 * MS, "{:?}", link.queue_delay());
        // Thirty seconds on, a slower route is accepted as the new normal.
        for step in 51..=200u32 {
            link.handle_rtt(start + step * 250 * MS, 90 * MS);
        }
        assert_eq!(link.min_rtt(), Some(90 * MS));
    }
}
