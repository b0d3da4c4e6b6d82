//! A bot-to-bot call on a quiet machine and on a loaded one, in one run.
//!
//! The call is the one `call-quality-bench` makes: `chinwag-relay`, a bot sending espeak-ng
//! speech from a WAV file and a bot recording it, no devices, 20 ms frames. Per condition it
//! reports mouth-to-ear p50 / p95 as the listener reports it and as measured from its
//! recording (1 s pieces of speech found in the recording, against the sender's capture
//! clock), PESQ-WB of the recording, the milliseconds the listener concealed, the frames it
//! gave up as too late (`packets_late`), and the load average.
//!
//! The load recipe, all started before the call and kept up until it ends:
//!
//! 1. **A parallel Rust build**: a scratch crate depending on `serde` (derive), `serde_json`,
//!    `regex`, `syn` (full), `clap` (derive) and `rayon`, built with
//!    `cargo build --offline --release -j 4` (`--build-jobs`) from the local registry cache, with
//!    the workspace's `Cargo.lock` and a scratch target folder that is deleted before every
//!    build, in a loop.
//! 2. **Software rendering**: two `glxgears` windows of 800x600 (`--gl-windows`) under a private
//!    Xvfb, drawing as fast as they can with Mesa's llvmpipe (`LIBGL_ALWAYS_SOFTWARE=1`,
//!    `vblank_mode=0`): what two GL app windows cost without a GPU.
//! 3. **Two more calls with video** (`--video-calls`) on the same relay, each of two bots
//!    sending a 440 Hz tone and the test pattern at 640x480 and 30 fps both ways.
//!
//! The 1-minute load average follows the run queue with a one-minute time constant, so the load
//! runs `--warmup` seconds (default 60) before the call starts. On the 2-core development
//! machine this recipe keeps about 20 tasks runnable and the load average passes 6 within about
//! 30 s of warm-up and reaches 12–17 during the call (goal: at least 6; 2026-12-02, with
//! another engineer's build adding 2–4); `--build-jobs`, `--gl-windows` and `--video-calls`
//! lower it. The table also gives the mean run-queue length sampled during the call
//! ("running"), which is what the load average converges to. The scratch build takes longer
//! than a call under this load, so usually none finishes: it is the compiling that loads.
//!
//! ```text
//! apt-get install -y espeak-ng xvfb mesa-utils
//! cargo build --release -p chinwag-relay -p chinwag-bot -p chinwag-e2e
//! target/release/loaded_call_bench --seconds 30
//! ```

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chinwag_e2e::audio::{peer_stats, quantile, speech_of_length, speech_report, write_wav_48k_mono};
use chinwag_e2e::display::Xvfb;
use chinwag_e2e::{RelayProcess, sibling_binary};
use clap::Parser;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A call should sound as clear as this, \
                    with no delay that anyone can notice, from the first word to the last.";
const RATE: f64 = 48_000.0;

