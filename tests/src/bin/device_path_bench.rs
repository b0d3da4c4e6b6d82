//! Mouth-to-ear delay and speech quality through real audio devices: Chinwag against Mumble
//! 1.3.4 in the same run and the same harness.
//!
//! Each system gets, per run, a private PulseAudio server whose devices are null sinks: `bus`,
//! stereo, and two mono sinks remapped onto its channels, `mic` onto the left and `spk` onto
//! the right; and `dump`, where nobody listens. The talker's microphone is `mic.monitor`; the
//! listener plays to `spk`. The harness plays espeak-ng speech into `mic` with `pacat` and
//! records `bus.monitor` with `parec`: the left channel is what went into the microphone, the
//! right what the listener played, sample for sample on one clock, so the delay of each 1 s
//! piece of speech is the distance between the two channels, whatever the players' and
//! recorder's own start-up took. (Silence is played into `mic` and `spk` all along: an idle
//! sink renders nothing and its monitor would deliver no samples at all.)
//!
//! - **PulseAudio loop**: before each system's call and on its PulseAudio server,
//!   `module-loopback` from `mic.monitor` to `spk` with a 20 ms target latency (10 ms each way,
//!   what Chinwag asks cpal for): what capturing and playing through PulseAudio costs with no
//!   call at all. "Corrected" delays subtract this loop's p50. (A `parec | pacat` pipe was
//!   tried first: the pipe keeps whatever backlog built up while `pacat` connected, 40–60 ms
//!   that changed from run to run.)
//! - **Chinwag**: `chinwag-relay`, a listening `chinwag-bot --output default` (PULSE_SINK=spk)
//!   and a talking `chinwag-bot --input default` (PULSE_SOURCE=mic.monitor), through cpal and
//!   ALSA's pulse plugin. Voice processing stays at the bot's defaults (on) unless
//!   `--no-processing`, as Mumble's speex preprocessor (gain and noise suppression) is always on.
//! - **Mumble**: Debian's `mumble-server` (murmurd) on a private port and `mumble` 1.3.4 clients
//!   under a private Xvfb, configured by a pre-written `Mumble.conf` in a temporary HOME: no audio
//!   or certificate wizard (`lastupdate=2`, and a client certificate where Mumble looks for its
//!   automatic backup), PulseAudio in and out on the sinks above, continuous transmission, Opus
//!   at 40 kb/s in 20 ms packets, jitter buffer and output delay at their defaults, the listener
//!   muted, no text-to-speech, no update or plugin check; murmurd's self-signed certificate is
//!   stored as accepted in each client's database.
//!
//! Mumble resolves its server's SRV record with its own DNS client, which would send a query to
//! the machine's resolver even for `127.0.0.1`. So this program re-runs itself inside a private
//! network namespace (`unshare --net`, needs root) where only loopback exists; where that is not
//! possible it runs the Chinwag side and the loop only (`--no-netns` forces that).
//!
//! Per system: mouth-to-ear p50 over 1 s pieces of speech (all runs), raw and corrected,
//! PESQ-WB of the whole recording and the mean over 5 s windows after the first 2 s (steady
//! state), the talker's and listener's CPU over the speech (per cent of one core), and for
//! Chinwag the bots' stderr lines about device trouble (containing "device" or "stopped").
//!
//! ```text
//! apt-get install -y mumble mumble-server pulseaudio pulseaudio-utils libasound2-plugins \
//!     espeak-ng xvfb openssl sqlite3
//! cargo build --release -p chinwag-relay -p chinwag-bot -p chinwag-e2e
//! target/release/device_path_bench --runs 3 --seconds 20
//! ```

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chinwag_e2e::audio::{
    PulseServer, best_lag, find_piece, pesq_wb_48k, piece_positions, quantile, speech_of_length,
    write_wav_48k_mono,
};
use chinwag_e2e::display::Xvfb;
use chinwag_e2e::process_cpu_time;
use chinwag_e2e::{RelayProcess, sibling_binary};
use clap::Parser;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. A call should sound as clear as this, \
                    with no delay that anyone can notice, from the first word to the last.";
