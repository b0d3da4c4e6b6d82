//! `chinwag-bot`: a headless participant. It joins a room, sends a WAV file, a tone, silence
//! or what a real microphone hears, records what it plays out from each peer, answers as an
//! echo service, and writes its statistics as JSON. Glue only: the engine does the work.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chinwag_engine::{
    Call, CallConfig, CallEvent, CallStats, FrameDuration, InputSpec, OutputSpec, Percentiles,
    ProcessingConfig, TransportConfig, VideoInput, VideoSettings, VoiceConfig,
};
use clap::Parser;
use serde_json::json;

/// How long a bot waits for its call to finish (recordings written, the relay told) once its
/// time is up.
const LEAVE_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(name = "chinwag-bot", version, about = "A headless Chinwag participant.")]
struct Args {
    /// Relay address: host, host:port, ws://... or wss://...
    #[arg(long)]
    server: String,
    #[arg(long)]
    room: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    password: Option<String>,
    /// A join token (from `chinwag-relay token`), for relays that require one.
    #[arg(long)]
    token: Option<String>,
    /// Extra CA certificates (PEM) to trust for wss://.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// What to send: a WAV file (any rate and channels), tone:HZ, silence or none.
    #[arg(long, value_name = "PATH.wav|tone:HZ|silence|none", default_value = "none")]
    send_audio: String,
    /// Send from a real microphone instead: default or a device name.
    #[arg(long, value_name = "default|NAME")]
    input: Option<String>,
    /// Play to a real speaker: default, a device name, or none.
    #[arg(long, value_name = "default|NAME|none", default_value = "none")]
    output: String,
    /// Write DIR/<peer name>.wav for every peer: what was played out from them.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Leave after this many seconds (default: stay until killed).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Write statistics as JSON here on exit.
    #[arg(long, value_name = "PATH")]
    stats_json: Option<PathBuf>,
    /// Send back to the room what this bot hears.
    #[arg(long)]
    echo: bool,
    /// Opus frame duration in milliseconds.
    #[arg(long, default_value_t = 20, value_parser = clap::builder::ValueParser::new(frame_ms))]
    frame_ms: u32,
    /// Opus bitrate in bits per second.
    #[arg(long, default_value_t = 40_000)]
    bitrate: u32,
    /// What video to send: the test pattern, a camera (camera or camera:NAME), a camera-like
    /// clip (an .mjpeg file of JPEG frames, looped at --video-fps), or none.
    #[arg(long, value_name = "pattern|camera[:NAME]|FILE.mjpeg|none", default_value = "none")]
    send_video: String,
    /// Video size to send.
    #[arg(long, value_name = "WxH", default_value = "640x480", value_parser = clap::builder::ValueParser::new(video_size))]
    video_size: (u32, u32),
    /// Switch echo cancellation off (it runs on a real microphone's signal).
    #[arg(long)]
    no_aec: bool,
    /// Switch noise suppression off.
    #[arg(long)]
    no_ns: bool,
    /// Switch automatic gain control off.
    #[arg(long)]
    no_agc: bool,
    /// Video frames per second to send.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60))]
    video_fps: u32,
    /// The least delay the jitter buffer keeps, in milliseconds (default 10): more rides out
    /// a host's scheduling hiccups without a concealed frame, at that much more delay.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=250))]
    jitter_min: Option<u64>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = run(Args::parse()) {
        eprintln!("chinwag-bot: {error:#}");
        std::process::exit(1);
    }
}