#[derive(Debug, Parser)]
#[command(about = "A bot-to-bot call on a quiet machine and on a loaded one.")]
struct Args {
    /// Seconds of speech per call.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Only the quiet machine.
    #[arg(long, conflicts_with = "loaded_only")]
    quiet_only: bool,
    /// Only the loaded machine.
    #[arg(long)]
    loaded_only: bool,
    /// Seconds the load runs before the call starts, so that the load average climbs.
    #[arg(long, default_value_t = 60.0)]
    warmup: f64,
    /// Parallel jobs of the looping Rust build.
    #[arg(long, default_value_t = 4)]
    build_jobs: u32,
    /// glxgears windows rendering with llvmpipe.
    #[arg(long, default_value_t = 2)]
    gl_windows: u32,
    /// Other bot-to-bot calls with video on the same relay.
    #[arg(long, default_value_t = 2)]
    video_calls: u32,
    /// Keep the working folder (recordings, stats, build logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// What one condition measured.
#[derive(Debug)]
struct Outcome {
    condition: &'static str,
    reported_p50: f64,
    reported_p95: f64,
    measured_p50: f64,
    measured_p95: f64,
    pesq_wb: f32,
    concealed_ms: u64,
    packets_late: u64,
    load: LoadSummary,
}

#[derive(Debug, Default, Clone, Copy)]
struct LoadSummary {
    /// The highest 1-minute load average seen during the call, and its value at the end.
    max_load1: f64,
    end_load1: f64,
    /// The mean number of runnable tasks sampled during the call.
    mean_running: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("chinwag-loaded-call-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let speech = speech_of_length(&dir, TEXT, args.seconds)?;
    let speech_path = dir.join("speech-48k.wav");
    write_wav_48k_mono(&speech_path, &speech)?;
    println!("speech: {:.1} s from espeak-ng; {} cores", speech.len() as f64 / RATE, cores());

    let mut outcomes = Vec::new();
    if !args.loaded_only {
        let relay = RelayProcess::start(&sibling_binary("chinwag-relay"), &[])?;
        println!("quiet: load average {:.2} before the call", read_loadavg()?.0);
        outcomes.push(call(
            &relay,
            &dir.join("quiet"),
            &speech,
            &speech_path,
            args.seconds,
            "quiet machine",
        )?);
    }
    if !args.quiet_only {
        let relay = RelayProcess::start(&sibling_binary("chinwag-relay"), &[])?;
        let load = Load::start(&dir.join("load"), &relay, &args)?;
        let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup);
        while Instant::now() < warmup_end {
            std::thread::sleep(
                Duration::from_secs(10).min(warmup_end.saturating_duration_since(Instant::now())),
            );
            let (load1, running) = read_loadavg()?;
            println!(
                "loaded: warming up, load average {load1:.2}, {running} running, {} builds finished",
                load.builds_finished()
            );
        }
        let outcome =
            call(&relay, &dir.join("loaded"), &speech, &speech_path, args.seconds, "loaded machine");
        let builds = load.builds_finished();
        load.stop();
        println!("loaded: {builds} scratch builds finished during the warm-up and the call");
        outcomes.push(outcome?);
    }
    print_table(&outcomes, &args);
    if args.keep {
        println!("working folder kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The 1-minute load average and the number of runnable tasks, from `/proc/loadavg`.
fn read_loadavg() -> anyhow::Result<(f64, u32)> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    let load1 = fields.first().context("empty /proc/loadavg")?.parse()?;
    let running = fields.get(3).and_then(|f| f.split('/').next()).context("no running/total")?.parse()?;
    Ok((load1, running))
}

/// Samples `/proc/loadavg` every 500 ms until stopped.
struct LoadSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, u32)>>,
}

impl LoadSampler {
    fn start() -> LoadSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(sample) = read_loadavg() {
                    samples.push(sample);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            samples
        });
        LoadSampler { stop, thread }
    }

    fn finish(self) -> LoadSummary {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        if samples.is_empty() {
            return LoadSummary::default();
        }
        // The runnable count includes this sampler itself; leave it out.
        let running: Vec<f64> = samples.iter().map(|(_, r)| f64::from(r.saturating_sub(1))).collect();
        LoadSummary {
            max_load1: samples.iter().map(|(l, _)| *l).fold(0.0, f64::max),
            end_load1: samples.last().map_or(0.0, |(l, _)| *l),
            mean_running: running.iter().sum::<f64>() / running.len() as f64,
        }
    }
}

