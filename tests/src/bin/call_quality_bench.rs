//! Mouth-to-ear delay and speech quality between two bots on clean loopback.
//!
//! Starts `chinwag-relay` and two `chinwag-bot` processes (built next to this program): one
//! records, the other sends synthetic speech from espeak-ng, once with 20 ms and once with
//! 10 ms Opus frames; then once more with the video test pattern at 640x480 and 30 fps, for
//! glass-to-glass delay and the video bitrate. Reports the receiver's mouth-to-ear delay (and the same measured from
//! its recording), and PESQ-WB of the recording against the sent speech, with Opus alone
//! (encode and decode in this process, no network) as the baseline measured in the same run.
//!
//! ```text
//! cargo build --release -p chinwag-relay -p chinwag-bot -p chinwag-e2e
//! target/release/call-quality-bench
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chinwag_codec::FrameDuration;
use chinwag_e2e::audio::{opus_pesq_wb, speech_report, speech_wav};
use chinwag_e2e::{RelayProcess, sibling_binary};

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A call should sound as clear as this, \
                    with no delay that anyone can notice, from the first word to the last.";

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("chinwag-quality-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let speech = speech_wav(&dir, TEXT)?;
    let sent = chinwag_capture::read_wav_48k_mono(&speech)?;
    println!("speech: {:.1} s from espeak-ng", sent.len() as f64 / 48_000.0);
    for (frame_ms, frame) in [(20, FrameDuration::Ms20), (10, FrameDuration::Ms10)] {
        let relay = RelayProcess::start(&sibling_binary("chinwag-relay"), &[])?;
        let run_dir = dir.join(format!("{frame_ms}ms"));
        let report = run_call(&relay, &run_dir, &speech, frame_ms)?;
        let sent_stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("speaker.json"))?)?;
        let heard_stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("listener.json"))?)?;
        let recording = chinwag_capture::read_wav_48k_mono(&report.join("Speaker.wav"))?;
        let result = speech_report(&sent, &recording, &sent_stats, &heard_stats, "Speaker")?;
        let baseline = opus_pesq_wb(&sent, chinwag_codec::VoiceConfig { frame, ..Default::default() })?;
        let jitter = &heard_stats["peers"][0]["audio"]["jitter_buffer_ms"];
        println!(
            "{frame_ms} ms frames: mouth-to-ear p50 {:.1} ms, p95 {:.1} ms (from the recording {:.1} ms; jitter buffer p50 {:.1} ms); \
             PESQ-WB {:.3} against Opus alone {:.3} (ratio {:.3}); correlation {:.3}",
            result.reported_p50_ms,
            result.reported_p95_ms,
            result.measured_ms,
            jitter["p50"].as_f64().unwrap_or(f64::NAN),
            result.pesq_wb,
            baseline,
            result.pesq_wb / baseline,
            result.correlation,
        );
    }
    video_phase(&dir)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Glass to glass at 640x480 and 30 fps with the test pattern and a tone, and what the video
/// costs on the wire at the default quality.
fn video_phase(dir: &Path) -> anyhow::Result<()> {
    const SECONDS: f64 = 10.0;
    let relay = RelayProcess::start(&sibling_binary("chinwag-relay"), &[])?;
    let run_dir = dir.join("video");
    std::fs::create_dir_all(&run_dir)?;
    let bot = sibling_binary("chinwag-bot");
    let json = run_dir.join("viewer.json");
    let mut viewer = Command::new(&bot)
        .args(["--server", &relay.url, "--room", "video", "--name", "Viewer", "--duration", "13"])
        .arg("--stats-json")
        .arg(&json)
        .spawn()?;
    std::thread::sleep(Duration::from_millis(700));
    let sender = Command::new(&bot)
        .args(["--server", &relay.url, "--room", "video", "--name", "Camera", "--send-audio", "tone:440"])
        .args(["--send-video", "pattern", "--video-size", "640x480", "--video-fps", "30"])
        .args(["--duration", &SECONDS.to_string()])
        .status()?;
    let viewed = viewer.wait()?;
    if !sender.success() || !viewed.success() {
        bail!("a bot failed: sender {sender}, viewer {viewed}");
    }
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let video = &stats["peers"][0]["video"];
    let frames = video["frames_received"].as_f64().unwrap_or(0.0);
    let bytes = video["bytes_received"].as_f64().unwrap_or(0.0);
    let fps = video["fps"].as_f64().unwrap_or(0.0);
    println!(
        "video 640x480 at 30 fps (test pattern, default quality): glass-to-glass p50 {:.1} ms, p95 {:.1} ms; {:.1} fps received; \
         {:.0} bytes/frame, {:.2} Mb/s",
        video["glass_to_glass_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        video["glass_to_glass_ms"]["p95"].as_f64().unwrap_or(f64::NAN),
        fps,
        bytes / frames.max(1.0),
        bytes / frames.max(1.0) * fps * 8.0 / 1e6,
    );
    Ok(())
}

/// Runs one call; returns the recording folder.
fn run_call(relay: &RelayProcess, dir: &Path, speech: &Path, frame_ms: u32) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let record = dir.join("rec");
    let bot = sibling_binary("chinwag-bot");
    let frame = frame_ms.to_string();
    let common = |name: &str, json: &Path| {
        let mut command = Command::new(&bot);
        command.args(["--server", &relay.url, "--room", "quality", "--name", name, "--frame-ms", &frame]);
        command.arg("--stats-json").arg(json);
        command
    };
    let mut listener = common("Listener", &dir.join("listener.json"))
        .arg("--record")
        .arg(&record)
        .args(["--duration", "13"])
        .spawn()
        .context("start the listening bot (build it with cargo build --release -p chinwag-bot)")?;
    std::thread::sleep(Duration::from_millis(700));
    let speaker = common("Speaker", &dir.join("speaker.json"))
        .arg("--send-audio")
        .arg(speech)
        .args(["--duration", "11"])
        .status()?;
    let heard = listener.wait()?;
    if !speaker.success() || !heard.success() {
        bail!("a bot failed: speaker {speaker}, listener {heard}");
    }
    Ok(record)
}
