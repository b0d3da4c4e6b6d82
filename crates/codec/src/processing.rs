//! Voice processing of the microphone: echo cancellation, noise suppression, automatic gain
//! and voice activity, through `sonora` (WebRTC's audio processing module ported to Rust).

use std::time::Duration;

use sonora::config::{AdaptiveDigital, EchoCanceller, GainController2, NoiseSuppression};
use sonora::{AudioProcessing, Config, StreamConfig};
use sonora_agc2::vad_wrapper::VoiceActivityDetectorWrapper;

use crate::{CodecError, SAMPLE_RATE};

/// Samples in the one frame size voice processing takes: 10 ms at 48 kHz.
pub const PROCESSING_FRAME_SAMPLES: usize = SAMPLE_RATE as usize / 100;

/// The longest render-to-capture delay sonora accepts as a hint; longer ones are clamped.
pub const MAX_STREAM_DELAY: Duration = Duration::from_millis(500);

/// The level [`CaptureAnalysis::level_dbfs`] reports for digital silence.
pub const SILENCE_DBFS: f32 = -100.0;

/// The speech probability from which a frame counts as voice. The RNN gives speech well above
/// 0.9 and noise well below 0.1, so the threshold matters little; AGC2 itself uses 0.95 to
/// decide which frames to measure the speech level on.
const VOICE_PROBABILITY: f32 = 0.5;

/// Which stages run on the microphone signal. Every stage is on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingConfig {
    /// AEC3: removes what the speaker played from the microphone signal, using the far-end
    /// frames given to [`VoiceProcessor::process_render`] as the reference.
    pub echo_cancellation: bool,
    /// Suppresses stationary background noise (fans, hum, hiss), by 12 to 15 dB.
    pub noise_suppression: bool,
    /// AGC2's adaptive digital gain: brings speech towards a steady level, limited so that it
    /// never lifts the background noise above -50 dBFS, followed by a limiter.
    pub gain_control: bool,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self { echo_cancellation: true, noise_suppression: true, gain_control: true }
    }
}

/// What [`VoiceProcessor::process_capture`] found in the processed frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureAnalysis {
    /// Whether the processed frame, the one that will be sent, holds speech: for a speaking
    /// indicator, and to send less while the user is silent. It comes from AGC2's RNN voice
    /// activity detector, which needs 20 to 40 ms to pick up a syllable and mostly ignores
    /// fricatives, so callers that gate sending on it want a short hangover. Echo that the
    /// canceller has removed does not count as voice.
    pub voice: bool,
    /// The voice activity detector's probability (0 to 1) that the frame is speech.
    pub speech_probability: f32,
    /// The RMS level of the processed frame in dBFS (a full-scale square wave reads 0), and
    /// [`SILENCE_DBFS`] for digital silence.
    pub level_dbfs: f32,
}

/// What the echo canceller reports about the echo path. A field is `None` while echo
/// cancellation is off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessingStats {
    /// Echo return loss in dB: how much quieter the echo arrives than the far end was played,
    /// by AEC3's estimate (it tracks the quietest ratio, so it reads high: 20 dB for the tests'
    /// echo 10 dB down; -30 dB until it has an estimate).
    pub echo_return_loss_db: Option<f64>,
    /// Echo return loss enhancement in dB: how much of the echo the canceller's linear filter
    /// removes, by its own estimate. The suppressor after it removes more: 18 dB here goes with
    /// 35 to 40 dB less echo at the output in the tests.
    pub echo_return_loss_enhancement_db: Option<f64>,
    /// The render-to-capture delay the canceller has aligned its reference to, in 4 ms steps
    /// and a step or so short of the true delay, to leave headroom.
    pub echo_delay: Option<Duration>,
}

/// Cleans the microphone signal of one call, 10 ms at a time, at 48 kHz mono.
///
/// Feed it every far-end frame played to the speaker with [`process_render`], and every
/// microphone frame with [`process_capture`]; on a real device the far end leads, so render a
/// frame before capturing the one that may hold its echo. Sonora allocates while it processes,
/// so call this from the engine's audio thread, never from a device callback.
///
/// With any stage on, sonora works at 32 kHz inside, so the output carries nothing above
/// 16 kHz: no loss for a voice, and cheaper than working at 48 kHz.
///
/// [`process_render`]: VoiceProcessor::process_render
/// [`process_capture`]: VoiceProcessor::process_capture
pub struct VoiceProcessor {
    apm: AudioProcessing,
    config: ProcessingConfig,
    vad: VoiceActivityDetectorWrapper,
    /// Sonora reads from one buffer and writes to another; these hold the other side.
    render_out: Vec<f32>,
    capture_in: Vec<f32>,
    /// The processed frame scaled to 16-bit sample values, as the VAD expects them.
    vad_in: Vec<f32>,
}