/// One measured call on `relay`.
fn call(
    relay: &RelayProcess,
    dir: &Path,
    speech: &[f32],
    speech_path: &Path,
    seconds: f64,
    condition: &'static str,
) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(dir)?;
    let record = dir.join("rec");
    let bot = |name: &str, json: &Path| {
        let mut command = Command::new(sibling_binary("chinwag-bot"));
        command.args(["--server", &relay.url, "--room", "measured", "--name", name]);
        command.arg("--stats-json").arg(json);
        command
    };
    let sampler = LoadSampler::start();
    let mut listener = bot("Listener", &dir.join("listener.json"))
        .arg("--record")
        .arg(&record)
        .args(["--duration", &format!("{:.1}", seconds + 4.0)])
        .spawn()
        .context("start the listening bot (cargo build --release -p chinwag-bot)")?;
    std::thread::sleep(Duration::from_millis(1000));
    let talker = bot("Speaker", &dir.join("speaker.json"))
        .arg("--send-audio")
        .arg(speech_path)
        .args(["--duration", &format!("{:.1}", seconds + 1.0)])
        .status()?;
    let heard = listener.wait()?;
    let load = sampler.finish();
    if !talker.success() || !heard.success() {
        bail!("a bot failed: talker {talker}, listener {heard}");
    }
    let sent_stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("speaker.json"))?)?;
    let heard_stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("listener.json"))?)?;
    let recording = chinwag_capture::read_wav_48k_mono(&record.join("Speaker.wav"))?;
    let report = speech_report(speech, &recording, &sent_stats, &heard_stats, "Speaker")?;
    let audio = peer_stats(&heard_stats, "Speaker")
        .map(|peer| peer["audio"].clone())
        .context("the listener's stats do not list the speaker")?;
    let delays: Vec<f64> = report
        .piece_delays(speech, &recording, (0.4 * RATE) as usize)
        .into_iter()
        .map(|(_, delay)| delay)
        .collect();
    let outcome = Outcome {
        condition,
        reported_p50: report.reported_p50_ms,
        reported_p95: report.reported_p95_ms,
        measured_p50: quantile(&delays, 0.5),
        measured_p95: quantile(&delays, 0.95),
        pesq_wb: report.pesq_wb,
        concealed_ms: audio["concealed_ms"].as_u64().unwrap_or(0),
        packets_late: audio["packets_late"].as_u64().unwrap_or(0),
        load,
    };
    println!(
        "{condition}: mouth-to-ear reported p50 {:.1} / p95 {:.1} ms, from the recording p50 {:.1} / p95 {:.1} ms \
         ({} pieces, first word {:.1} ms); PESQ-WB {:.3}; concealed {} ms; given up {}; jitter buffer p50 {:.1} ms; \
         load average max {:.2}, mean running {:.1}",
        outcome.reported_p50,
        outcome.reported_p95,
        outcome.measured_p50,
        outcome.measured_p95,
        delays.len(),
        report.measured_ms,
        outcome.pesq_wb,
        outcome.concealed_ms,
        outcome.packets_late,
        audio["jitter_buffer_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        load.max_load1,
        load.mean_running,
    );
    Ok(outcome)
}

/// Everything that loads the machine; stopped (and every process it started ended) by `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    builder: Option<std::thread::JoinHandle<()>>,
    builds: Arc<std::sync::atomic::AtomicU32>,
    children: Vec<Child>,
    _xvfb: Option<Xvfb>,
}

impl Load {
    fn start(dir: &Path, relay: &RelayProcess, args: &Args) -> anyhow::Result<Load> {
        std::fs::create_dir_all(dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let builds = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut load = Load {
            stop: Arc::clone(&stop),
            builder: None,
            builds: Arc::clone(&builds),
            children: Vec::new(),
            _xvfb: None,
        };

        // Two (or more) calls with video, both ways, on the measured call's relay.
        let lifetime = format!("{:.0}", args.warmup + args.seconds + 60.0);
        for call in 0..args.video_calls {
            for name in ["Left", "Right"] {
                let child = Command::new(sibling_binary("chinwag-bot"))
                    .args(["--server", &relay.url, "--room", &format!("video-{call}"), "--name", name])
                    .args(["--send-audio", "tone:440", "--send-video", "pattern", "--video-size", "640x480"])
                    .args(["--video-fps", "30", "--duration", &lifetime])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("start a video bot")?;
                load.children.push(child);
            }
        }

        // GL windows rendering in software.
        if args.gl_windows > 0 {
            let xvfb = Xvfb::start(1920, 1080)?;
            for window in 0..args.gl_windows {
                // Under `timeout`, so that it cannot outlive this program.
                let child = Command::new("timeout")
                    .args([
                        lifetime.as_str(),
                        "glxgears",
                        "-geometry",
                        &format!("800x600+{}+0", window * 820),
                    ])
                    .env("DISPLAY", &xvfb.display)
                    .env("LIBGL_ALWAYS_SOFTWARE", "1")
                    .env("GALLIUM_DRIVER", "llvmpipe")
                    .env("vblank_mode", "0")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start glxgears (apt-get install mesa-utils)")?;
                load.children.push(child);
            }
            load._xvfb = Some(xvfb);
        }

        // The Rust build, looping.
        if args.build_jobs > 0 {
            let scratch = dir.join("scratch-crate");
            write_scratch_crate(&scratch)?;
            let jobs = args.build_jobs.to_string();
            load.builder = Some(std::thread::spawn(move || {
                let target = scratch.join("target");
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_dir_all(&target);
                    let log = std::fs::File::create(scratch.join("build.log")).ok();
                    let mut command = Command::new("cargo");
                    command
                        .args(["build", "--offline", "--release", "-j", &jobs])
                        .current_dir(&scratch)
                        .env("CARGO_TARGET_DIR", &target)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        // Its own process group, so that stopping ends its rustc processes too.
                        .process_group(0);
                    if let Some(log) = log {
                        command.stderr(log);
                    }
                    let Ok(mut child) = command.spawn() else {
                        eprintln!("loaded-call-bench: cannot run cargo; the build load is left out");
                        return;
                    };
                    let outcome = loop {
                        if stop.load(Ordering::Relaxed) {
                            end_process_group(&mut child);
                            break child.wait();
                        }
                        match child.try_wait() {
                            Ok(Some(status)) => break Ok(status),
                            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                            Err(error) => break Err(error),
                        }
                    };
                    match outcome {
                        Ok(status) if status.success() => {
                            builds.fetch_add(1, Ordering::Relaxed);
                        }
                        _ if stop.load(Ordering::Relaxed) => {}
                        other => {
                            eprintln!(
                                "loaded-call-bench: the scratch build failed ({other:?}); see {}; the build load is left out",
                                scratch.join("build.log").display()
                            );
                            return;
                        }
                    }
                }
            }));
        }
        Ok(load)
    }

