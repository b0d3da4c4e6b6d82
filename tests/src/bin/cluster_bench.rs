//! What a relay cluster costs: audio through one relay against the same audio through two
//! relays joined by NATS.
//!
//! Each phase joins `--rooms` rooms of `--senders` senders and `--receivers` receivers, has
//! every sender send `--fps` audio frames per second of `--payload` bytes for `--seconds`,
//! and has every client timestamp what arrives against the capture time the sender wrote (one
//! clock: every client lives in this process). The phases:
//!
//! 1. baseline: one relay without a cluster, everyone on it;
//! 2. cluster: two relays sharing a `nats-server -js`, senders on relay A, receivers on B;
//! 3. mixed (unless `--no-mixed`): the same two relays, senders and receivers split evenly.
//!
//! CPU per delivered frame is the relays' user plus system time over the sending window
//! divided by the frames the clients received; nats-server's is given apart.
//!
//! ```text
//! cargo build --release -p chinwag-relay -p chinwag-e2e
//! target/release/cluster-bench --rooms 4 --senders 2 --receivers 8 --seconds 20
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chinwag_e2e::load::{self, LoadResult, Member, Traffic, metric_sum, percentile_ms};
use chinwag_e2e::{NatsServer, RelayProcess, http_get, metric};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Audio through one chinwag-relay against two relays clustered over NATS.")]
struct Args {
    /// Rooms per phase; several, so that the CPU time (read in 10 ms ticks) is large enough to
    /// divide.
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Senders per room; on relay A in the cluster phase.
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Receivers per room; on relay B in the cluster phase.
    #[arg(long, default_value_t = 8)]
    receivers: usize,
    #[arg(long, default_value_t = 50)]
    fps: u32,
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Seconds each phase sends.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Skip the phase with senders and receivers split over both relays.
    #[arg(long)]
    no_mixed: bool,
    /// The relay binary [default: chinwag-relay next to this program].
    #[arg(long)]
    relay_bin: Option<PathBuf>,
}

/// One phase: the load, and what the relays and nats-server said about it.
struct Phase {
    name: &'static str,
    load: LoadResult,
    /// `chinwag_dropped_frames_total`, every relay and reason, over the phase.
    relay_drops: u64,
    /// `chinwag_cluster_dropped_frames_total`, every relay and reason, over the phase.
    cluster_drops: u64,
    /// CPU time of the relays, summed, and of nats-server (`None` without a cluster).
    relay_cpu: Duration,
    nats_cpu: Option<Duration>,
}

impl Phase {
    fn delivered(&self) -> u64 {
        self.load.received()
    }

    fn relay_us_per_frame(&self) -> f64 {
        self.relay_cpu.as_secs_f64() * 1e6 / self.delivered().max(1) as f64
    }

