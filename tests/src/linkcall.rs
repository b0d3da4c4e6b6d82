//! A measured call through link emulators: a bot speaking (speech from a WAV file, and
//! camera-like video if asked) to one or more listening bots that record it, each on the
//! link its test gives it. What a caller would notice is measured from the recordings, not
//! taken from the bots' own word: mouth-to-ear per 1 s piece of speech found in the
//! recording (against the speaker's capture clock), PESQ-WB, and what the link carried.
//!
//! Used by the link scenario tests (`crates/bot/tests/links.rs`) and by `real-links-bench`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::LinkEmulator;
use crate::audio::{best_lag, peer_stats, pesq_wb_48k, quantile, speech_report};

const RATE: f64 = 48_000.0;

/// One listening bot: its name, the URL it dials (a link emulator's, or the relay's), and the
/// emulator whose downlink it has, to measure what that carried.
pub struct Listener<'a> {
    pub name: &'a str,
    pub server: String,
    pub link: Option<&'a LinkEmulator>,
}

/// The call to make.
pub struct LinkCall<'a> {
    /// `chinwag-bot`.
    pub bot: PathBuf,
    /// The URL the speaker dials, and the emulator whose uplink it has.
    pub speaker_server: String,
    pub speaker_link: Option<&'a LinkEmulator>,
    pub listeners: Vec<Listener<'a>>,
    /// The speech the speaker sends, as a file and as samples.
    pub speech_path: &'a Path,
    pub speech: &'a [f32],
    /// A camera-like `.mjpeg` clip the speaker sends at 640×480 and 30 fps, or none.
    pub video: Option<&'a Path>,
    /// How long the speaker talks.
    pub seconds: f64,
    /// Mouth-to-ear is measured from speech captured this long after the speaker started,
    /// and link use over the same span.
    pub measure_from: Duration,
}

/// What one listener heard and saw.
#[derive(Debug, Clone)]
pub struct Heard {
    pub name: String,
    /// Mouth-to-ear from the recording, from `measure_from` on (p50, p95, pieces found).
    pub m2e_p50_ms: f64,
    pub m2e_p95_ms: f64,
    pub pieces: usize,
    /// Every piece found, from the start: (seconds into the speech, mouth-to-ear in ms).
    pub delays: Vec<(f64, f64)>,
    /// The listener's own report over the whole call (p50, p95).
    pub reported_p50_ms: f64,
    pub reported_p95_ms: f64,
    /// Milliseconds concealed over the whole call, as a share of the speech sent.
    pub speech_lost: f64,
    /// PESQ-WB of the whole recording, and of the speech from `measure_from` on.
    pub pesq_wb: f32,
    pub pesq_wb_late: f32,
    pub video_fps: f64,
    pub video_width: u64,
    pub video_height: u64,
    pub video_kbps: f64,
    /// The listener's downlink carried this many kilobits per second from `measure_from` on,
    /// when it had an emulator.
    pub link_kbps: Option<f64>,
    pub disconnects: u64,
}

/// What the call gave.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub heard: Vec<Heard>,
    /// The speaker's uplink carried this many kilobits per second from `measure_from` on,
    /// when it had an emulator.
    pub uplink_kbps: Option<f64>,
    pub speaker_disconnects: u64,
}

