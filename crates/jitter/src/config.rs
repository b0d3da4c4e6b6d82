//! The settings of a [`JitterBuffer`](crate::JitterBuffer) and their validation.

use std::time::Duration;

/// Opus frame durations in 48 kHz ticks: 2.5, 5, 10, 20, 40 and 60 ms.
pub(crate) const OPUS_FRAME_TICKS: [u32; 6] = [120, 240, 480, 960, 1920, 2880];

/// Ticks per second of the audio media timestamp (`MediaKind::Audio.clock_rate()`).
pub(crate) const TICKS_PER_SECOND: u32 = chinwag_proto::MediaKind::Audio.clock_rate();

/// How a jitter buffer adapts. `JitterConfig::default()` suits a voice call over WebSockets.
///
/// Every field is public so that a caller can start from the default and change what it needs;
/// [`JitterBuffer::new`](crate::JitterBuffer::new) checks the result.
#[derive(Debug, Clone, PartialEq)]
pub struct JitterConfig {
    /// The frame duration assumed until the packets' timestamps show another one (three
    /// consecutive packets one sequence number apart with the same other Opus frame step).
    /// Must be an Opus frame duration: 2.5, 5, 10, 20, 40 or 60 ms. Default 20 ms.
    pub frame_duration: Duration,
    /// The lowest target delay, whatever the measured jitter. It covers what the estimator
    /// cannot see, such as the playout side polling a little irregularly. Default 10 ms: with
    /// the 5 ms margin, a clean network costs a call no more than this.
    pub min_delay: Duration,
    /// The highest target delay, and the most the buffer will hold back playout while it waits
    /// for a missing frame: an underrun that would push the delay past it gives up, plays
    /// [`Playout::Silence`](crate::Playout::Silence) and re-buffers. Default 250 ms: past it a
    /// conversation suffers more from the delay than from the gap (ITU-T G.114 puts the limit
    /// of acceptable one-way delay at 400 ms, all stages together), so the audio held up by a
    /// long TCP stall is given up rather than played late.
    pub max_delay: Duration,
    /// How many frames the buffer may hold, counted as the span of sequence numbers from the
    /// next frame to play. A packet beyond it pushes the oldest frames out. Default 256.
    pub max_packets: usize,
    /// The share of packets whose delay the target covers, between 0.5 and 1. Default 0.95.
    pub delay_quantile: f64,
    /// Added to the delay quantile to make the target. Default 5 ms, measured on loopback to
    /// keep mouth-to-ear within 30 ms at 10 ms frames; under 0–60 ms of jitter it still
    /// conceals well under 2 % of frames (see the scenario tests).
    pub delay_margin: Duration,
    /// How long an arrival counts towards the target: the target covers the delays of the
    /// arrivals of the last `delay_memory`, so that it comes back down this long after the
    /// network calms (plus the time to drain what was buffered). Arrivals rather than packets
    /// count: the packets a TCP stall held back arrive at once and count as one, the first
    /// and latest of them, so that one stall weighs no more than one late packet. Longer is
    /// steadier, shorter comes down sooner. Default 4 s: 200 arrivals at 20 ms frames, enough
    /// for a steady 95th percentile, and back down well within the 5 s a listener gives it.
    pub delay_memory: Duration,
    /// How long the fastest transit time seen is remembered as the zero of relative delay.
    /// Long enough to span a few jitter cycles, short enough that clock drift between sender
    /// and receiver (0.2 ms/s at 200 ppm) moves it by less than a millisecond. Default 2 s.
    pub baseline_window: Duration,
    /// How far above the recent delays (their `delay_quantile`) an arrival must come to count
    /// as a delay peak. Default 60 ms: above the 20–40 ms scheduling hiccups of a loaded
    /// machine, which should cost a concealed frame now and then rather than delay for good.
    pub peak_threshold: Duration,
    /// Peaks that come again within this long of each other are periodic: from the third
    /// such peak on, the target covers the highest of them, until no peak has come for twice
    /// the longest period seen. `Duration::ZERO` turns peak tracking off. Default off: on a
    /// congested link the peaks come from our own video, which rate control removes at the
    /// source, and a held peak level (up to 20 s with NetEQ's 10 s) would keep the delay
    /// high long after the link is clean. 10 s is NetEQ's choice.
    pub peak_period: Duration,
    /// Whether the playout side honours [`Playout::Frame`](crate::Playout::Frame)'s
    /// `accelerate`, playing such a frame time-compressed. Then the buffer shrinks by asking
    /// for compressed speech and by dropping frames marked silent, never by dropping speech.
    /// Without it, it drops frames, silent ones first, spaced by `min_drop_interval`.
    /// Default true.
    pub time_stretch: bool,
    /// With time stretching, how far above target the delay must stay, for `shrink_patience`,
    /// before the buffer starts to shrink it; it then shrinks it to within half this of the
    /// target. Default 20 ms, a frame: like dropping frames, it keeps the delay between the
    /// target and a frame above, so that the frame after a late one is usually there for FEC.
    pub shrink_threshold: Duration,
    /// Without time stretching, the shortest interval between two speech frames dropped to
    /// bring the delay down to target, so that a burst after a stall is shed a frame at a
    /// time rather than skipped in one cut. Default 60 ms, which sheds at most a third of the
    /// frames played.
    pub min_drop_interval: Duration,
    /// How long the delay must stay above target by `shrink_threshold` before the buffer
    /// shrinks it, so that a wobble of the target costs nothing. Without time stretching the
    /// wait shrinks in proportion to the excess (two frames over wait half as long), down to
    /// `min_drop_interval`. Default 100 ms.
    pub shrink_patience: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            frame_duration: Duration::from_millis(20),
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(250),
            max_packets: 256,
            delay_quantile: 0.95,
            delay_margin: Duration::from_millis(5),
            delay_memory: Duration::from_secs(4),
            baseline_window: Duration::from_secs(2),
            peak_threshold: Duration::from_millis(60),
            peak_period: Duration::ZERO,
            time_stretch: true,
            shrink_threshold: Duration::from_millis(20),
            min_drop_interval: Duration::from_millis(60),
            shrink_patience: Duration::from_millis(100),
        }
    }
}

