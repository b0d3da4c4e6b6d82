//! Audio analysis and set-up for end-to-end tests: test speech, alignment, tone levels, and a
//! private PulseAudio server whose null sink loops playback into the microphone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Writes synthetic speech with espeak-ng (installed by `scripts/test.sh`).
pub fn speech_wav(dir: &Path, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("speech.wav");
    let status = Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .context("cannot run espeak-ng: install it (apt-get install espeak-ng) or run scripts/test.sh")?;
    if !status.success() {
        bail!("espeak-ng failed: {status}");
    }
    Ok(path)
}

pub fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// Averages every `factor` samples into one (a crude low-pass and decimation).
pub fn decimate(samples: &[f32], factor: usize) -> Vec<f32> {
    samples.chunks(factor).map(|chunk| chunk.iter().sum::<f32>() / chunk.len() as f32).collect()
}

/// Normalised cross-correlation of `reference` against `signal` shifted by `lag`.
fn correlation_at(reference: &[f32], signal: &[f32], lag: usize) -> f32 {
    let n = reference.len().min(signal.len().saturating_sub(lag));
    if n == 0 {
        return 0.0;
    }
    let (mut dot, mut energy_ref, mut energy_sig) = (0.0f64, 0.0f64, 0.0f64);
    for (a, b) in reference[..n].iter().zip(&signal[lag..lag + n]) {
        dot += f64::from(*a) * f64::from(*b);
        energy_ref += f64::from(*a) * f64::from(*a);
        energy_sig += f64::from(*b) * f64::from(*b);
    }
    if energy_ref == 0.0 || energy_sig == 0.0 {
        return 0.0;
    }
    (dot / (energy_ref * energy_sig).sqrt()) as f32
}

/// Where `reference` starts inside `signal` (in samples, up to `max_lag`), and how well it
/// matches there (normalised correlation, 1 is identical). Searches at a twelfth of the rate,
/// then refines at the full rate.
pub fn best_lag(reference: &[f32], signal: &[f32], max_lag: usize) -> (usize, f32) {
    const COARSE: usize = 12;
    let (coarse_ref, coarse_sig) = (decimate(reference, COARSE), decimate(signal, COARSE));
    let coarse_lag = (0..=max_lag / COARSE)
        .map(|lag| (lag, correlation_at(&coarse_ref, &coarse_sig, lag)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(lag, _)| lag * COARSE);
    let low = coarse_lag.saturating_sub(2 * COARSE);
    (low..=coarse_lag + 2 * COARSE)
        .map(|lag| (lag, correlation_at(reference, signal, lag)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0))
}

/// The amplitude of the `hz` component of `samples` at `rate` (Goertzel).
pub fn tone_amplitude(samples: &[f32], hz: f32, rate: u32) -> f32 {
    let omega = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(rate);
    let coeff = 2.0 * omega.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    (2.0 * power.max(0.0).sqrt() / samples.len().max(1) as f64) as f32
}

/// Converts to 16-bit PCM.
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16).collect()
}

/// What a call did to speech, from the sent file, the receiver's recording of the sender, and
/// both bots' stats.
#[derive(Debug, Clone)]
pub struct SpeechReport {
    /// Where the speech starts in the recording, in samples.
    pub lag: usize,
    /// How well the recording matches what was sent there (1 is identical).
    pub correlation: f32,
    /// Mouth to ear from the recording: wall-clock time the speech was heard minus when it
    /// was captured.
    pub measured_ms: f64,
    /// Mouth to ear as the receiver reported it.
    pub reported_p50_ms: f64,
    pub reported_p95_ms: f64,
    /// PESQ-WB (P.862.2 MOS-LQO) of the recording against what was sent.
    pub pesq_wb: f32,
}

