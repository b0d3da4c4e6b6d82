//! How much video one receiver's link carries, as a sans-IO core: the receiver's measurements
//! in (round trips of the relay's pings, the bytes the receiver says it has received, what was
//! written to it, whether the kernel is holding video back), and whether the next video frame
//! may go now out.
//!
//! JPEG frames stand alone, so a receiver on a slow link simply gets fewer of them: the newest
//! per sender waits in its queue (replacing older ones) until the pacer lets it go, at the rate
//! the link carries without a queue building. Audio and control never wait for the pacer.

use std::time::{Duration, Instant};

use chinwag_rate::{LinkEstimator, LinkSignals, RateConfig, RateController};

/// How a receiver's video rate moves. It starts unpaced (at the maximum): until its link
/// shows a queue a receiver gets every frame as fast as its socket takes it, as a receiver on
/// a fast link should; the first queue sets the rate to what the link delivered.
const RATE: RateConfig = RateConfig {
    min_bps: 64_000.0,
    max_bps: 100_000_000.0,
    start_bps: 100_000_000.0,
    overuse_delay: Duration::from_millis(40),
};
/// Video held back by the kernel's unsent bytes for this long means the link is full.
const HELD_TOO_LONG: Duration = Duration::from_millis(100);
/// How much video may go in one burst, in time at the current rate.
const BURST: Duration = Duration::from_millis(150);
/// How the audio rate is averaged.
const AUDIO_WINDOW: Duration = Duration::from_secs(1);

/// One receiver's video pacing.
#[derive(Debug)]
pub struct VideoPacer {
    link: LinkEstimator,
    controller: RateController,
    /// Video bytes that may go now.
    credit: f64,
    refilled: Option<Instant>,
    /// Since when video has waited for the kernel's unsent bytes to drain.
    held_since: Option<Instant>,
    /// Bytes written in all, and audio bytes in the current window.
    written: u64,
    audio_window: (Instant, u64),
    audio_bps: f64,
    video_bps: f64,
    logged: Option<Instant>,
}

impl VideoPacer {
    pub fn new(now: Instant) -> Self {
        Self {
            link: LinkEstimator::default(),
            controller: RateController::new(RATE),
            credit: 0.0,
            refilled: None,
            held_since: None,
            written: 0,
            audio_window: (now, 0),
            audio_bps: 0.0,
            video_bps: RATE.start_bps,
            logged: None,
        }
    }

    /// A round trip of one of the relay's pings to this receiver.
    pub fn handle_rtt(&mut self, now: Instant, rtt: Duration) {
        self.link.handle_rtt(now, rtt);
    }

    /// The receiver said it had received `bytes` in all when the relay's clock said `now_us`.
    pub fn handle_received(&mut self, now_us: u64, bytes: u64) {
        self.link.handle_far_end(now_us, bytes);
    }

    /// `bytes` were written to the receiver's socket; `audio` if they were an audio frame.
    pub fn handle_written(&mut self, now: Instant, bytes: usize, audio: bool) {
        self.written += bytes as u64;
        self.link.handle_sent_total(now, self.written);
        if audio {
            self.audio_window.1 += bytes as u64;
        }
        let (since, audio_bytes) = self.audio_window;
        let span = now.saturating_duration_since(since);
        if span >= AUDIO_WINDOW {
            self.audio_bps = audio_bytes as f64 * 8.0 / span.as_secs_f64();
            self.audio_window = (now, 0);
        }
    }

    /// Whether the kernel is holding video back (its unsent bytes are over the gate).
    pub fn handle_held(&mut self, now: Instant, held: bool) {
        if !held {
            self.held_since = None;
        } else {
            self.held_since.get_or_insert(now);
        }
    }