    fn nats_us_per_frame(&self) -> Option<f64> {
        self.nats_cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / self.delivered().max(1) as f64)
    }

    /// The delays that matter for the comparison: cross-relay ones when there are any.
    fn headline_delays(&self) -> &[u32] {
        if self.load.cross_delays_us.is_empty() {
            &self.load.local_delays_us
        } else {
            &self.load.cross_delays_us
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.senders == 0 || args.senders + args.receivers < 2 || args.rooms == 0 {
        bail!("--rooms and --senders must be at least 1, and a room needs at least two clients");
    }
    let relay_bin = match args.relay_bin.clone() {
        Some(path) => path,
        None => {
            std::env::current_exe()?.with_file_name(format!("chinwag-relay{}", std::env::consts::EXE_SUFFIX))
        }
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let dir = std::env::temp_dir().join(format!("chinwag-cluster-bench-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(&args, &relay_bin, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    let phases = result?;

    println!();
    println!("command: {command}");
    println!(
        "{} room(s) of {} senders and {} receivers, {} audio frames/s of {} B per sender, {} s per phase",
        args.rooms, args.senders, args.receivers, args.fps, args.payload, args.seconds
    );
    println!();
    println!(
        "| phase | path | deliveries / expected | relay drops / cluster drops | delay p50 | p99 | p99.9 | max |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for phase in &phases {
        let load = &phase.load;
        for (path, delays, expected) in [
            ("same relay", &load.local_delays_us, load.expected_local),
            ("across relays", &load.cross_delays_us, load.expected_cross),
        ] {
            if expected == 0 {
                continue;
            }
            println!(
                "| {} | {path} | {} / {} | {} / {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
                phase.name,
                delays.len(),
                expected,
                phase.relay_drops,
                phase.cluster_drops,
                percentile_ms(delays, 0.5),
                percentile_ms(delays, 0.99),
                percentile_ms(delays, 0.999),
                percentile_ms(delays, 1.0),
            );
        }
    }
    println!();
    println!(
        "| phase | frames delivered | relay CPU (all relays) | per delivered frame | nats-server CPU | per delivered frame |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for phase in &phases {
        let wall = phase.load.wall.as_secs_f64();
        let (nats, nats_per_frame) = match (phase.nats_cpu, phase.nats_us_per_frame()) {
            (Some(cpu), Some(per_frame)) => (
                format!("{:.1} % of one core", cpu.as_secs_f64() / wall * 100.0),
                format!("{per_frame:.2} µs"),
            ),
            _ => ("–".to_owned(), "–".to_owned()),
        };
        println!(
            "| {} | {} | {:.1} % of one core | {:.2} µs | {nats} | {nats_per_frame} |",
            phase.name,
            phase.delivered(),
            phase.relay_cpu.as_secs_f64() / wall * 100.0,
            phase.relay_us_per_frame(),
        );
    }
    let baseline = &phases[0];
    println!();
    for phase in &phases[1..] {
        let (base, this) = (baseline.headline_delays(), phase.headline_delays());
        let with_nats = phase.relay_us_per_frame() + phase.nats_us_per_frame().unwrap_or(0.0);
        println!(
            "{} / baseline: delay p50 {:.2}x, p99 {:.2}x; CPU per delivered frame {:.2}x for the relays, {:.2}x with nats-server",
            phase.name,
            percentile_ms(this, 0.5) / percentile_ms(base, 0.5),
            percentile_ms(this, 0.99) / percentile_ms(base, 0.99),
            phase.relay_us_per_frame() / baseline.relay_us_per_frame(),
            with_nats / baseline.relay_us_per_frame(),
        );
    }
    Ok(())
}

async fn run(args: &Args, relay_bin: &Path, dir: &Path) -> anyhow::Result<Vec<Phase>> {
    let clients = args.rooms * (args.senders + args.receivers);
    let connections = (clients + 16).to_string();
    let per_room = (args.senders + args.receivers).max(64).to_string();
    // Every client comes from this one machine: no per-source limits.
    let relay_args = [
        "--max-connections",
        connections.as_str(),
        "--max-participants",
        per_room.as_str(),
        "--max-connections-per-source",
        "0",
        "--max-handshakes-per-source",
        "0",
    ];
    let start_relay = |extra: &[&str]| {
        let args: Vec<&str> = relay_args.iter().chain(extra).copied().collect();
        RelayProcess::start(relay_bin, &args).with_context(|| {
            format!("start {} (build it with cargo build --release -p chinwag-relay)", relay_bin.display())
        })
    };
    let traffic = Traffic { fps: args.fps, payload_bytes: args.payload, seconds: args.seconds };
    let mut phases = Vec::new();

    let baseline_relay = start_relay(&[])?;
    println!("baseline relay {} (pid {})", baseline_relay.url, baseline_relay.pid());
    let members = room_members(args, "baseline", |_, _| 0, &[&baseline_relay]);
    phases.push(measure("baseline: one relay", &members, traffic, &[&baseline_relay], None).await?);
    report(phases.last().expect("just pushed"));
    drop(baseline_relay);

    let nats = NatsServer::start(&dir.join("nats"))?;
    let relay_a = start_relay(&["--cluster", &nats.url(), "--node-id", "bench-a"])?;
    let relay_b = start_relay(&["--cluster", &nats.url(), "--node-id", "bench-b"])?;
    println!(
        "cluster: nats-server {} (pid {}), relay A {} (pid {}), relay B {} (pid {})",
        nats.url(),
        nats.pid().unwrap_or(0),
        relay_a.url,
        relay_a.pid(),
        relay_b.url,
        relay_b.pid()
    );
    let relays = [&relay_a, &relay_b];
    for relay in relays {
        wait_for_cluster(relay.addr, 2).await?;
    }
    let members = room_members(args, "cluster", |sends, _| if sends { 0 } else { 1 }, &relays);
    phases.push(
        measure("cluster: senders on A, receivers on B", &members, traffic, &relays, Some(&nats)).await?,
    );
    report(phases.last().expect("just pushed"));

    if !args.no_mixed {
        let members = room_members(args, "mixed", |_, index| index % 2, &relays);
        phases.push(
            measure("cluster: everyone split over A and B", &members, traffic, &relays, Some(&nats)).await?,
        );
        report(phases.last().expect("just pushed"));
    }
    Ok(phases)
}

/// The clients of one phase; `relay_for(sends, index_in_room)` picks each one's relay.
fn room_members(
    args: &Args,
    tag: &str,
    relay_for: impl Fn(bool, usize) -> usize,
    relays: &[&RelayProcess],
) -> Vec<Member> {
    let mut members = Vec::new();
    for room in 0..args.rooms {
        for index in 0..args.senders + args.receivers {
            let sends = index < args.senders;
            // Alternate within senders and within receivers, so that a split is even for both.
            let index_in_role = if sends { index } else { index - args.senders };
            let relay = relay_for(sends, index_in_role);
            members.push(Member {
                url: relays[relay].url.clone(),
                relay,
                room: format!("{tag}-{room}"),
                name: format!("{}-{room}-{index_in_role}", if sends { "sender" } else { "receiver" }),
                sends,
            });
        }
    }
    members
}

async fn measure(
    name: &'static str,
    members: &[Member],
    traffic: Traffic,
    relays: &[&RelayProcess],
    nats: Option<&NatsServer>,
) -> anyhow::Result<Phase> {
    let drops_before = drops(relays).await?;
    let mut pids: Vec<u32> = relays.iter().map(|relay| relay.pid()).collect();
    if let Some(pid) = nats.and_then(NatsServer::pid) {
        pids.push(pid);
    }
    let load = load::run(members, traffic, &pids).await?;
    let drops_after = drops(relays).await?;
    let relay_cpu = load.cpu[..relays.len()].iter().sum();
    let nats_cpu = nats.map(|_| load.cpu[relays.len()]);
    Ok(Phase {
        name,
        load,
        relay_drops: drops_after.0 - drops_before.0,
        cluster_drops: drops_after.1 - drops_before.1,
        relay_cpu,
        nats_cpu,
    })
}

/// Relay drops and cluster-link drops, summed over `relays`.
async fn drops(relays: &[&RelayProcess]) -> anyhow::Result<(u64, u64)> {
    let (mut relay, mut cluster) = (0, 0);
    for process in relays {
        let (_, text) = http_get(process.addr, "/metrics").await?;
        relay += metric_sum(&text, "chinwag_dropped_frames_total");
        cluster += metric_sum(&text, "chinwag_cluster_dropped_frames_total");
    }
    Ok((relay, cluster))
}

fn report(phase: &Phase) {
    let load = &phase.load;
    let all = load.all_delays_us();
    println!(
        "{}: {} clients, {} frames sent, {} of {} deliveries ({} across relays), relay drops {}, cluster drops {}, delay ms p50 {:.3} p99 {:.3} max {:.3}, relay CPU {:.2} µs and nats-server {} per delivered frame",
        phase.name,
        load.clients,
        load.sent,
        load.received(),
        load.expected(),
        load.cross_delays_us.len(),
        phase.relay_drops,
        phase.cluster_drops,
        percentile_ms(&all, 0.5),
        percentile_ms(&all, 0.99),
        percentile_ms(&all, 1.0),
        phase.relay_us_per_frame(),
        phase.nats_us_per_frame().map_or("–".to_owned(), |us| format!("{us:.2} µs")),
    );
}

/// Waits until the relay at `addr` is connected to NATS and sees `nodes` live relays.
async fn wait_for_cluster(addr: SocketAddr, nodes: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, text) = http_get(addr, "/metrics").await?;
        let connected = metric(&text, "chinwag_cluster_connected");
        let seen = metric(&text, "chinwag_cluster_nodes");
        if connected == Some(1) && seen == Some(nodes) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "relay {addr} did not join the cluster within 15 s: chinwag_cluster_connected {connected:?}, chinwag_cluster_nodes {seen:?} (expected {nodes})"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