/// Compares `recording` (48 kHz, as the receiver wrote it) with `sent` (48 kHz), using the
/// sender's `audio_send_start_unix_us` and the receiver's stats for the sender's name.
pub fn speech_report(
    sent: &[f32],
    recording: &[f32],
    sender_stats: &serde_json::Value,
    receiver_stats: &serde_json::Value,
    sender_name: &str,
) -> anyhow::Result<SpeechReport> {
    let (lag, correlation) = best_lag(sent, recording, 48_000 * 4);
    let heard = receiver_stats["peers"]
        .as_array()
        .and_then(|peers| peers.iter().rev().find(|peer| peer["name"] == sender_name))
        .context("the receiver's stats do not list the sender")?;
    let audio = &heard["audio"];
    let record_start = audio["record_start_unix_us"].as_f64().context("no record_start_unix_us")?;
    let send_start =
        sender_stats["audio_send_start_unix_us"].as_f64().context("no audio_send_start_unix_us")?;
    let measured_ms = (record_start + lag as f64 / 48.0 * 1000.0 - send_start) / 1000.0;
    let aligned = &recording[lag.min(recording.len())..(lag + sent.len()).min(recording.len())];
    let reference = chinwag_codec::resample_all(sent, 48_000, 16_000)?;
    let degraded = chinwag_codec::resample_all(aligned, 48_000, 16_000)?;
    let pesq_wb =
        pesq::pesq_wb(&to_i16(&reference), &to_i16(&degraded)).map_err(|e| anyhow::anyhow!("PESQ: {e:?}"))?;
    Ok(SpeechReport {
        lag,
        correlation,
        measured_ms,
        reported_p50_ms: audio["mouth_to_ear_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        reported_p95_ms: audio["mouth_to_ear_ms"]["p95"].as_f64().unwrap_or(f64::NAN),
        pesq_wb,
    })
}

/// PESQ-WB of `speech` through Opus alone (encode and decode in this process, no network, no
/// jitter buffer): the best a call can score with this codec setting.
pub fn opus_pesq_wb(speech: &[f32], config: chinwag_codec::VoiceConfig) -> anyhow::Result<f32> {
    let frame = config.frame;
    let mut encoder = chinwag_codec::VoiceEncoder::new(config)?;
    let mut decoder = chinwag_codec::VoiceDecoder::new();
    let mut decoded = Vec::with_capacity(speech.len());
    let mut packet = Vec::new();
    for chunk in speech.chunks(frame.samples()) {
        let mut pcm = chunk.to_vec();
        pcm.resize(frame.samples(), 0.0);
        encoder.encode(&pcm, &mut packet)?;
        decoded.extend_from_slice(decoder.decode(&packet)?);
    }
    // Opus delays its output by its lookahead; line the decoded speech up with the input.
    let delay = (chinwag_codec::CODEC_DELAY.as_secs_f64() * 48_000.0).round() as usize;
    let aligned = &decoded[delay.min(decoded.len())..];
    let reference = chinwag_codec::resample_all(speech, 48_000, 16_000)?;
    let degraded = chinwag_codec::resample_all(aligned, 48_000, 16_000)?;
    pesq::pesq_wb(&to_i16(&reference), &to_i16(&degraded)).map_err(|e| anyhow::anyhow!("PESQ: {e:?}"))
}

/// A private PulseAudio server with a null sink as default output and its monitor as default
/// input, reachable by children started with [`PulseServer::env`]. Killed when dropped.
pub struct PulseServer {
    child: Child,
    socket: PathBuf,
}

impl PulseServer {
    pub fn start(dir: &Path) -> anyhow::Result<PulseServer> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("native");
        let script = dir.join("chinwag.pa");
        std::fs::write(
            &script,
            format!(
                "load-module module-native-protocol-unix socket={} auth-anonymous=1\n\
                 load-module module-null-sink sink_name=chinwag_null rate=48000 channels=1\n\
                 set-default-sink chinwag_null\n\
                 set-default-source chinwag_null.monitor\n",
                socket.display()
            ),
        )?;
        let child = Command::new("pulseaudio")
            .args(["-n", "-F"])
            .arg(&script)
            .args(["--daemonize=no", "--exit-idle-time=-1", "--log-target=stderr", "--log-level=error"])
            .env("HOME", dir)
            .env("XDG_RUNTIME_DIR", dir)
            .env("PULSE_RUNTIME_PATH", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start pulseaudio: install pulseaudio, pulseaudio-utils and libasound2-plugins (scripts/test.sh does)")?;
        let mut server = PulseServer { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.socket.exists() {
            if let Some(status) = server.child.try_wait()? {
                bail!("pulseaudio exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("pulseaudio did not open its socket within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Environment for a child process that should use this server through ALSA's pulse plugin.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("PULSE_SERVER".into(), format!("unix:{}", self.socket.display()))]
    }
}

impl Drop for PulseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_tone_detection_find_what_was_put_there() {
        let reference: Vec<f32> =
            (0..9600).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * (i as f32 / 9600.0)).collect();
        let mut signal = vec![0.0; 3000];
        signal.extend(reference.iter().map(|s| s * 0.5));
        signal.extend(vec![0.0; 1000]);
        let (lag, correlation) = best_lag(&reference, &signal, 6000);
        assert_eq!(lag, 3000);
        assert!(correlation > 0.99, "{correlation}");

        let tone: Vec<f32> = (0..48_000)
            .map(|i| 0.25 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin())
            .collect();
        assert!((tone_amplitude(&tone, 440.0, 48_000) - 0.25).abs() < 0.01);
        assert!(tone_amplitude(&tone, 1000.0, 48_000) < 0.01);
    }
}
