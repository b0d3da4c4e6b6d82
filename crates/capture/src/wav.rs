//! WAV files in and out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{AudioSource, CaptureError, Pacer, SAMPLE_RATE};

/// Reads a WAV file (any common rate, channel count and sample format) as 48 kHz mono.
pub fn read_wav_48k_mono(path: &Path) -> Result<Vec<f32>, CaptureError> {
    let error = |reason: String| CaptureError::Wav { path: path.to_owned(), reason };
    let mut reader = hound::WavReader::open(path).map_err(|e| error(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(error("the header says zero channels or a zero sample rate".into()));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader.samples::<i32>().map(|s| s.map(|s| s as f32 * scale)).collect::<Result<_, _>>()
        }
    }
    .map_err(|e| error(e.to_string()))?;
    let channels = usize::from(spec.channels);
    let mono: Vec<f32> =
        interleaved.chunks(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32).collect();
    chinwag_codec::resample_all(&mono, spec.sample_rate, SAMPLE_RATE).map_err(|e| error(e.to_string()))
}

/// A WAV file played in real time, then silence.
#[derive(Debug)]
pub struct WavSource {
    samples: Vec<f32>,
    position: usize,
    pacer: Pacer,
}

impl WavSource {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        Ok(Self::from_samples(read_wav_48k_mono(path)?))
    }

    pub fn from_samples(samples: Vec<f32>) -> Self {
        Self { samples, position: 0, pacer: Pacer::default() }
    }

    /// Whether the whole file has been played.
    pub fn finished(&self) -> bool {
        self.position >= self.samples.len()
    }
}

impl AudioSource for WavSource {
    fn read_frame(&mut self, frame: &mut [f32]) -> Result<Instant, CaptureError> {
        let start = self.position.min(self.samples.len());
        let available = (self.samples.len() - start).min(frame.len());
        frame[..available].copy_from_slice(&self.samples[start..start + available]);
        frame[available..].fill(0.0);
        self.position = self.position.saturating_add(frame.len());
        Ok(self.pacer.wait(frame.len()))
    }
}

/// Writes 48 kHz mono 16-bit PCM.
pub struct WavRecorder {
    path: PathBuf,
    writer: Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>,
    samples: u64,
}

impl WavRecorder {
    pub fn create(path: &Path) -> Result<Self, CaptureError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec)
            .map_err(|e| CaptureError::Record { path: path.to_owned(), reason: e.to_string() })?;
        Ok(Self { path: path.to_owned(), writer: Some(writer), samples: 0 })
    }

    pub fn write(&mut self, samples: &[f32]) -> Result<(), CaptureError> {
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        for &sample in samples {
            let value = (sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
            writer
                .write_sample(value)
                .map_err(|e| CaptureError::Record { path: self.path.clone(), reason: e.to_string() })?;
        }
        self.samples += samples.len() as u64;
        Ok(())
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Completes the header; also done on drop, where an error can only be ignored.
    pub fn finish(&mut self) -> Result<(), CaptureError> {
        match self.writer.take() {
            Some(writer) => writer
                .finalize()
                .map_err(|e| CaptureError::Record { path: self.path.clone(), reason: e.to_string() }),
            None => Ok(()),
        }
    }
}

impl Drop for WavRecorder {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stereo_44k_file_becomes_48k_mono_and_plays_then_goes_silent() {
        let dir = std::env::temp_dir().join(format!("chinwag-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stereo.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..4410 {
            // Left a 441 Hz tone, right silent: the mono mix is half the tone.
            let left = (0.8 * (std::f64::consts::TAU * 441.0 * i as f64 / 44_100.0).sin() * 32767.0) as i16;
            writer.write_sample(left).unwrap();
            writer.write_sample(0i16).unwrap();
        }
        writer.finalize().unwrap();

        let mono = read_wav_48k_mono(&path).unwrap();
        assert!((4790..=4810).contains(&mono.len()), "{} samples for 0.1 s", mono.len());
        let peak = mono[500..4300].iter().fold(0.0f32, |peak, s| peak.max(s.abs()));
        assert!((0.37..0.43).contains(&peak), "peak {peak}");

        let mut source = WavSource::from_samples(mono);
        let mut frame = vec![0.0; 960];
        for _ in 0..5 {
            source.read_frame(&mut frame).unwrap();
        }
        assert!(!source.finished() || frame.iter().any(|s| *s != 0.0));
        source.read_frame(&mut frame).unwrap();
        assert!(source.finished());
        assert!(frame.iter().all(|s| *s == 0.0), "silence after the end");
        source.read_frame(&mut frame).unwrap();
        assert!(frame.iter().all(|s| *s == 0.0), "and silence it stays");

        let out = dir.join("out.wav");
        let mut recorder = WavRecorder::create(&out).unwrap();
        recorder.write(&[0.5, -0.5, 2.0]).unwrap();
        recorder.finish().unwrap();
        let back: Vec<i16> =
            hound::WavReader::open(&out).unwrap().samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(back, [16384, -16384, 32767]);
        assert!(read_wav_48k_mono(&dir.join("missing.wav")).unwrap_err().to_string().contains("missing.wav"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
