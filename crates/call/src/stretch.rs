//! Time compression of decoded speech, for a jitter buffer that holds more than it needs:
//! the "accelerate" of WebRTC's NetEQ. A frame loses one pitch period of voiced speech
//! (cross-faded, so the waveform stays continuous and the pitch unchanged), or a few
//! milliseconds of near silence; a frame where neither is safe is left alone.

use crate::playout::rms;

/// The shortest and longest pitch periods looked for, at 48 kHz: 2.5 ms (400 Hz) to 10 ms
/// (100 Hz). A lower voice repeats at twice its period, which is also found.
const MIN_LAG: usize = 120;
const MAX_LAG: usize = 480;
/// The coarse search runs on every `DECIMATE`th sample, then is refined around its best lag.
const DECIMATE: usize = 4;
/// How alike the two periods must be (normalised correlation) to be merged into one.
const MIN_CORRELATION: f32 = 0.85;
/// Below this RMS level (about −46 dBFS) a frame is near silence: any stretch of it may go.
const QUIET_RMS: f32 = 0.005;

/// Removes about one pitch period from `frame` if that can be done inaudibly, writing the
/// result to `out` (cleared first). Returns how many samples were removed; 0 leaves `out`
/// equal to `frame`.
pub fn accelerate(frame: &[f32], out: &mut Vec<f32>) -> usize {
    out.clear();
    let lag = if frame.len() < 2 * MIN_LAG {
        None
    } else if rms(frame) < QUIET_RMS {
        Some(MAX_LAG.min(frame.len() / 2))
    } else {
        best_lag(frame).filter(|&(_, correlation)| correlation >= MIN_CORRELATION).map(|(lag, _)| lag)
    };
    let Some(lag) = lag else {
        out.extend_from_slice(frame);
        return 0;
    };
    // frame[..lag] and frame[lag..2 lag] are alike: fade from the first into the second and
    // carry on from there, so `lag` samples are gone.
    for i in 0..lag {
        let fade = (i as f32 + 0.5) / lag as f32;
        out.push(frame[i] * (1.0 - fade) + frame[i + lag] * fade);
    }
    out.extend_from_slice(&frame[2 * lag..]);
    lag
}

/// The lag in `MIN_LAG..=MAX_LAG` (limited to half the frame) at which the frame's start best
/// repeats, with its normalised correlation.
fn best_lag(frame: &[f32]) -> Option<(usize, f32)> {
    let max_lag = MAX_LAG.min(frame.len() / 2);
    if max_lag < MIN_LAG {
        return None;
    }
    let coarse = (MIN_LAG / DECIMATE..=max_lag / DECIMATE)
        .map(|lag| (lag * DECIMATE, correlation(frame, lag * DECIMATE, DECIMATE)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let low = coarse.0.saturating_sub(DECIMATE).max(MIN_LAG);
    let high = (coarse.0 + DECIMATE).min(max_lag);
    (low..=high).map(|lag| (lag, correlation(frame, lag, 1))).max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Normalised correlation of `frame[..lag]` with `frame[lag..2 lag]`, on every `step`th sample.
fn correlation(frame: &[f32], lag: usize, step: usize) -> f32 {
    let (mut cross, mut first, mut second) = (0.0f32, 0.0f32, 0.0f32);
    for i in (0..lag).step_by(step) {
        let (a, b) = (frame[i], frame[i + lag]);
        cross += a * b;
        first += a * a;
        second += b * b;
    }
    let energy = (first * second).sqrt();
    if energy <= f32::EPSILON { 0.0 } else { cross / energy }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, amplitude: f32, n: usize) -> Vec<f32> {
        (0..n).map(|i| amplitude * (i as f32 * hz * std::f32::consts::TAU / 48_000.0).sin()).collect()
    }

    /// Largest jump between neighbouring samples: a cut without a cross-fade shows as a jump.
    fn largest_step(samples: &[f32]) -> f32 {
        samples.windows(2).map(|w| (w[1] - w[0]).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn a_voiced_frame_loses_one_period_and_stays_smooth() {
        // 200 Hz: a period of 240 samples.
        let frame = tone(200.0, 0.5, 960);
        let mut out = Vec::new();
        let removed = accelerate(&frame, &mut out);
        assert!(removed.is_multiple_of(240) && removed > 0, "removed {removed}");
        assert_eq!(out.len(), 960 - removed);
        assert!(largest_step(&out) <= largest_step(&frame) * 1.05, "a click at the join");
    }

    #[test]
    fn near_silence_loses_up_to_half_the_frame() {
        let frame = tone(200.0, 0.001, 960);
        let mut out = Vec::new();
        assert_eq!(accelerate(&frame, &mut out), 480);
        assert_eq!(out.len(), 480);
    }

    #[test]
    fn noise_like_speech_is_left_alone() {
        // A deterministic pseudo-random frame: nothing repeats, so nothing may be cut.
        let mut state = 0x1234_5678u32;
        let frame: Vec<f32> = (0..960)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 - 0.5) * 0.6
            })
            .collect();
        let mut out = Vec::new();
        assert_eq!(accelerate(&frame, &mut out), 0);
        assert_eq!(out, frame);
    }

    #[test]
    fn a_short_frame_is_returned_whole() {
        let frame = tone(200.0, 0.5, 200);
        let mut out = Vec::new();
        assert_eq!(accelerate(&frame, &mut out), 0);
        assert_eq!(out.len(), 200);
    }
}
