//! Voice and video through home-like links, measured from recordings, with a clean baseline
//! in the same run.
//!
//! Each row is one call through `chinwag-relay` on loopback: a bot sends espeak-ng speech and
//! a camera-like clip (made in code: textured, moving; 37.6 kB a frame at 640×480 and quality
//! 75) at 640×480 and 30 fps; one bot records it (two for the downlink rows: one behind the
//! capped link, one direct). Links are the project's userspace emulator (`chinwag_e2e::link`):
//! a rate cap, a bottleneck queue of 200 ms (shallow) or 2 s (deep, bufferbloat) at the cap,
//! delay and jitter. Mouth-to-ear is measured per 1 s piece of speech found in the recording,
//! from `--measure-from` seconds (default 8) after the cap starts; speech lost is the time
//! the listener concealed over the whole call as a share of the speech sent; PESQ-WB is of the
//! speech from `--measure-from` on (of the whole recording in brackets); video is what the listener received; link use is what the capped
//! direction carried from `--measure-from` on, against the cap.
//!
//! ```text
//! apt-get install -y espeak-ng
//! cargo build --release -p chinwag-relay -p chinwag-bot -p chinwag-e2e
//! target/release/real-links-bench            # all rows, about 10 minutes
//! target/release/real-links-bench --only up  # rows whose name contains "up"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chinwag_e2e::audio::{quantile, speech_of_length, write_wav_48k_mono};
use chinwag_e2e::clip::write_camera_like_clip;
use chinwag_e2e::linkcall::{CallOutcome, LinkCall, Listener, run_link_call};
use chinwag_e2e::{Direction, LinkConfig, LinkEmulator, RelayProcess, sibling_binary};
use clap::Parser;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A call should sound as clear as this, \
                    whatever else the link carries, and arrive on time.";
const MS: Duration = Duration::from_millis(1);
const SHALLOW: Duration = Duration::from_millis(200);
const DEEP: Duration = Duration::from_millis(2000);

#[derive(Parser)]
struct Args {
    /// How long each call talks, in seconds.
    #[arg(long, default_value_t = 24.0)]
    seconds: f64,
    /// Mouth-to-ear and link use are measured from this many seconds after the cap starts.
    #[arg(long, default_value_t = 8.0)]
    measure_from: f64,
    /// Only the rows whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Where recordings and stats go (kept).
    #[arg(long, default_value = "target/real-links-bench")]
    dir: PathBuf,
}

/// Where the link is.
#[derive(Clone, Copy)]
enum Place {
    /// The speaker's uplink.
    Up,
    /// A receiver's downlink, with a second receiver direct.
    Down,
}

struct Row {
    name: String,
    place: Place,
    direction: Direction,
    /// The cap to judge link use against, in kb/s.
    cap_kbps: Option<f64>,
    seconds_extra: f64,
}

