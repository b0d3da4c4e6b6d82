//! The jitter buffer on a TCP stall trace: `cargo bench -p chinwag-jitter --bench stall_trace`.
//!
//! Not a timing benchmark: it replays, in virtual time, two minutes of a 20 ms audio stream
//! with 10 ms of jitter and a 200–400 ms head-of-line stall every 3–6 s (everything held back
//! arrives at once when a stall ends), for five seeds, and reports what a listener would
//! notice. The baseline, run on the same traces, is the same buffer with frame shedding
//! switched off: it conceals each stall too, but keeps the stall's delay.
//!
//! Goals (audio issue): added delay never above 250 ms, back to target within 3 s of a stall,
//! concealment at most 8 % of the time.

#[path = "../tests/sim/mod.rs"]
// The benchmark uses only part of the scenario tests' simulator.
#[allow(dead_code)]
mod sim;

use std::time::Duration;

use chinwag_jitter::JitterConfig;
use sim::{Run, Scenario, Stalls, ms};

fn trace(seed: u64, config: JitterConfig) -> Scenario {
    let millis = Duration::from_millis;
    Scenario {
        jitter: millis(10),
        stalls: Some(Stalls { gap: (millis(3000), millis(6000)), length: (millis(200), millis(400)) }),
        duration: Duration::from_secs(120),
        config,
        ..Scenario::new("stall trace", seed)
    }
}

struct Figures {
    delay_p50: f64,
    delay_p95: f64,
    delay_max: f64,
    worst_recovery: Option<f64>,
    conceal_percent: f64,
}

fn figures(run: &Run) -> Figures {
    let summary = run.summary();
    let worst_recovery =
        run.recoveries().into_iter().try_fold(Duration::ZERO, |worst, r| r.map(|r| worst.max(r))).map(ms);
    Figures {
        delay_p50: ms(summary.delay_p50),
        delay_p95: ms(summary.delay_p95),
        delay_max: ms(summary.delay_max),
        worst_recovery,
        // Silence polls (a stall outlasting the maximum delay) are gaps too: counted with
        // concealment.
        conceal_percent: 100.0
            * (summary.conceal_share + summary.silence_polls as f64 / run.playing().len() as f64),
    }
}

fn main() {
    let never_sheds = JitterConfig { shrink_patience: Duration::from_secs(3600), ..JitterConfig::default() };
    println!(
        "seed | buffer | stalls | added delay p50 / p95 / max (ms) | worst recovery (ms) | concealed or silent"
    );
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for seed in 1..=5 {
        for (name, config) in
            [("chinwag", JitterConfig::default()), ("baseline: no shedding", never_sheds.clone())]
        {
            let run = sim::run(trace(seed, config));
            let f = figures(&run);
            println!(
                "{seed} | {name} | {} | {:.0} / {:.0} / {:.0} | {} | {:.2} %",
                run.stalls.len(),
                f.delay_p50,
                f.delay_p95,
                f.delay_max,
                f.worst_recovery.map_or("never".into(), |r| format!("{r:.0}")),
                f.conceal_percent,
            );
            if name == "chinwag" {
                worst.0 = worst.0.max(f.delay_max);
                worst.1 = worst.1.max(f.worst_recovery.unwrap_or(f64::INFINITY));
                worst.2 = worst.2.max(f.conceal_percent);
            }
        }
    }
    println!(
        "chinwag worst over seeds: added delay max {:.0} ms (goal <= 250), recovery {:.0} ms (goal <= 3000), concealed {:.2} % (goal <= 8)",
        worst.0, worst.1, worst.2
    );
}