fn bot(binary: &Path, server: &str, name: &str, json: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--server", server, "--room", "links", "--name", name])
        .arg("--stats-json")
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Waits for a bot to exit; its log (with `RUST_LOG` set, whatever that asks for) is kept
/// beside its stats as `json` with the extension `log`.
fn wait(child: Child, what: &str, json: &Path) -> anyhow::Result<()> {
    let output = child.wait_with_output()?;
    std::fs::write(json.with_extension("log"), &output.stderr)?;
    if !output.status.success() {
        bail!("{what} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Bits per second delivered by one direction of `link` between two samples of it.
fn rate_kbps(before: (u64, Instant), after: (u64, Instant)) -> f64 {
    let seconds = after.1.saturating_duration_since(before.1).as_secs_f64().max(1e-3);
    after.0.saturating_sub(before.0) as f64 * 8.0 / seconds / 1000.0
}

/// Makes the call in `dir` (recordings and stats land there) and measures it.
pub fn run_link_call(dir: &Path, call: &LinkCall<'_>) -> anyhow::Result<CallOutcome> {
    std::fs::create_dir_all(dir)?;
    let mut listeners = Vec::new();
    for listener in &call.listeners {
        let json = dir.join(format!("{}.json", listener.name));
        let record = dir.join(format!("rec-{}", listener.name));
        let child = bot(&call.bot, &listener.server, listener.name, &json)
            .arg("--record")
            .arg(&record)
            .args(["--duration", &format!("{:.1}", call.seconds + 4.0)])
            .spawn()
            .context("start a listening bot")?;
        listeners.push((child, json, record));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let speaker_json = dir.join("speaker.json");
    let mut speaker = bot(&call.bot, &call.speaker_server, "Speaker", &speaker_json);
    speaker.arg("--send-audio").arg(call.speech_path).args(["--duration", &format!("{:.1}", call.seconds)]);
    if let Some(video) = call.video {
        speaker.arg("--send-video").arg(video).args(["--video-size", "640x480", "--video-fps", "30"]);
    }
    let started = Instant::now();
    let speaker = speaker.spawn().context("start the speaking bot")?;
    // Link use is sampled at `measure_from` and as the speaker stops.
    let sample = |link: Option<&LinkEmulator>, up: bool| {
        link.map(|link| {
            let (sent_up, sent_down) = link.delivered();
            (if up { sent_up } else { sent_down }, Instant::now())
        })
    };
    std::thread::sleep(call.measure_from);
    let up_before = sample(call.speaker_link, true);
    let downs_before: Vec<_> = call.listeners.iter().map(|l| sample(l.link, false)).collect();
    let end = started + Duration::from_secs_f64(call.seconds - 0.5);
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let up_after = sample(call.speaker_link, true);
    let downs_after: Vec<_> = call.listeners.iter().map(|l| sample(l.link, false)).collect();
    wait(speaker, "the speaking bot", &speaker_json)?;
    let mut heard = Vec::new();
    for (index, (child, json, record)) in listeners.into_iter().enumerate() {
        let name = call.listeners[index].name;
        wait(child, name, &json)?;
        let link_kbps = match (downs_before[index], downs_after[index]) {
            (Some(before), Some(after)) => Some(rate_kbps(before, after)),
            _ => None,
        };
        heard.push(measure(call, name, &speaker_json, &json, &record, link_kbps)?);
    }
    let uplink_kbps = match (up_before, up_after) {
        (Some(before), Some(after)) => Some(rate_kbps(before, after)),
        _ => None,
    };
    let speaker_stats = read_json(&speaker_json)?;
    Ok(CallOutcome {
        heard,
        uplink_kbps,
        speaker_disconnects: speaker_stats["disconnects"].as_u64().unwrap_or(0),
    })
}

fn measure(
    call: &LinkCall<'_>,
    name: &str,
    speaker_json: &Path,
    json: &Path,
    record: &Path,
    link_kbps: Option<f64>,
) -> anyhow::Result<Heard> {
    let sent_stats = read_json(speaker_json)?;
    let heard_stats = read_json(json)?;
    let recording = chinwag_capture::read_wav_48k_mono(&record.join("Speaker.wav"))
        .with_context(|| format!("{name} recorded nothing of the speaker"))?;
    let report = speech_report(call.speech, &recording, &sent_stats, &heard_stats, "Speaker")?;
    let peer = peer_stats(&heard_stats, "Speaker").context("the listener's stats do not list the speaker")?;
    let audio = &peer["audio"];
    let video = &peer["video"];
    let from = call.measure_from.as_secs_f64() * RATE;
    // A stall can move a piece far from where the whole file lines up, so the search reaches
    // 2 s either side.
    let delays = report.piece_delays(call.speech, &recording, 2 * RATE as usize);
    let measured: Vec<f64> =
        delays.iter().filter(|(at, _)| *at * RATE >= from).map(|(_, delay)| *delay).collect();
    // The speech from `measure_from` on, found again in the recording (its delay may have
    // changed since the start), for PESQ-WB after the link has settled.
    let late_sent = &call.speech[(from as usize).min(call.speech.len())..];
    let search_from = (report.lag + from as usize).saturating_sub(RATE as usize / 2).min(recording.len());
    let (late_lag, _) = best_lag(late_sent, &recording[search_from..], 5 * RATE as usize / 2);
    let late_start = (search_from + late_lag).min(recording.len());
    let late_heard = &recording[late_start..(late_start + late_sent.len()).min(recording.len())];
    let pesq_wb_late = pesq_wb_48k(&late_sent[..late_heard.len()], late_heard).unwrap_or(f32::NAN);
    let sent_ms = sent_stats["audio_frames_sent"].as_f64().unwrap_or(0.0) * 20.0;
    let frames = video["frames_received"].as_f64().unwrap_or(0.0);
    let fps = video["fps"].as_f64().unwrap_or(0.0);
    let video_seconds = if fps > 0.0 { frames / fps } else { 0.0 };
    let video_kbps = if video_seconds > 0.0 {
        video["bytes_received"].as_f64().unwrap_or(0.0) * 8.0 / video_seconds / 1000.0
    } else {
        0.0
    };
    Ok(Heard {
        name: name.to_owned(),
        m2e_p50_ms: quantile(&measured, 0.5),
        m2e_p95_ms: quantile(&measured, 0.95),
        pieces: measured.len(),
        delays,
        reported_p50_ms: report.reported_p50_ms,
        reported_p95_ms: report.reported_p95_ms,
        speech_lost: audio["concealed_ms"].as_f64().unwrap_or(0.0) / sent_ms.max(1.0),
        pesq_wb: report.pesq_wb,
        pesq_wb_late,
        video_fps: fps,
        video_width: video["width"].as_u64().unwrap_or(0),
        video_height: video["height"].as_u64().unwrap_or(0),
        video_kbps,
        link_kbps,
        disconnects: heard_stats["disconnects"].as_u64().unwrap_or(0),
    })
}
