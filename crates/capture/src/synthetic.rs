//! Sources and sinks that need no hardware, paced in real time like devices.

use std::time::{Duration, Instant};

use crate::{AudioSink, AudioSource, CaptureError, Pacer, SAMPLE_RATE};

/// A sine tone.
#[derive(Debug)]
pub struct ToneSource {
    hz: f32,
    amplitude: f32,
    phase: f64,
    pacer: Pacer,
}

impl ToneSource {
    pub fn new(hz: f32, amplitude: f32) -> Self {
        Self { hz, amplitude, phase: 0.0, pacer: Pacer::default() }
    }
}

impl AudioSource for ToneSource {
    fn read_frame(&mut self, frame: &mut [f32]) -> Result<Instant, CaptureError> {
        let step = f64::from(self.hz) / f64::from(SAMPLE_RATE);
        for sample in frame.iter_mut() {
            *sample = self.amplitude * (std::f64::consts::TAU * self.phase).sin() as f32;
            self.phase = (self.phase + step).fract();
        }
        Ok(self.pacer.wait(frame.len()))
    }
}

/// Silence, for a participant who only listens.
#[derive(Debug, Default)]
pub struct SilenceSource {
    pacer: Pacer,
}

impl AudioSource for SilenceSource {
    fn read_frame(&mut self, frame: &mut [f32]) -> Result<Instant, CaptureError> {
        frame.fill(0.0);
        Ok(self.pacer.wait(frame.len()))
    }
}

/// A sink with no device: it takes frames at the real-time rate and hands each to a
/// callback (or drops it), so that a headless client plays out on the same timeline a
/// speaker would.
pub struct ClockSink {
    pacer: Pacer,
    latency: Duration,
}

impl ClockSink {
    /// `latency` is what a real device would add; the bot uses zero.
    pub fn new(latency: Duration) -> Self {
        Self { pacer: Pacer::default(), latency }
    }
}

impl AudioSink for ClockSink {
    fn write_frame(&mut self, frame: &[f32]) -> Result<(), CaptureError> {
        self.pacer.wait(frame.len());
        Ok(())
    }

    fn latency(&self) -> Duration {
        self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_a_continuous_sine_paced_in_real_time() {
        let mut tone = ToneSource::new(1000.0, 0.5);
        let mut a = vec![0.0; 480];
        let mut b = vec![0.0; 480];
        let first = tone.read_frame(&mut a).unwrap();
        let second = tone.read_frame(&mut b).unwrap();
        assert_eq!(second - first, Duration::from_millis(10), "capture instants are one frame apart");
        let joined: Vec<f32> = a.iter().chain(&b).copied().collect();
        // 1 kHz at 48 kHz: 48 samples a period, continuous across the frame boundary.
        for (i, sample) in joined.iter().enumerate() {
            let expected = 0.5 * (std::f64::consts::TAU * i as f64 / 48.0).sin() as f32;
            assert!((sample - expected).abs() < 1e-3, "sample {i}: {sample} vs {expected}");
        }
    }
}