impl VoiceProcessor {
    pub fn new(config: ProcessingConfig) -> Self {
        let stream = StreamConfig::new(SAMPLE_RATE, 1);
        let apm = AudioProcessing::builder()
            .config(sonora_config(config))
            .capture_config(stream)
            .render_config(stream)
            .build();
        let vad = VoiceActivityDetectorWrapper::new(sonora_simd::detect_backend(), SAMPLE_RATE as i32);
        Self {
            apm,
            config,
            vad,
            render_out: vec![0.0; PROCESSING_FRAME_SAMPLES],
            capture_in: vec![0.0; PROCESSING_FRAME_SAMPLES],
            vad_in: vec![0.0; PROCESSING_FRAME_SAMPLES],
        }
    }

    pub fn config(&self) -> ProcessingConfig {
        self.config
    }

    /// Switches stages on or off while running. Sonora then rebuilds every stage, the echo
    /// canceller included, whichever one changed: echo cancellation starts over as at the start
    /// of a call, so switch stages when the user asks, not as a matter of course.
    pub fn set_config(&mut self, config: ProcessingConfig) {
        if config != self.config {
            self.apm.apply_config(sonora_config(config));
            self.config = config;
        }
    }

    /// Tells the echo canceller how long a sample takes from [`process_render`] to its echo
    /// in [`process_capture`], as the devices report it (output latency plus input latency).
    /// It is a hint: AEC3 aligns its reference with it when it starts, and then follows its
    /// own estimate, which takes over within half a second. A missing hint costs nothing in the
    /// tests; one 140 ms off costs the first half second. Delays above [`MAX_STREAM_DELAY`]
    /// are clamped to it.
    ///
    /// [`process_render`]: VoiceProcessor::process_render
    /// [`process_capture`]: VoiceProcessor::process_capture
    pub fn set_stream_delay(&mut self, delay: Duration) {
        let ms = delay.min(MAX_STREAM_DELAY).as_millis() as i32;
        // Only out-of-range delays are refused, and the clamp above rules those out.
        let _in_range = self.apm.set_stream_delay_ms(ms);
    }

    /// Takes one 10 ms frame of what is being played to the speaker ([`PROCESSING_FRAME_SAMPLES`]
    /// samples in -1.0..=1.0), as the echo canceller's reference.
    pub fn process_render(&mut self, far_end: &[f32]) -> Result<(), CodecError> {
        check_frame(far_end)?;
        self.apm
            .process_render_f32(&[far_end], &mut [&mut self.render_out])
            .expect("48 kHz mono is a format sonora supports");
        Ok(())
    }

    /// Processes one 10 ms frame of the microphone ([`PROCESSING_FRAME_SAMPLES`] samples in
    /// -1.0..=1.0) in place, and reports whether the result holds speech and how loud it is.
    pub fn process_capture(&mut self, near_end: &mut [f32]) -> Result<CaptureAnalysis, CodecError> {
        check_frame(near_end)?;
        self.capture_in.copy_from_slice(near_end);
        self.apm
            .process_capture_f32(&[&self.capture_in], &mut [near_end])
            .expect("48 kHz mono is a format sonora supports");

        for (scaled, &sample) in self.vad_in.iter_mut().zip(near_end.iter()) {
            *scaled = sample * 32_768.0;
        }
        let speech_probability = self.vad.analyze(&self.vad_in);
        Ok(CaptureAnalysis {
            voice: speech_probability >= VOICE_PROBABILITY,
            speech_probability,
            level_dbfs: level_dbfs(near_end),
        })
    }

    pub fn stats(&self) -> ProcessingStats {
        // Sonora keeps reporting the last figures of a canceller that has been switched off.
        if !self.config.echo_cancellation {
            return ProcessingStats::default();
        }
        let stats = self.apm.statistics();
        ProcessingStats {
            echo_return_loss_db: stats.echo_return_loss,
            echo_return_loss_enhancement_db: stats.echo_return_loss_enhancement,
            echo_delay: stats.delay_ms.and_then(|ms| u64::try_from(ms).ok()).map(Duration::from_millis),
        }
    }
}

impl Default for VoiceProcessor {
    fn default() -> Self {
        Self::new(ProcessingConfig::default())
    }
}

impl std::fmt::Debug for VoiceProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceProcessor").field("config", &self.config).finish_non_exhaustive()
    }
}