    /// Whether a video frame of `len` bytes may go at `now`; if not, how long until it may.
    pub fn poll_video(&mut self, now: Instant, len: usize) -> Result<(), Duration> {
        let backlog =
            self.held_since.is_some_and(|since| now.saturating_duration_since(since) >= HELD_TOO_LONG);
        let signals = LinkSignals {
            queue_delay: self.link.queue_delay(),
            delivered_bps: self.link.delivered_rate().map(|bytes| bytes * 8.0),
            backlog,
        };
        let total = self.controller.handle_signals(now, signals);
        if self.logged.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1)) {
            self.logged = Some(now);
            tracing::debug!(
                target_kbps = total / 1000.0,
                queue_ms = signals.queue_delay.map(|d| d.as_secs_f64() * 1000.0),
                delivered_kbps = signals.delivered_bps.map(|bps| bps / 1000.0),
                backlog,
                "receiver's video pace"
            );
        }
        self.video_bps = (total - self.audio_bps).max(RATE.min_bps);
        let bytes_per_second = self.video_bps / 8.0;
        let elapsed = self.refilled.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.refilled = Some(now);
        // A frame larger than the burst may still go once the credit is full: otherwise it
        // would never go at all.
        let cap = (bytes_per_second * BURST.as_secs_f64()).max(len as f64);
        self.credit = (self.credit + bytes_per_second * elapsed.as_secs_f64()).min(cap);
        if self.credit >= len as f64 {
            self.credit -= len as f64;
            return Ok(());
        }
        let missing = len as f64 - self.credit;
        Err(Duration::from_secs_f64(missing / bytes_per_second).clamp(Duration::from_millis(1), BURST))
    }

    /// The video rate this receiver gets now, in bits per second.
    pub fn video_bps(&self) -> f64 {
        self.video_bps
    }

    /// The smoothed round trip to this receiver.
    pub fn rtt(&self) -> Option<Duration> {
        self.link.smoothed_rtt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Offers a 40 kB frame every 10 ms for a second; returns the bits per second let through.
    fn offer_for_a_second(pacer: &mut VideoPacer, start: Instant) -> f64 {
        let mut sent = 0usize;
        for step in 0..100u32 {
            let at = start + step * 10 * MS;
            if pacer.poll_video(at, 40_000).is_ok() {
                pacer.handle_written(at, 40_000, false);
                sent += 40_000;
            }
        }
        sent as f64 * 8.0
    }

    #[test]
    fn video_is_unpaced_until_the_link_shows_a_queue_then_paced_to_what_it_delivered() {
        let start = Instant::now();
        let mut pacer = VideoPacer::new(start);
        // 32 Mb/s offered, and nothing says the link cannot take it.
        assert!(offer_for_a_second(&mut pacer, start) >= 31e6);
        // The receiver says it got 4 Mb/s over that second; then the kernel holds video back.
        pacer.handle_received(0, 0);
        pacer.handle_received(1_000_000, 500_000);
        let later = start + 1000 * MS;
        pacer.handle_held(later, true);
        let _ = pacer.poll_video(later + 150 * MS, 1);
        pacer.handle_held(later + 150 * MS, false);
        assert!(pacer.video_bps() <= 4e6, "{}", pacer.video_bps());
        // From then on the video goes at about that rate, in bursts of at most 150 ms.
        let rate = offer_for_a_second(&mut pacer, later + 200 * MS);
        assert!((2e6..=4.5e6).contains(&rate), "{rate} b/s");
    }

    #[test]
    fn a_queue_on_the_way_to_the_receiver_slows_its_video() {
        let start = Instant::now();
        let mut pacer = VideoPacer::new(start);
        pacer.handle_rtt(start, 20 * MS);
        let before = pacer.video_bps();
        // The receiver reports what it got: 500 kb/s; the round trips grow past 40 ms.
        let mut received = 0u64;
        for step in 1..=20u32 {
            let now = start + step * 100 * MS;
            received += 6250;
            pacer.handle_received(u64::from(step) * 100_000, received);
            pacer.handle_rtt(now, (20 + step * 20).min(300) * MS);
            let _ = pacer.poll_video(now, 10_000);
        }
        assert!(pacer.video_bps() < before / 4.0, "{} after {before}", pacer.video_bps());
        assert!(pacer.video_bps() <= 500_000.0, "{}", pacer.video_bps());
    }

    #[test]
    fn video_held_by_the_kernel_counts_as_a_full_link() {
        let start = Instant::now();
        let mut pacer = VideoPacer::new(start);
        let before = pacer.video_bps();
        pacer.handle_held(start, true);
        let _ = pacer.poll_video(start + 150 * MS, 1000);
        assert!(pacer.video_bps() < before, "{} after {before}", pacer.video_bps());
    }
}
