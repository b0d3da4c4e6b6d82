//! The mixer's limiter: loud peers and gains above 1 are brought down smoothly rather than
//! clipped.

/// The level the gain aims to keep peaks at (about -1.4 dBFS).
const TARGET: f32 = 0.85;
/// Above this the soft clipper bends the wave towards full scale, which it never reaches.
const KNEE: f32 = 0.85;
/// How fast the envelope rises to a new peak, per sample (about 5 samples).
const ATTACK: f32 = 0.2;
/// How fast the envelope falls after a peak, per sample: a time constant of 50 ms at 48 kHz.
const RELEASE: f32 = 1.0 - 1.0 / 2400.0;

/// A peak limiter: a gain that follows the peaks (fast up, slow down) keeps loud audio near
/// [`TARGET`], and a soft clipper bends whatever overshoots while the gain catches up, so that
/// nothing reaches full scale and no wave gets a flat top.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    envelope: f32,
    limited_samples: u64,
}

impl Limiter {
    /// Brings `samples` under full scale in place.
    pub fn process(&mut self, samples: &mut [f32]) {
        for sample in samples {
            if !sample.is_finite() {
                // A broken decoder's output must not reach the speaker.
                *sample = 0.0;
            }
            let peak = sample.abs();
            if peak > self.envelope {
                self.envelope += (peak - self.envelope) * ATTACK;
            } else {
                self.envelope *= RELEASE;
            }
            let gain = if self.envelope > TARGET { TARGET / self.envelope } else { 1.0 };
            let scaled = *sample * gain;
            let level = scaled.abs();
            *sample = if level > KNEE {
                let bent = KNEE + (1.0 - KNEE) * ((level - KNEE) / (1.0 - KNEE)).tanh();
                bent.copysign(scaled)
            } else {
                scaled
            };
            if gain < 1.0 || level > KNEE {
                self.limited_samples += 1;
            }
        }
    }

    /// Samples played turned down or bent.
    pub fn limited_samples(&self) -> u64 {
        self.limited_samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amplitude: f32, n: usize) -> Vec<f32> {
        (0..n).map(|i| amplitude * (i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin()).collect()
    }

    #[test]
    fn a_loud_sine_stays_under_full_scale_without_flat_tops() {
        let mut limiter = Limiter::default();
        // A 440 Hz sine at 1.6: a 0.8 peer at 200 %.
        let mut samples = sine(1.6, 48_000);
        limiter.process(&mut samples);
        let peak = samples.iter().fold(0.0f32, |peak, s| peak.max(s.abs()));
        assert!(peak < 1.0, "peak {peak}");
        let settled = samples[4800..].iter().fold(0.0f32, |peak, s| peak.max(s.abs()));
        assert!(
            settled <= TARGET + 0.05,
            "once the gain has caught up, peaks sit near the target: {settled}"
        );
        // Clipping leaves runs of equal samples at the top; a limiter leaves a wave.
        let flat = samples.windows(3).filter(|w| w[0] == w[1] && w[1] == w[2] && w[0].abs() > 0.5).count();
        assert_eq!(flat, 0);
        assert!(limiter.limited_samples() > 40_000);
    }

    #[test]
    fn quiet_audio_passes_untouched_and_the_gain_comes_back() {
        let mut limiter = Limiter::default();
        let mut quiet = sine(0.5, 4800);
        let before = quiet.clone();
        limiter.process(&mut quiet);
        assert_eq!(quiet, before, "below the target nothing changes");
        assert_eq!(limiter.limited_samples(), 0);
        let mut loud = sine(1.8, 4800);
        limiter.process(&mut loud);
        let mut after = sine(0.5, 48_000);
        limiter.process(&mut after);
        let last = &after[43_200..];
        let peak = last.iter().fold(0.0f32, |peak, s| peak.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.01, "released after a second: {peak}");
        let mut nan = [f32::NAN, 0.1];
        limiter.process(&mut nan);
        assert_eq!(nan[0], 0.0);
    }
}