fn rows() -> Vec<Row> {
    let mut rows = vec![Row {
        name: "clean (baseline)".into(),
        place: Place::Up,
        direction: Direction::clean(),
        cap_kbps: None,
        seconds_extra: 0.0,
    }];
    for place in [Place::Up, Place::Down] {
        for (queue, queue_name) in [(SHALLOW, "shallow"), (DEEP, "deep")] {
            for kbps in [4000.0, 2000.0, 1000.0, 500.0] {
                let where_ = match place {
                    Place::Up => "up",
                    Place::Down => "down",
                };
                rows.push(Row {
                    name: format!("{where_} {} Mb/s, {queue_name}", kbps / 1000.0),
                    place,
                    direction: Direction::capped(kbps * 1000.0, queue),
                    cap_kbps: Some(kbps),
                    seconds_extra: 0.0,
                });
            }
        }
    }
    rows.push(Row {
        name: "up 4 -> 0.5 -> 4 Mb/s, shallow".into(),
        place: Place::Up,
        direction: Direction::capped(4_000_000.0, SHALLOW)
            .with_cap_from(Duration::from_secs(12), Some(500_000.0))
            .with_cap_from(Duration::from_secs(24), Some(4_000_000.0)),
        cap_kbps: None,
        seconds_extra: 12.0,
    });
    rows.push(Row {
        name: "40 ms each way, 0-20 ms jitter".into(),
        place: Place::Up,
        direction: Direction::clean().with_delay(40 * MS, 20 * MS),
        cap_kbps: None,
        seconds_extra: 0.0,
    });
    rows
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let longest = args.seconds + 12.0;
    let speech = speech_of_length(&dir, TEXT, longest - 1.0).context("espeak-ng makes the speech")?;
    let speech_path = dir.join("speech-long.wav");
    write_wav_48k_mono(&speech_path, &speech)?;
    let clip = dir.join("camera.mjpeg");
    write_camera_like_clip(&clip, 640, 480, 60)?;
    let relay = RelayProcess::start(&sibling_binary("chinwag-relay"), &[])
        .context("start the relay (cargo build --release -p chinwag-relay)")?;
    println!(
        "# real-links-bench, {} s calls, measured from {} s, {}",
        args.seconds,
        args.measure_from,
        std::process::Command::new("date")
            .arg("-u")
            .output()
            .map_or_else(|_| String::new(), |out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    );
    println!();
    println!(
        "| link | mouth-to-ear p50 / p95 (ms) | speech lost | PESQ-WB | video received (fps, size, kb/s) | \
         link use | other receiver's video | disconnects |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut baseline: Option<f64> = None;
    for (index, row) in rows().into_iter().enumerate() {
        if args.only.as_deref().is_some_and(|only| !row.name.contains(only)) {
            continue;
        }
        let seconds = args.seconds + row.seconds_extra;
        let call_dir = dir.join(format!("row-{index}"));
        match run_row(&relay, &row, &call_dir, &speech_path, &speech, &clip, seconds, args.measure_from) {
            Ok(outcome) => {
                print_row(&row, &outcome, &mut baseline);
                let series: Vec<String> = outcome.heard[0]
                    .delays
                    .iter()
                    .map(|(at, delay)| format!("{at:.0}s {delay:.0}"))
                    .collect();
                eprintln!("{}: mouth-to-ear by piece of speech (ms): {}", row.name, series.join(", "));
                if row.seconds_extra > 0.0 {
                    print_recovery(&outcome, baseline);
                }
            }
            Err(error) => println!("| {} | failed: {error:#} | | | | | | |", row.name),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_row(
    relay: &RelayProcess,
    row: &Row,
    dir: &Path,
    speech_path: &Path,
    speech: &[f32],
    clip: &Path,
    seconds: f64,
    measure_from: f64,
) -> anyhow::Result<CallOutcome> {
    let clean = Direction::clean();
    let config = match row.place {
        Place::Up => LinkConfig { up: row.direction.clone(), down: clean, seed: 7 },
        Place::Down => LinkConfig { up: clean, down: row.direction.clone(), seed: 7 },
    };
    let link = LinkEmulator::start(relay.addr, config)?;
    let (speaker_server, speaker_link, listeners) = match row.place {
        Place::Up => (
            link.url(),
            Some(&link),
            vec![Listener { name: "Listener", server: relay.url.clone(), link: None }],
        ),
        Place::Down => (
            relay.url.clone(),
            None,
            vec![
                Listener { name: "Listener", server: link.url(), link: Some(&link) },
                Listener { name: "Other", server: relay.url.clone(), link: None },
            ],
        ),
    };
    // The speaker's cap starts when it connects; a receiver's link is up a second before.
    let measure_from = Duration::from_secs_f64(measure_from);
    run_link_call(
        dir,
        &LinkCall {
            bot: sibling_binary("chinwag-bot"),
            speaker_server,
            speaker_link,
            listeners,
            speech_path,
            speech: &speech[..((seconds - 1.0) * 48_000.0) as usize],
            video: Some(clip),
            seconds,
            measure_from,
        },
    )
}

fn print_row(row: &Row, outcome: &CallOutcome, baseline: &mut Option<f64>) {
    let heard = &outcome.heard[0];
    if baseline.is_none() {
        *baseline = Some(heard.m2e_p50_ms);
    }
    let link = match row.place {
        Place::Up => outcome.uplink_kbps,
        Place::Down => heard.link_kbps,
    };
    let link_use = match (link, row.cap_kbps) {
        (Some(kbps), Some(cap)) => format!("{:.0} kb/s ({:.0} %)", kbps, kbps / cap * 100.0),
        (Some(kbps), None) => format!("{kbps:.0} kb/s"),
        _ => "-".into(),
    };
    let other = outcome.heard.get(1).map_or_else(
        || "-".into(),
        |other| format!("{:.1} fps, {:.0} kb/s", other.video_fps, other.video_kbps),
    );
    let disconnects = outcome.speaker_disconnects + outcome.heard.iter().map(|h| h.disconnects).sum::<u64>();
    println!(
        "| {} | {:.0} / {:.0} | {:.1} % | {:.2} ({:.2}) | {:.1}, {}x{}, {:.0} | {} | {} | {} |",
        row.name,
        heard.m2e_p50_ms,
        heard.m2e_p95_ms,
        heard.speech_lost * 100.0,
        heard.pesq_wb_late,
        heard.pesq_wb,
        heard.video_fps,
        heard.video_width,
        heard.video_height,
        heard.video_kbps,
        link_use,
        other,
        disconnects,
    );
}

/// For the schedule row: mouth-to-ear before and after the cap lifts. The emulator's clock
/// starts a second before the speaker's, so its 24 s is about 23 s into the speech.
fn print_recovery(outcome: &CallOutcome, baseline: Option<f64>) {
    let heard = &outcome.heard[0];
    let window = |from: f64, to: f64| {
        let delays: Vec<f64> =
            heard.delays.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, d)| *d).collect();
        quantile(&delays, 0.95)
    };
    println!(
        "|   (0.5 Mb/s from 11 s of speech: p95 over 19-23 s {:.0} ms; 4 Mb/s again from 23 s: p95 over \
         23-28 s {:.0} ms, 28-33 s {:.0} ms; baseline p50 {:.0} ms) | | | | | | | |",
        window(19.0, 23.0),
        window(23.0, 28.0),
        window(28.0, 33.0),
        baseline.unwrap_or(f64::NAN),
    );
}