const RATE: f64 = 48_000.0;
/// Set in the copy of this program that runs inside the private network namespace.
const IN_NETNS: &str = "CHINWAG_DEVICE_BENCH_IN_NETNS";
const MURMURD: &str = "/usr/sbin/murmurd";

#[derive(Debug, Parser)]
#[command(about = "Mouth-to-ear delay and PESQ-WB through real (PulseAudio) devices: Chinwag and Mumble.")]
struct Args {
    /// Calls per system.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of speech per call.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Run the Chinwag talker with echo cancellation, noise suppression and gain control off.
    #[arg(long)]
    no_processing: bool,
    /// One more argument for the Chinwag talker (repeatable), e.g. `--talker-arg=--no-agc` to
    /// find which processing stage costs what.
    #[arg(long, allow_hyphen_values = true)]
    talker_arg: Vec<String>,
    /// Leave Mumble out.
    #[arg(long)]
    no_mumble: bool,
    /// Do not re-run inside a private network namespace (Mumble is then left out).
    #[arg(long)]
    no_netns: bool,
    /// Keep the working folder (recordings, logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// What one system measured in one call.
#[derive(Debug, Default)]
struct Measurement {
    /// Mouth-to-ear of each 1 s piece of speech, in ms, before correction.
    delays_ms: Vec<f64>,
    pesq_whole: f32,
    /// PESQ-WB of 5 s windows from 2 s on.
    pesq_windows: Vec<f32>,
    talker_cpu_pct: f64,
    listener_cpu_pct: f64,
    /// Device trouble lines on the processes' stderr, where counted.
    trouble: Option<usize>,
    /// Anything else worth a line (the receiver's own report, say).
    note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Loop,
    Chinwag,
    Mumble,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Loop => "PulseAudio loop (module-loopback, 20 ms)",
            System::Chinwag => "Chinwag",
            System::Mumble => "Mumble 1.3.4",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut mumble_problem = None;
    if std::env::var_os(IN_NETNS).is_some() {
        let lo_up = Command::new(ip_binary()).args(["link", "set", "lo", "up"]).status();
        if !lo_up.as_ref().is_ok_and(|status| status.success()) {
            bail!("cannot bring up loopback in the private network namespace ({lo_up:?})");
        }
    } else if !args.no_netns {
        let probe = Command::new("unshare").args(["--net", "true"]).stderr(Stdio::null()).status();
        if probe.is_ok_and(|status| status.success()) {
            let status = Command::new("unshare")
                .args(["--net", "--"])
                .arg(std::env::current_exe()?)
                .args(std::env::args_os().skip(1))
                .env(IN_NETNS, "1")
                .status()
                .context("cannot run unshare")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        mumble_problem = Some(
            "no private network namespace (unshare --net needs root): Mumble's own DNS client would \
             query the machine's resolver, so Mumble is left out"
                .to_owned(),
        );
    } else {
        mumble_problem =
            Some("--no-netns: Mumble is left out (it would query the machine's resolver)".into());
    }
    if args.no_mumble {
        mumble_problem = Some("--no-mumble".into());
    }
    if mumble_problem.is_none() {
        mumble_problem = missing_mumble_tools();
    }

    let dir = std::env::temp_dir().join(format!("chinwag-device-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let speech = speech_of_length(&dir, TEXT, args.seconds)?;
    println!(
        "speech: {:.1} s from espeak-ng; {} run(s) per system; Chinwag voice processing {}",
        speech.len() as f64 / RATE,
        args.runs,
        if args.no_processing { "off" } else { "on (defaults)" }
    );
    let mumble = match &mumble_problem {
        Some(problem) => {
            println!("Mumble: not run: {problem}");
            None
        }
        None => match MumbleKit::prepare(&dir.join("mumble")) {
            Ok(kit) => Some(kit),
            Err(error) => {
                println!("Mumble: not run: {error:#}");
                None
            }
        },
    };

    let mut results: Vec<(System, Measurement)> = Vec::new();
    for run in 1..=args.runs {
        let systems: &[System] =
            if mumble.is_some() { &[System::Chinwag, System::Mumble] } else { &[System::Chinwag] };
        for &system in systems {
            let run_dir = dir.join(format!("run{run}-{system:?}").to_lowercase());
            let pulse = PulseServer::start_with_config(&run_dir.join("pulse"), PULSE_CONFIG)?;
            let harness = Harness::start(&pulse, &run_dir, &speech)?;
            match harness.measure_loop() {
                Ok(looped) => {
                    report_run(run, System::Loop, &looped);
                    results.push((System::Loop, looped));
                }
                Err(error) => println!("run {run}: {}: failed: {error:#}", System::Loop.label()),
            }
            let measured = match system {
                System::Chinwag => {
                    run_chinwag(&harness, &run_dir, args.seconds, args.no_processing, &args.talker_arg)
                }
                System::Mumble => mumble.as_ref().expect("only listed with Mumble").run(&harness, &run_dir),
                System::Loop => unreachable!("the loop runs before each system"),
            };
            match measured {
                Ok(measured) => {
                    report_run(run, system, &measured);
                    results.push((system, measured));
                }
                Err(error) => println!("run {run}: {}: failed: {error:#}", system.label()),
            }
            drop(harness);
            drop(pulse);
        }
    }
    print_table(&results, args.seconds);
    if args.keep {
        println!("working folder kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn ip_binary() -> &'static str {
    if Path::new("/usr/sbin/ip").exists() { "/usr/sbin/ip" } else { "ip" }
}

/// Says what is missing to drive Mumble, if anything.
fn missing_mumble_tools() -> Option<String> {
    let found = |name: &str| {
        Path::new(name).is_absolute() && Path::new(name).exists()
            || Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> =
        [MURMURD, "mumble", "openssl", "sqlite3", "Xvfb"].into_iter().filter(|tool| !found(tool)).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing {} (apt-get install -y mumble mumble-server openssl sqlite3 xvfb)",
            missing.join(", ")
        )
    })
}

fn raw_s16(samples: &[f32]) -> Vec<u8> {
    chinwag_e2e::audio::to_i16(samples).iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The devices of one side: `bus`, a stereo null sink; `mic` and `spk`, mono sinks that
/// remap onto its left and right channel; `dump`, where nobody listens.
const PULSE_CONFIG: &str = "load-module module-null-sink sink_name=bus rate=48000 channels=2 \
                            channel_map=front-left,front-right\n\
     load-module module-remap-sink sink_name=mic master=bus channels=1 channel_map=mono \
     master_channel_map=front-left remix=no\n\
     load-module module-remap-sink sink_name=spk master=bus channels=1 channel_map=mono \
     master_channel_map=front-right remix=no\n\
     load-module module-null-sink sink_name=dump rate=48000 channels=1\n\
     set-default-sink dump\n\
     set-default-source dump.monitor\n";

/// The PulseAudio loop's target latency: 10 ms each way, as Chinwag asks cpal for.
const LOOP_LATENCY_MS: u32 = 20;

const RAW_FORMAT: [&str; 5] =
    ["--raw", "--format=s16le", "--rate=48000", "--channels=1", "--latency-msec=10"];

/// Plays and records on one private PulseAudio server.
struct Harness<'a> {
    env: Vec<(String, String)>,
    /// Where recordings are written, for a look with `--keep`.
    dir: PathBuf,
    speech: &'a [f32],
    /// Silence played into `mic` and `spk` all along. An idle sink renders nothing, so its
    /// monitor would deliver no samples at all (not silence) until something plays into it:
    /// a microphone that stops, and a recording with holes. Real devices always run.
    keepalive: Vec<Child>,
}

impl Drop for Harness<'_> {
    fn drop(&mut self) {
        for child in &mut self.keepalive {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `parec` of `bus.monitor` (both channels), collected in memory.
struct Recorder {
    child: Child,
    bytes: Arc<AtomicUsize>,
    reader: std::thread::JoinHandle<Vec<u8>>,
}

impl Recorder {
    /// Waits until `seconds` of audio have arrived.
    fn wait_for(&self, seconds: f64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while (self.bytes.load(Ordering::Relaxed) as f64) < seconds * RATE * 4.0 {
            if Instant::now() > deadline {
                bail!("parec delivered no audio within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The left (`mic`) and right (`spk`) channels.
    fn stop(mut self) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let bytes = self.reader.join().map_err(|_| anyhow::anyhow!("the recorder's reader panicked"))?;
        let sample = |b: &[u8]| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0;
        Ok(bytes.chunks_exact(4).map(|frame| (sample(&frame[..2]), sample(&frame[2..]))).unzip())
    }
}

impl<'a> Harness<'a> {
    fn start(pulse: &PulseServer, dir: &Path, speech: &'a [f32]) -> anyhow::Result<Harness<'a>> {
        let mut harness = Harness { env: pulse.env(), dir: dir.to_owned(), speech, keepalive: Vec::new() };
        for sink in ["mic", "spk"] {
            let child = harness
                .pa_command("pacat")
                .args(["--playback", "-d", sink])
                .args(RAW_FORMAT)
                .stdin(std::fs::File::open("/dev/zero")?)
                .spawn()
                .context("cannot start pacat (apt-get install pulseaudio-utils)")?;
            harness.keepalive.push(child);
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(harness)
    }

    fn pa_command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn record(&self) -> anyhow::Result<Recorder> {
        let mut child = self
            .pa_command("parec")
            .args(["-d", "bus.monitor", "--raw", "--format=s16le", "--rate=48000", "--channels=2"])
            .arg("--latency-msec=10")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start parec (apt-get install pulseaudio-utils)")?;
        let mut stdout = child.stdout.take().expect("piped");
        let bytes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&bytes);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buffer = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buffer[..n]);
                counter.store(all.len(), Ordering::Relaxed);
            }
            all
        });
        Ok(Recorder { child, bytes, reader })
    }

    /// Plays `samples` into `sink` and waits until they are played. The player's latency does
    /// not matter (the recording has both ends on one clock), so it asks for 200 ms: enough
    /// that it never runs dry and puts gaps into the "microphone".
    fn play(&self, sink: &str, samples: &[f32]) -> anyhow::Result<()> {
        let bytes = raw_s16(samples);
        let mut child = self
            .pa_command("pacat")
            .args(["--playback", "-d", sink])
            .args(["--raw", "--format=s16le", "--rate=48000", "--channels=1", "--latency-msec=200"])
            .stdin(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start pacat (apt-get install pulseaudio-utils)")?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(&bytes)?;
        drop(stdin);
        let status = child.wait()?;
        if !status.success() {
            bail!("pacat -d {sink} failed: {status}");
        }
        Ok(())
    }

    /// Records both channels of `bus` while the speech goes into `mic`; `cpu_of` are the
    /// talker's and listener's process ids, whose CPU time over the speech is measured.
    /// Then finds the speech in both channels and scores what the listener played.
    fn measure(&self, label: &str, cpu_of: [u32; 2]) -> anyhow::Result<Measurement> {
        let recorder = self.record()?;
        recorder.wait_for(0.5)?;
        let cpu_before = cpu_of.map(process_cpu_time);
        let started = Instant::now();
        self.play("mic", self.speech)?;
        std::thread::sleep(Duration::from_millis(1500));
        let cpu_after = cpu_of.map(process_cpu_time);
        let wall = started.elapsed().as_secs_f64();
        let (mic, spk) = recorder.stop()?;
        write_wav_48k_mono(&self.dir.join(format!("{label}-mic.wav")), &mic)?;
        write_wav_48k_mono(&self.dir.join(format!("{label}-spk.wav")), &spk)?;
        let cpu_pct = |i: usize| match (&cpu_before[i], &cpu_after[i]) {
            (Ok(before), Ok(after)) => after.saturating_sub(*before).as_secs_f64() / wall * 100.0,
            _ => f64::NAN,
        };
        let mut measured = self.analyse(&mic, &spk)?;
        measured.talker_cpu_pct = cpu_pct(0);
        measured.listener_cpu_pct = cpu_pct(1);
        Ok(measured)
    }

    /// `mic` and `spk` are the two channels of one recording, sample for sample. What went into
    /// `mic` is the reference: should the player ever run dry, the talker heard the gap too.
    fn analyse(&self, mic: &[f32], spk: &[f32]) -> anyhow::Result<Measurement> {
        let speech = self.speech;
        let second = RATE as usize;
        let (spoken_at, spoken_match) = best_lag(speech, mic, mic.len().saturating_sub(speech.len() / 2));
        if spoken_match < 0.5 {
            bail!(
                "the speech played into mic is not in the recording's left channel (correlation {spoken_match:.2})"
            );
        }
        // Heard up to 1.5 s after it was spoken.
        let search = (0.75 * RATE) as usize;
        let (heard_at, heard_match) = find_piece(speech, 0, speech.len(), spk, spoken_at + search, search)
            .context("the recording is too short to hold the speech")?;
        // A playout with gaps shifts the speech piece by piece and lowers the whole file's
        // correlation; then each piece is looked for over the whole 0-1.5 s range instead.
        let (heard_at, piece_search) =
            if heard_match >= 0.1 { (heard_at, second / 2) } else { (spoken_at + search, search) };
        // Each piece is found in both channels, so that nothing that shifted the rest of the
        // file on one side (a gap) shifts the delay of every later piece.
        let in_mic = |start: usize, len: usize| {
            find_piece(speech, start, len, mic, spoken_at + start, second / 5)
                .filter(|(_, matched)| *matched > 0.9)
                .map(|(at, _)| at)
        };
        let delays_ms: Vec<f64> = piece_positions(speech, spk, heard_at, second, piece_search)
            .iter()
            .filter_map(|&(start, heard, _)| {
                let spoken = in_mic(start, second)?;
                Some((heard as f64 - spoken as f64) / RATE * 1000.0)
            })
            .collect();
        let segment = |channel: &[f32], at: usize, len: usize| {
            let mut piece = channel[at.min(channel.len())..(at + len).min(channel.len())].to_vec();
            piece.resize(len, 0.0);
            piece
        };
        if delays_ms.is_empty() {
            bail!("no piece of the speech was heard in spk (whole-file correlation {heard_match:.2})");
        }
        let pesq_whole =
            pesq_wb_48k(&segment(mic, spoken_at, speech.len()), &segment(spk, heard_at, speech.len()))?;
        let window = 5 * second;
        let mut pesq_windows = Vec::new();
        let mut start = 2 * second;
        while start + window <= speech.len() {
            let heard = find_piece(speech, start, window, spk, heard_at + start, (0.3 * RATE) as usize);
            if let (Some(spoken), Some((heard, _))) = (in_mic(start, window), heard) {
                pesq_windows.push(pesq_wb_48k(&segment(mic, spoken, window), &segment(spk, heard, window))?);
            }
            start += window;
        }
        Ok(Measurement { delays_ms, pesq_whole, pesq_windows, ..Measurement::default() })
    }

    /// The speech through PulseAudio's own loopback from `mic.monitor` to `spk`, and nothing
    /// else.
    fn measure_loop(&self) -> anyhow::Result<Measurement> {
        let output = self
            .pa_command("pactl")
            .args(["load-module", "module-loopback", "source=mic.monitor", "sink=spk"])
            .arg(format!("latency_msec={LOOP_LATENCY_MS}"))
            .args(["source_dont_move=true", "sink_dont_move=true"])
            .output()
            .context("cannot run pactl (apt-get install pulseaudio-utils)")?;
        if !output.status.success() {
            bail!("pactl load-module module-loopback: {}", String::from_utf8_lossy(&output.stderr));
        }
        let module = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        // Let it settle on its latency.
        std::thread::sleep(Duration::from_millis(1500));
        let measured = self.measure("loop", [std::process::id(); 2]);
        let _ = self.pa_command("pactl").args(["unload-module", &module]).status();
        let mut measured = measured?;
        (measured.talker_cpu_pct, measured.listener_cpu_pct) = (f64::NAN, f64::NAN);
        Ok(measured)
    }
}

/// A child whose stderr is read line by line: all lines kept, device trouble counted.
struct Watched {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    fn spawn(mut command: Command) -> anyhow::Result<Watched> {
        let mut child = command.stdin(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("no panics while held").push(line);
            }
        });
        Ok(Watched { child, lines })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("no panics while held").clone()
    }

    fn wait_for_line(&self, needle: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while !self.lines().iter().any(|line| line.contains(needle)) {
            if Instant::now() > deadline {
                bail!("no line with {needle:?} within {within:?}; it said: {:?}", self.lines());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn trouble(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| {
                let lower = line.to_lowercase();
                lower.contains("device") || lower.contains("stopped")
            })
            .collect()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_chinwag(
    harness: &Harness,
    dir: &Path,
    seconds: f64,
    no_processing: bool,
    talker_args: &[String],
) -> anyhow::Result<Measurement> {
    std::fs::create_dir_all(dir)?;
    let relay = RelayProcess::start(&sibling_binary("chinwag-relay"), &[])?;
    // Long enough for joining, the burst, the speech and its tail; then each bot writes its stats.
    let duration = format!("{:.1}", seconds + 12.0);
    let bot = |name: &str, sink: &str, source: &str| {
        let mut command = Command::new(sibling_binary("chinwag-bot"));
        command.args(["--server", &relay.url, "--room", "path", "--name", name, "--duration", &duration]);
        command.envs(harness.env.iter().map(|(k, v)| (k, v)));
        command.env("PULSE_SINK", sink).env("PULSE_SOURCE", source);
        command
    };
    let listener_json = dir.join("listener.json");
    let mut listener_command = bot("Listener", "spk", "dump.monitor");
    listener_command.args(["--output", "default"]).arg("--stats-json").arg(&listener_json);
    let listener = Watched::spawn(listener_command)
        .context("start the listening bot (cargo build --release -p chinwag-bot)")?;
    listener.wait_for_line("joined room", Duration::from_secs(15))?;
    let mut talker_command = bot("Talker", "dump", "mic.monitor");
    talker_command.args(["--input", "default"]);
    if no_processing {
        talker_command.args(["--no-aec", "--no-ns", "--no-agc"]);
    }
    talker_command.args(talker_args);
    let talker = Watched::spawn(talker_command)?;
    talker.wait_for_line("joined room", Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_millis(1500));
    let mut measured = harness.measure("chinwag", [talker.child.id(), listener.child.id()])?;
    let trouble: Vec<String> = talker.trouble().into_iter().chain(listener.trouble()).collect();
    let (mut talker, mut listener) = (talker, listener);
    let listener_status = listener.child.wait()?;
    let talker_status = talker.child.wait()?;
    if !listener_status.success() || !talker_status.success() {
        bail!(
            "a bot failed: talker {talker_status} ({:?}), listener {listener_status} ({:?})",
            talker.lines(),
            listener.lines()
        );
    }
    measured.trouble = Some(trouble.len());
    if let Ok(text) = std::fs::read_to_string(&listener_json) {
        let stats: serde_json::Value = serde_json::from_str(&text)?;
        let audio = &stats["peers"][0]["audio"];
        measured.note = format!(
            "listener reports mouth-to-ear p50 {:.1} ms, jitter buffer p50 {:.1} ms, concealed {} ms",
            audio["mouth_to_ear_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            audio["jitter_buffer_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            audio["concealed_ms"]
        );
    }
    for line in trouble.iter().take(4) {
        measured.note += &format!("\n    stderr: {}", strip_ansi(line));
    }
    Ok(measured)
}

/// What every Mumble run shares: certificates, the X server.
struct MumbleKit {
    dir: PathBuf,
    xvfb: Xvfb,
    /// SHA-1 of murmurd's certificate (DER), lower-case hex, as Mumble stores accepted ones.
    server_digest: String,
}

impl MumbleKit {
    fn prepare(dir: &Path) -> anyhow::Result<MumbleKit> {
        std::fs::create_dir_all(dir)?;
        let openssl = |args: &[&str]| -> anyhow::Result<String> {
            let output =
                Command::new("openssl").args(args).current_dir(dir).output().context("cannot run openssl")?;
            if !output.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            }
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        };
        for (name, cn) in [("server", "murmur"), ("client", "chinwag-bench")] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ])?;
        }
        // Mumble imports this at start instead of showing its certificate wizard.
        openssl(&[
            "pkcs12",
            "-export",
            "-in",
            "client.pem",
            "-inkey",
            "client.key",
            "-passout",
            "pass:",
            "-out",
            "client.p12",
        ])?;
        let fingerprint = openssl(&["x509", "-in", "server.pem", "-noout", "-fingerprint", "-sha1"])?;
        let server_digest =
            fingerprint.trim().rsplit('=').next().unwrap_or_default().replace(':', "").to_lowercase();
        // murmurd started as root drops to the mumble-server user: let it read its key and
        // write its database and log here (a throw-away folder and key).
        set_mode(dir, 0o777)?;
        set_mode(&dir.join("server.key"), 0o644)?;
        let xvfb = Xvfb::start(1024, 768)?;
        Ok(MumbleKit { dir: dir.to_owned(), xvfb, server_digest })
    }

    fn run(&self, harness: &Harness, run_dir: &Path) -> anyhow::Result<Measurement> {
        let dir = run_dir.join("mumble");
        std::fs::create_dir_all(&dir)?;
        set_mode(run_dir, 0o777)?;
        set_mode(&dir, 0o777)?;
        let port = free_port()?;
        let ini = dir.join("murmur.ini");
        std::fs::write(
            &ini,
            format!(
                "database={db}\nhost=127.0.0.1\nport={port}\nsslCert={kit}/server.pem\nsslKey={kit}/server.key\n\
                 bonjour=false\nwelcometext=\nregisterName=\nbandwidth=72000\nusers=10\nallowping=false\n",
                db = dir.join("murmur.sqlite").display(),
                kit = self.dir.display(),
            ),
        )?;
        let mut murmur_command = Command::new(MURMURD);
        murmur_command.arg("-ini").arg(&ini).arg("-fg").stdout(Stdio::null());
        // murmurd logs to stderr in the foreground.
        let murmur = Watched::spawn(murmur_command).context("cannot start murmurd")?;
        murmur.wait_for_line("Server listening", Duration::from_secs(20))?;
        let talker = self.client(harness, &dir, "talker", port, "mic.monitor", "dump", false)?;
        let listener = self.client(harness, &dir, "listener", port, "dump.monitor", "spk", true)?;
        let deadline = Instant::now() + Duration::from_secs(40);
        while murmur.lines().iter().filter(|line| line.contains("Authenticated")).count() < 2 {
            if Instant::now() > deadline {
                bail!(
                    "the Mumble clients did not both connect within 40 s (see {}); murmurd said: {:?}",
                    dir.display(),
                    murmur.lines()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(2));
        let mut measured = harness.measure("mumble", [talker.id(), listener.id()])?;
        measured.note =
            "Opus 40 kb/s, 20 ms packets, continuous transmission, jitter buffer 10 ms, output delay 50 ms"
                .into();
        for mut client in [talker, listener] {
            let _ = client.kill();
            let _ = client.wait();
        }
        drop(murmur);
        Ok(measured)
    }

    /// Starts one `mumble` client in a fresh HOME, configured to need no click at all.
    #[allow(clippy::too_many_arguments)]
    fn client(
        &self,
        harness: &Harness,
        dir: &Path,
        name: &str,
        port: u16,
        input: &str,
        output: &str,
        muted: bool,
    ) -> anyhow::Result<Child> {
        let home = dir.join(format!("home-{name}"));
        let config = home.join(".config/Mumble");
        let data = home.join(".local/share/Mumble/Mumble");
        let runtime = home.join("run");
        for folder in [&config, &data, &runtime, &home.join("Documents")] {
            std::fs::create_dir_all(folder)?;
        }
        set_mode(&runtime, 0o700)?;
        std::fs::copy(
            self.dir.join("client.p12"),
            home.join("Documents/MumbleAutomaticCertificateBackup.p12"),
        )?;
        std::fs::write(
            config.join("Mumble.conf"),
            format!(
                "[General]\nlastupdate=2\n\n\
                 [audio]\ninput=PulseAudio\noutput=PulseAudio\ntransmit=0\nquality=40000\nmute={muted}\n\
                 pushclick=false\n\n\
                 [net]\njitterbuffer=1\nframesperpacket=2\nreconnect=false\n\n\
                 [pulseaudio]\ninput={input}\noutput={output}\n\n\
                 [tts]\nenable=false\n\n\
                 [ui]\nupdatecheck=false\nplugincheck=false\nusage=false\naskonquit=false\nhidetray=false\n"
            ),
        )?;
        // The server's self-signed certificate, accepted in advance (Database::setDigest).
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS `cert` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `hostname` TEXT, \
             `port` INTEGER, `digest` TEXT); \
             CREATE UNIQUE INDEX IF NOT EXISTS `cert_host_port` ON `cert`(`hostname`,`port`); \
             REPLACE INTO `cert` (`hostname`,`port`,`digest`) VALUES ('127.0.0.1',{port},'{}');",
            self.server_digest
        );
        let status = Command::new("sqlite3")
            .arg(data.join("mumble.sqlite"))
            .arg(&sql)
            .status()
            .context("cannot run sqlite3")?;
        if !status.success() {
            bail!("sqlite3 failed: {status}");
        }
        let log = std::fs::File::create(dir.join(format!("mumble-{name}.log")))?;
        Command::new("mumble")
            .arg("-m")
            .arg(format!("mumble://{name}@127.0.0.1:{port}/"))
            .envs(harness.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("DISPLAY", &self.xvfb.display)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start mumble")
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// A loopback port that was free a moment ago (murmurd takes TCP and UDP on it).
fn free_port() -> anyhow::Result<u16> {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(tcp.local_addr()?.port())
}

/// `line` without terminal colour codes (the bots' log lines have them).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn percent(value: f64) -> String {
    if value.is_finite() { format!("{value:.1} %") } else { "–".to_owned() }
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) =
        values.into_iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

fn report_run(run: usize, system: System, measured: &Measurement) {
    println!(
        "run {run}: {}: mouth-to-ear p50 {:.1} ms (p95 {:.1}, {} pieces); PESQ-WB {:.3}, 5 s windows {:?}; \
         CPU talker {}, listener {}{}",
        system.label(),
        quantile(&measured.delays_ms, 0.5),
        quantile(&measured.delays_ms, 0.95),
        measured.delays_ms.len(),
        measured.pesq_whole,
        measured.pesq_windows.iter().map(|p| (p * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        percent(measured.talker_cpu_pct),
        percent(measured.listener_cpu_pct),
        measured.trouble.map(|n| format!("; device trouble lines {n}")).unwrap_or_default(),
    );
    if !measured.note.is_empty() {
        println!("    {}", measured.note);
    }
}

fn print_table(results: &[(System, Measurement)], seconds: f64) {
    let loop_p50 = {
        let delays: Vec<f64> = results
            .iter()
            .filter(|(s, _)| *s == System::Loop)
            .flat_map(|(_, m)| m.delays_ms.clone())
            .collect();
        quantile(&delays, 0.5)
    };
    println!();
    println!(
        "| system | runs | mouth-to-ear raw p50 / p95 | corrected p50 (minus the loop) | PESQ-WB whole | steady (5 s windows after 2 s) | talker CPU | listener CPU | device trouble lines |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for system in [System::Loop, System::Chinwag, System::Mumble] {
        let runs: Vec<&Measurement> = results.iter().filter(|(s, _)| *s == system).map(|(_, m)| m).collect();
        if runs.is_empty() {
            continue;
        }
        let delays: Vec<f64> = runs.iter().flat_map(|m| m.delays_ms.clone()).collect();
        let p50 = quantile(&delays, 0.5);
        let corrected = if system == System::Loop {
            "(reference)".to_owned()
        } else {
            format!("{:.1} ms", p50 - loop_p50)
        };
        let trouble = if runs.iter().all(|m| m.trouble.is_some()) {
            runs.iter().map(|m| m.trouble.unwrap_or(0)).sum::<usize>().to_string()
        } else {
            "–".to_owned()
        };
        println!(
            "| {} | {} | {:.1} / {:.1} ms | {corrected} | {:.3} | {:.3} | {} | {} | {trouble} |",
            system.label(),
            runs.len(),
            p50,
            quantile(&delays, 0.95),
            mean(runs.iter().map(|m| f64::from(m.pesq_whole))),
            mean(runs.iter().flat_map(|m| m.pesq_windows.iter().map(|p| f64::from(*p)))),
            percent(mean(runs.iter().map(|m| m.talker_cpu_pct))),
            percent(mean(runs.iter().map(|m| m.listener_cpu_pct))),
        );
    }
    println!(
        "\n{seconds:.0} s of speech per call; delays over 1 s pieces of speech; CPU in per cent of one core over the speech; \
         the loop runs inside the PulseAudio server."
    );
}