fn input_spec(args: &Args) -> anyhow::Result<InputSpec> {
    if args.echo {
        return Ok(InputSpec::Echo);
    }
    if let Some(device) = &args.input {
        return Ok(InputSpec::Device((device != "default").then(|| device.clone())));
    }
    Ok(match args.send_audio.as_str() {
        "none" => InputSpec::None,
        "silence" => InputSpec::Silence,
        tone if tone.starts_with("tone:") => {
            let hz: f32 = tone[5..]
                .parse()
                .with_context(|| format!("--send-audio {tone}: the frequency is not a number"))?;
            if !(20.0..=20_000.0).contains(&hz) {
                bail!("--send-audio {tone}: the frequency must be from 20 to 20000 Hz");
            }
            InputSpec::Tone(hz)
        }
        path => InputSpec::Wav(PathBuf::from(path)),
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut transport = TransportConfig::new(&args.server, &args.room, &args.name);
    transport.password = args.password.clone();
    transport.token = args.token.clone();
    transport.ca_file = args.ca_file.clone();
    let mut config = CallConfig::new(transport);
    config.input = input_spec(&args)?;
    config.output = match args.output.as_str() {
        "none" => OutputSpec::None,
        "default" => OutputSpec::Device(None),
        name => OutputSpec::Device(Some(name.to_owned())),
    };
    config.record_dir = args.record.clone();
    if let Some(ms) = args.jitter_min {
        config.jitter.min_delay = Duration::from_millis(ms);
    }
    config.processing = ProcessingConfig {
        echo_cancellation: !args.no_aec,
        noise_suppression: !args.no_ns,
        gain_control: !args.no_agc,
    };
    config.video = VideoSettings {
        input: match args.send_video.as_str() {
            "none" => VideoInput::None,
            "pattern" => VideoInput::Pattern,
            "camera" => VideoInput::Camera(None),
            other => match other.strip_prefix("camera:") {
                Some(name) => VideoInput::Camera(Some(name.to_owned())),
                None if other.ends_with(".mjpeg") || other.ends_with(".mjpg") => {
                    let path = PathBuf::from(other);
                    if !path.is_file() {
                        bail!("--send-video {other}: no such file");
                    }
                    VideoInput::Clip(path)
                }
                None => bail!("--send-video {other}: use pattern, camera, camera:NAME, FILE.mjpeg or none"),
            },
        },
        width: args.video_size.0,
        height: args.video_size.1,
        fps: args.video_fps,
    };
    config.voice = VoiceConfig {
        frame: FrameDuration::from_millis(args.frame_ms).expect("the parser allows only 10 and 20"),
        bitrate_bps: args.bitrate,
        ..VoiceConfig::default()
    };
    if let Some(duration) = args.duration
        && !(duration.is_finite() && duration > 0.0)
    {
        bail!("--duration must be a positive number of seconds");
    }
    let call = Call::start(config)?;
    let deadline = args.duration.map(|seconds| Instant::now() + Duration::from_secs_f64(seconds));
    let mut joined = false;
    // Times the connection was lost and retried: a link test's disconnects.
    let mut disconnects = 0u64;
    loop {
        let wait =
            deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            break;
        }
        match call.events().recv_timeout(wait) {
            Ok(CallEvent::Failed(error)) => bail!("{error}"),
            Ok(CallEvent::Joined { id, room, peers, rejoined }) => {
                joined = true;
                let verb = if rejoined { "rejoined" } else { "joined" };
                eprintln!("chinwag-bot: {verb} room \"{room}\" as {id} with {} others", peers.len());
            }
            Ok(CallEvent::Reconnecting { error, retry_in }) => {
                disconnects += 1;
                eprintln!("chinwag-bot: {error}; retrying in {:.1} s", retry_in.as_secs_f64());
            }
            Ok(CallEvent::VideoStopped { error }) => {
                eprintln!("chinwag-bot: {error}; sending no video");
            }
            Ok(CallEvent::DeviceProblem { error, fallback }) => {
                eprintln!("chinwag-bot: {error}; going on with {fallback}");
            }
            Ok(CallEvent::DeviceChanged { direction, name }) => {
                eprintln!("chinwag-bot: the default {direction} device is now \"{name}\"; following it");
            }
            Ok(_) => {}
            Err(crossbeam_timeout) if crossbeam_timeout.is_timeout() => {}
            Err(_) => break,
        }
    }
    // Recordings are finished and the relay told within a moment; a call that cannot finish
    // (a stuck device or network) never keeps the bot from exiting on time.
    if !call.leave(LEAVE_WITHIN) {
        eprintln!("chinwag-bot: the call did not finish within {LEAVE_WITHIN:?}; exiting anyway");
    }
    if !joined {
        bail!(
            "the relay at {} did not answer within the --duration of {} s",
            args.server,
            args.duration.unwrap_or_default()
        );
    }
    let stats = call.stats();
    if let Some(path) = &args.stats_json {
        let text = serde_json::to_string_pretty(&stats_json(&stats, disconnects))
            .expect("JSON of numbers and strings");
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn percentiles(p: Percentiles) -> serde_json::Value {
    json!({ "p50": p.p50, "p95": p.p95, "count": p.count })
}

fn stats_json(stats: &CallStats, disconnects: u64) -> serde_json::Value {
    let peers: Vec<_> = stats
        .peers
        .iter()
        .map(|peer| {
            json!({
                "id": peer.id.0,
                "name": peer.name,
                "present": peer.present,
                "audio": {
                    "packets_received": peer.packets_received,
                    "packets_lost": peer.packets_lost,
                    "packets_late": peer.packets_late,
                    "concealed_ms": peer.concealed_ms,
                    "frames_dropped": peer.frames_dropped,
                    "accelerated_ms": peer.accelerated_ms,
                    "fec_recovered": peer.fec_recovered,
                    "record_start_unix_us": peer.record_start_unix_us,
                    "jitter_buffer_ms": percentiles(peer.jitter_buffer_ms.percentiles()),
                    "jitter_target_ms": peer.jitter_target_ms,
                    "mouth_to_ear_ms": percentiles(peer.mouth_to_ear_ms.percentiles()),
                },
                "video": {
                    "frames_received": peer.video_frames_received,
                    "fps": peer.video_fps(),
                    "width": peer.video_width,
                    "height": peer.video_height,
                    "bytes_received": peer.video_bytes_received,
                    "decode_errors": peer.video_decode_errors,
                    "glass_to_glass_ms": percentiles(peer.glass_to_glass_ms.percentiles()),
                },
            })
        })
        .collect();
    json!({
        "id": stats.id.map(|id| id.0),
        "room": stats.room,
        "audio_send_start_unix_us": stats.audio_send_start_unix_us,
        "audio_frames_sent": stats.audio_frames_sent,
        "video_frames_sent": stats.video_frames_sent,
        "video_bytes_sent": stats.video_bytes_sent,
        "rtt_ms": percentiles(stats.rtt_ms.percentiles()),
        "disconnects": disconnects,
        "peers": peers,
    })
}

fn frame_ms(text: &str) -> Result<u32, String> {
    match text {
        "10" => Ok(10),
        "20" => Ok(20),
        _ => Err("Opus frames here are 10 or 20 ms".into()),
    }
}

fn video_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.split_once(['x', 'X']).ok_or("expected WIDTHxHEIGHT, like 640x480")?;
    let parse = |v: &str| v.trim().parse::<u32>().map_err(|_| format!("{v:?} is not a whole number"));
    let (w, h) = (parse(w)?, parse(h)?);
    if !(16..=1920).contains(&w) || !(16..=1080).contains(&h) {
        return Err("the size must be between 16x16 and 1920x1080".into());
    }
    Ok((w, h))
}
