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
    /// When the recording starts, in milliseconds after the speaker began capturing.
    pub record_offset_ms: f64,
    /// Mouth to ear as the receiver reported it.
    pub reported_p50_ms: f64,
    pub reported_p95_ms: f64,
    /// PESQ-WB (P.862.2 MOS-LQO) of the recording against what was sent.
    pub pesq_wb: f32,
}

/// What a bot's `--stats-json` says of the peer named `name` (its latest entry: a peer that
/// rejoined appears once per session).
pub fn peer_stats<'a>(stats: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    stats["peers"].as_array().and_then(|peers| peers.iter().rev().find(|peer| peer["name"] == name))
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
    let heard =
        peer_stats(receiver_stats, sender_name).context("the receiver's stats do not list the sender")?;
    let audio = &heard["audio"];
    let record_start = audio["record_start_unix_us"].as_f64().context("no record_start_unix_us")?;
    let send_start =
        sender_stats["audio_send_start_unix_us"].as_f64().context("no audio_send_start_unix_us")?;
    let record_offset_ms = (record_start - send_start) / 1000.0;
    let aligned = &recording[lag.min(recording.len())..(lag + sent.len()).min(recording.len())];
    Ok(SpeechReport {
        lag,
        correlation,
        measured_ms: record_offset_ms + lag as f64 / 48.0,
        record_offset_ms,
        reported_p50_ms: audio["mouth_to_ear_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        reported_p95_ms: audio["mouth_to_ear_ms"]["p95"].as_f64().unwrap_or(f64::NAN),
        pesq_wb: pesq_wb_48k(sent, aligned)?,
    })
}

impl SpeechReport {
    /// Mouth-to-ear per 1 s piece of `sent` that holds speech, as found in `recording` within
    /// `search` samples either side of where the whole file lines up: heard (the recording's
    /// start plus the piece's place there) minus captured (the speaker's start plus its place
    /// in the file), as (seconds into `sent`, milliseconds).
    pub fn piece_delays(&self, sent: &[f32], recording: &[f32], search: usize) -> Vec<(f64, f64)> {
        piece_positions(sent, recording, self.lag, 48_000, search)
            .iter()
            .map(|&(start, at, _)| {
                (start as f64 / 48_000.0, self.record_offset_ms + (at as f64 - start as f64) / 48.0)
            })
            .collect()
    }
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
        Self::start_with_config(
            dir,
            "load-module module-null-sink sink_name=chinwag_null rate=48000 channels=1\n\
             set-default-sink chinwag_null\n\
             set-default-source chinwag_null.monitor\n",
        )
    }

    /// A server whose sinks, sources and defaults are made by `commands` (lines of a
    /// PulseAudio script, `load-module ...`, `set-default-sink ...`), after the socket.
    pub fn start_with_config(dir: &Path, commands: &str) -> anyhow::Result<PulseServer> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("native");
        let script = dir.join("chinwag.pa");
        std::fs::write(
            &script,
            format!(
                "load-module module-native-protocol-unix socket={} auth-anonymous=1\n{commands}",
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

/// At least `seconds` of espeak-ng speech at 48 kHz, `text` repeated as often as needed and cut
/// to exactly that length.
pub fn speech_of_length(dir: &Path, text: &str, seconds: f64) -> anyhow::Result<Vec<f32>> {
    let once = chinwag_capture::read_wav_48k_mono(&speech_wav(dir, text)?)?;
    let wanted = (seconds * 48_000.0).round() as usize;
    let repeats = wanted.div_ceil(once.len().max(1)).max(1);
    let mut speech = if repeats == 1 {
        once
    } else {
        chinwag_capture::read_wav_48k_mono(&speech_wav(dir, &vec![text; repeats].join(" "))?)?
    };
    speech.truncate(wanted);
    Ok(speech)
}

/// Writes 48 kHz mono 16-bit PCM, as the bots' `--send-audio` and `paplay` read it.
pub fn write_wav_48k_mono(path: &Path, samples: &[f32]) -> anyhow::Result<()> {
    let data_bytes = u32::try_from(samples.len() * 2).context("too long for a WAV file")?;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&48_000u32.to_le_bytes());
    out.extend_from_slice(&96_000u32.to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // bytes per frame
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_bytes.to_le_bytes());
    for sample in to_i16(samples) {
        out.extend_from_slice(&sample.to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// PESQ-WB (P.862.2) of `degraded` against `reference`, both 48 kHz and roughly lined up.
pub fn pesq_wb_48k(reference: &[f32], degraded: &[f32]) -> anyhow::Result<f32> {
    let reference = chinwag_codec::resample_all(reference, 48_000, 16_000)?;
    let degraded = chinwag_codec::resample_all(degraded, 48_000, 16_000)?;
    pesq::pesq_wb(&to_i16(&reference), &to_i16(&degraded)).map_err(|e| anyhow::anyhow!("PESQ: {e:?}"))
}

/// Where `sent[start..start + len]` is heard in `recording`: the best match within `search`
/// samples either side of `expected` (a position in `recording`), and how well it matches.
pub fn find_piece(
    sent: &[f32],
    start: usize,
    len: usize,
    recording: &[f32],
    expected: usize,
    search: usize,
) -> Option<(usize, f32)> {
    let piece = sent.get(start..(start + len).min(sent.len()))?;
    let low = expected.saturating_sub(search);
    let high = (expected + search + piece.len()).min(recording.len());
    if high <= low + piece.len() {
        return None;
    }
    let (lag, correlation) = best_lag(piece, &recording[low..high], high - low - piece.len());
    Some((low + lag, correlation))
}

/// Per `window` of `sent` that holds speech (not near silence): where in `recording` it was
/// heard, as `(position in sent, position in recording, correlation)`, searching `search`
/// samples either side of where `whole_lag` (the whole file's alignment) puts it. Windows whose
/// best match correlates below 0.5 are left out: they were not found, so they say nothing
/// about the delay.
pub fn piece_positions(
    sent: &[f32],
    recording: &[f32],
    whole_lag: usize,
    window: usize,
    search: usize,
) -> Vec<(usize, usize, f32)> {
    let loudness = rms(sent);
    (0..sent.len().saturating_sub(window / 2))
        .step_by(window.max(1))
        .filter(|&start| rms(&sent[start..(start + window).min(sent.len())]) > 0.3 * loudness)
        .filter_map(|start| {
            let (at, correlation) = find_piece(sent, start, window, recording, whole_lag + start, search)?;
            (correlation >= 0.5).then_some((start, at, correlation))
        })
        .collect()
}

/// The `p` quantile (0 to 1) of `values`; NaN when empty.
pub fn quantile(values: &[f64], p: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_found_where_they_were_put() {
        let mut state = 1u32;
        let sent: Vec<f32> = (0..48_000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.5
            })
            .collect();
        // Heard 1000 samples late, then (from 24 000 on) 480 samples later still.
        let mut recording = vec![0.0; 1000];
        recording.extend_from_slice(&sent[..24_000]);
        recording.extend(vec![0.0; 480]);
        recording.extend_from_slice(&sent[24_000..]);
        let positions = piece_positions(&sent, &recording, 1000, 12_000, 2000);
        let lags: Vec<usize> = positions.iter().map(|(start, at, _)| at - start).collect();
        assert_eq!(lags, vec![1000, 1000, 1480, 1480]);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
    }

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