impl JitterConfig {
    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), JitterError> {
        let invalid = |setting, reason| Err(JitterError::InvalidConfig { setting, reason });
        if frame_ticks(self.frame_duration).is_none() {
            return invalid("frame_duration", "must be an Opus frame duration (2.5, 5, 10, 20, 40 or 60 ms)");
        }
        if self.max_delay < self.min_delay {
            return invalid("max_delay", "must not be below min_delay");
        }
        if self.max_delay < self.frame_duration {
            return invalid("max_delay", "must be at least one frame");
        }
        if self.max_delay > Duration::from_secs(10) {
            return invalid("max_delay", "must be at most 10 s");
        }
        if self.max_packets < 2 {
            return invalid("max_packets", "must be at least 2");
        }
        if !(0.5..1.0).contains(&self.delay_quantile) {
            return invalid("delay_quantile", "must be at least 0.5 and below 1");
        }
        if self.delay_memory < self.frame_duration {
            return invalid("delay_memory", "must be at least one frame");
        }
        if self.delay_memory > Duration::from_secs(600) {
            return invalid("delay_memory", "must be at most 10 minutes");
        }
        if self.peak_period > Duration::from_secs(600) {
            return invalid("peak_period", "must be at most 10 minutes");
        }
        if self.baseline_window < self.frame_duration {
            return invalid("baseline_window", "must be at least one frame");
        }
        Ok(())
    }
}

/// The frame duration in 48 kHz ticks, when it is an Opus frame duration.
pub(crate) fn frame_ticks(duration: Duration) -> Option<u32> {
    let ticks = duration.as_nanos() * u128::from(TICKS_PER_SECOND) / 1_000_000_000;
    OPUS_FRAME_TICKS
        .into_iter()
        .find(|&t| u128::from(t) == ticks && ticks_to_duration(i64::from(t)) == duration)
}

/// Nanoseconds in `ticks` of the 48 kHz media clock.
pub(crate) const fn ticks_to_nanos(ticks: i64) -> i64 {
    // 1e9 / 48_000 = 62_500 / 3, exact for every whole number of ticks up to the division.
    ticks * 62_500 / 3
}

/// The duration of `ticks` (zero when negative).
pub(crate) fn ticks_to_duration(ticks: i64) -> Duration {
    nanos_to_duration(ticks_to_nanos(ticks))
}

/// The duration of `nanos` (zero when negative).
pub(crate) fn nanos_to_duration(nanos: i64) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// `duration` in nanoseconds, saturating far beyond any delay this crate handles.
pub(crate) fn duration_to_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// What can be wrong when creating a jitter buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JitterError {
    /// A [`JitterConfig`] setting is out of range or contradicts another.
    #[error("invalid jitter buffer setting {setting}: {reason}")]
    InvalidConfig { setting: &'static str, reason: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(JitterConfig::default().validate(), Ok(()));
    }

    #[test]
    fn opus_frame_durations_are_accepted_and_others_refused() {
        for (ms_x2, ticks) in [(5, 120), (10, 240), (20, 480), (40, 960), (80, 1920), (120, 2880)] {
            assert_eq!(frame_ticks(Duration::from_micros(ms_x2 * 500)), Some(ticks));
        }
        assert_eq!(frame_ticks(Duration::from_millis(15)), None);
        assert_eq!(frame_ticks(Duration::from_micros(20_001)), None);
        let config = JitterConfig { frame_duration: Duration::from_millis(30), ..Default::default() };
        assert!(matches!(
            config.validate(),
            Err(JitterError::InvalidConfig { setting: "frame_duration", .. })
        ));
    }

    #[test]
    fn contradictory_settings_are_named() {
        let config = JitterConfig { min_delay: Duration::from_secs(1), ..Default::default() };
        let error = config.validate().unwrap_err();
        assert_eq!(error.to_string(), "invalid jitter buffer setting max_delay: must not be below min_delay");
        let config = JitterConfig { delay_quantile: 1.0, ..Default::default() };
        assert!(matches!(
            config.validate(),
            Err(JitterError::InvalidConfig { setting: "delay_quantile", .. })
        ));
    }

    #[test]
    fn tick_conversions_are_exact() {
        assert_eq!(ticks_to_nanos(960), 20_000_000);
        assert_eq!(ticks_to_nanos(48_000), 1_000_000_000);
        assert_eq!(ticks_to_duration(-5), Duration::ZERO);
        assert_eq!(duration_to_nanos(Duration::from_millis(3)), 3_000_000);
    }
}