    fn builds_finished(&self) -> u32 {
        self.builds.load(Ordering::Relaxed)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(builder) = self.builder.take() {
            let _ = builder.join();
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Ends `child`, which leads its own process group, and everything in that group (cargo and
/// its rustc processes): SIGTERM, then SIGKILL if it is still there after 5 s.
fn end_process_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    for signal in ["-TERM", "-KILL"] {
        let _ = Command::new("kill").args([signal, "--", &group]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A crate that only depends on widely used crates the workspace already has in its lock
/// file, so that it builds offline from the local registry cache.
fn write_scratch_crate(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"chinwag-load-scratch\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nserde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\nregex = \"1\"\n\
         syn = { version = \"2\", features = [\"full\", \"extra-traits\", \"visit\", \"fold\"] }\n\
         clap = { version = \"4\", features = [\"derive\"] }\nrayon = \"1\"\n\n\
         [workspace]\n",
    )?;
    std::fs::write(
        dir.join("src/lib.rs"),
        "//! Something to compile.\n\
         #[derive(serde::Serialize, serde::Deserialize, clap::Parser, Debug)]\n\
         pub struct Args { #[arg(long)] pub name: String }\n\
         pub fn work(text: &str) -> usize {\n\
         \x20   use rayon::prelude::*;\n\
         \x20   let re = regex::Regex::new(r\"\\w+\").expect(\"valid\");\n\
         \x20   let file: syn::File = syn::parse_str(text).unwrap_or_else(|_| syn::parse_quote!());\n\
         \x20   let json = serde_json::to_string(&file.items.len()).expect(\"a number\");\n\
         \x20   re.find_iter(text).collect::<Vec<_>>().par_iter().count() + json.len()\n\
         }\n",
    )?;
    // The workspace's lock file pins versions that are in the local registry cache.
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    if lock.exists() {
        std::fs::copy(&lock, dir.join("Cargo.lock"))?;
    }
    Ok(())
}

fn print_table(outcomes: &[Outcome], args: &Args) {
    println!();
    println!(
        "| condition | mouth-to-ear reported p50 / p95 | from the recording p50 / p95 | PESQ-WB | concealed | given up (late) | load average max / at end | running (mean) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for o in outcomes {
        println!(
            "| {} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.3} | {} ms | {} | {:.2} / {:.2} | {:.1} |",
            o.condition,
            o.reported_p50,
            o.reported_p95,
            o.measured_p50,
            o.measured_p95,
            o.pesq_wb,
            o.concealed_ms,
            o.packets_late,
            o.load.max_load1,
            o.load.end_load1,
            o.load.mean_running,
        );
    }
    println!(
        "\n{:.0} s of speech per call, 20 ms frames, {} cores. Load: cargo build -j {} (looping), {} glxgears window(s) on llvmpipe, \
         {} other call(s) with 640x480 30 fps video both ways on the same relay; {:.0} s of warm-up.",
        args.seconds,
        cores(),
        args.build_jobs,
        args.gl_windows,
        args.video_calls,
        args.warmup
    );
}
