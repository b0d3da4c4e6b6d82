//! Sample-rate conversion for devices and files that do not run at 48 kHz.

use std::collections::VecDeque;

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use crate::CodecError;

/// A streaming mono converter between two fixed rates: push any number of samples, pull what
/// is ready. Its delay is one chunk (10 ms of input) plus the filter's.
pub struct Resampler {
    from: u32,
    to: u32,
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
    chunk_out: Vec<f32>,
    ready: VecDeque<f32>,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Result<Self, CodecError> {
        let error = |reason: String| CodecError::Resampler { from, to, reason };
        if from == 0 || to == 0 {
            return Err(error("rates must be above 0".into()));
        }
        let inner = if from == to {
            None
        } else {
            let chunk = (from as usize / 100).max(1);
            let fft = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                .map_err(|e| error(e.to_string()))?;
            Some(fft)
        };
        let chunk_out = vec![0.0; inner.as_ref().map_or(0, |fft| fft.output_frames_max())];
        Ok(Self { from, to, inner, pending: Vec::new(), chunk_out, ready: VecDeque::new() })
    }

    pub fn rates(&self) -> (u32, u32) {
        (self.from, self.to)
    }

    /// Takes input samples at the `from` rate.
    pub fn push(&mut self, samples: &[f32]) {
        let Some(fft) = self.inner.as_mut() else {
            self.ready.extend(samples);
            return;
        };
        self.pending.extend_from_slice(samples);
        let chunk = fft.input_frames_next();
        let mut used = 0;
        while self.pending.len() - used >= chunk {
            let input = InterleavedSlice::new(&self.pending[used..used + chunk], 1, chunk)
                .expect("the slice holds exactly one chunk");
            let frames_out = self.chunk_out.len();
            let mut output = InterleavedSlice::new_mut(&mut self.chunk_out, 1, frames_out)
                .expect("the output buffer holds the most one chunk can produce");
            let (consumed, produced) = fft
                .process_into_buffer(&input, &mut output, None)
                .expect("buffers are sized by the resampler");
            used += consumed;
            self.ready.extend(&self.chunk_out[..produced]);
        }
        self.pending.drain(..used);
    }

    /// Samples ready at the `to` rate.
    pub fn available(&self) -> usize {
        self.ready.len()
    }

    /// Moves up to `out.len()` ready samples into `out`; returns how many.
    pub fn pull(&mut self, out: &mut [f32]) -> usize {
        let n = out.len().min(self.ready.len());
        for (slot, sample) in out.iter_mut().zip(self.ready.drain(..n)) {
            *slot = sample;
        }
        n
    }
}

/// Converts a whole clip, trimming the filter's delay so that the output lines up with the
/// input.
pub fn resample_all(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, CodecError> {
    if from == to {
        return Ok(samples.to_vec());
    }
    let error = |reason: String| CodecError::Resampler { from, to, reason };
    let mut fft = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| error(e.to_string()))?;
    let needed = fft.process_all_needed_output_len(samples.len());
    let mut out = vec![0.0; needed];
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| error(e.to_string()))?;
    let mut output = InterleavedSlice::new_mut(&mut out, 1, needed).map_err(|e| error(e.to_string()))?;
    let (_, produced) = fft
        .process_all_into_buffer(&input, &mut output, samples.len(), None)
        .map_err(|e| error(e.to_string()))?;
    out.truncate(produced);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, hz: f32, rate: u32) -> Vec<f32> {
        (0..n).map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin()).collect()
    }

    /// The frequency of the strongest zero-crossing rate, good enough for a pure tone.
    fn frequency(samples: &[f32], rate: u32) -> f32 {
        let crossings = samples.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
        crossings as f32 * rate as f32 / samples.len() as f32
    }

    #[test]
    fn a_clip_keeps_its_length_and_pitch() {
        let input = tone(44_100, 1000.0, 44_100);
        let output = resample_all(&input, 44_100, 48_000).unwrap();
        assert!((47_990..=48_010).contains(&output.len()), "{}", output.len());
        let hz = frequency(&output[4800..43_200], 48_000);
        assert!((995.0..1005.0).contains(&hz), "{hz} Hz");
    }

    #[test]
    fn streaming_in_odd_pieces_gives_the_same_rate() {
        let mut resampler = Resampler::new(44_100, 48_000).unwrap();
        let input = tone(44_100, 440.0, 44_100);
        for piece in input.chunks(333) {
            resampler.push(piece);
        }
        let mut out = vec![0.0; resampler.available()];
        let n = resampler.pull(&mut out);
        assert!((47_000..=48_000).contains(&n), "{n} samples out of one second");
        let hz = frequency(&out[4800..n - 480], 48_000);
        assert!((435.0..445.0).contains(&hz), "{hz} Hz");
    }

    #[test]
    fn equal_rates_pass_through() {
        let mut resampler = Resampler::new(48_000, 48_000).unwrap();
        resampler.push(&[0.1, 0.2, 0.3]);
        let mut out = [0.0; 4];
        assert_eq!(resampler.pull(&mut out), 3);
        assert_eq!(out, [0.1, 0.2, 0.3, 0.0]);
        assert!(Resampler::new(0, 48_000).is_err());
    }
}
