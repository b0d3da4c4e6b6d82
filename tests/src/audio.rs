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