fn sonora_config(config: ProcessingConfig) -> Config {
    Config {
        echo_canceller: config.echo_cancellation.then(EchoCanceller::default),
        noise_suppression: config.noise_suppression.then(NoiseSuppression::default),
        // Sonora's default AGC2 is only the limiter: the adaptive gain must be asked for.
        gain_controller2: config.gain_control.then(|| GainController2 {
            adaptive_digital: Some(AdaptiveDigital::default()),
            ..GainController2::default()
        }),
        ..Config::default()
    }
}

fn check_frame(frame: &[f32]) -> Result<(), CodecError> {
    if frame.len() == PROCESSING_FRAME_SAMPLES {
        Ok(())
    } else {
        Err(CodecError::WrongFrameLength { expected: PROCESSING_FRAME_SAMPLES, got: frame.len() })
    }
}

fn level_dbfs(frame: &[f32]) -> f32 {
    let mean_square = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    // A full-scale square wave has a mean square of 1, which reads 0 dBFS.
    (10.0 * mean_square.log10()).max(SILENCE_DBFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_the_wrong_length_are_refused() {
        let mut processor = VoiceProcessor::default();
        for len in [0, 479, 481, 960] {
            let mut frame = vec![0.1; len];
            assert!(matches!(
                processor.process_render(&frame),
                Err(CodecError::WrongFrameLength { expected: 480, got }) if got == len
            ));
            assert!(matches!(
                processor.process_capture(&mut frame),
                Err(CodecError::WrongFrameLength { expected: 480, got }) if got == len
            ));
            assert!(frame.iter().all(|&s| s == 0.1), "a refused frame is left alone");
        }
        // The processor carries on with frames of the right length.
        let mut frame = [0.0; PROCESSING_FRAME_SAMPLES];
        processor.process_render(&frame).unwrap();
        processor.process_capture(&mut frame).unwrap();
    }

    #[test]
    fn silence_is_silent_and_not_voice() {
        let mut processor = VoiceProcessor::default();
        for _ in 0..100 {
            let mut frame = [0.0; PROCESSING_FRAME_SAMPLES];
            processor.process_render(&frame).unwrap();
            let analysis = processor.process_capture(&mut frame).unwrap();
            assert!(!analysis.voice);
            assert_eq!(analysis.level_dbfs, SILENCE_DBFS);
            assert!(frame.iter().all(|&s| s == 0.0));
        }
    }

    #[test]
    fn the_level_is_the_processed_frames_rms() {
        let mut processor = VoiceProcessor::new(ProcessingConfig {
            echo_cancellation: false,
            noise_suppression: false,
            gain_control: false,
        });
        // A 1 kHz sine at half scale: RMS 0.354, -9.0 dBFS.
        let mut level = 0.0;
        for frame_idx in 0..20 {
            let mut frame: Vec<f32> = (0..PROCESSING_FRAME_SAMPLES)
                .map(|i| {
                    let t = (frame_idx * PROCESSING_FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
                    0.5 * (2.0 * std::f32::consts::PI * 1000.0 * t).sin()
                })
                .collect();
            level = processor.process_capture(&mut frame).unwrap().level_dbfs;
        }
        assert!((level + 9.0).abs() < 0.5, "{level} dBFS");
    }

    #[test]
    fn stages_switch_at_run_time() {
        let mut processor = VoiceProcessor::default();
        assert_eq!(processor.config(), ProcessingConfig::default());
        let mut frame = [0.01; PROCESSING_FRAME_SAMPLES];
        processor.process_render(&frame).unwrap();
        processor.process_capture(&mut frame).unwrap();
        assert!(processor.stats().echo_return_loss_enhancement_db.is_some());

        let off = ProcessingConfig { echo_cancellation: false, ..ProcessingConfig::default() };
        processor.set_config(off);
        assert_eq!(processor.config(), off);
        processor.process_capture(&mut frame).unwrap();
        assert_eq!(processor.stats(), ProcessingStats::default(), "no echo statistics without AEC");
    }

    #[test]
    fn a_processor_can_move_to_the_audio_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<VoiceProcessor>();
    }

    #[test]
    fn any_stream_delay_is_accepted() {
        let mut processor = VoiceProcessor::default();
        for delay in [Duration::ZERO, Duration::from_millis(80), Duration::from_secs(3600), Duration::MAX] {
            processor.set_stream_delay(delay);
            let mut frame = [0.0; PROCESSING_FRAME_SAMPLES];
            processor.process_render(&frame).unwrap();
            processor.process_capture(&mut frame).unwrap();
        }
    }
}
