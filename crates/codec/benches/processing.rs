//! What voice processing costs per 10 ms frame (render and capture together), stage by stage,
//! on the synthetic call the tests use: the far end alone, double talk, the near end alone and
//! background noise. The baseline is a `VoiceProcessor` with every stage off, which still
//! copies the frames through sonora and runs the voice activity detector; the detector is also
//! timed alone. The goal is at most 2 % of one core for echo cancellation, noise suppression
//! and gain control together.
//!
//! `cargo bench -p chinwag-codec --bench processing`

#[allow(dead_code, reason = "shared with the tests, which use the rest of it")]
#[path = "../tests/room/mod.rs"]
mod room;

use std::hint::black_box;
use std::time::Instant;

use chinwag_codec::{ProcessingConfig, VoiceProcessor};
use room::{ECHO_DELAY, FAR_END_ONLY, FRAME, Room, Script, Talker, reduction_db, span};
use sonora_agc2::vad_wrapper::VoiceActivityDetectorWrapper;

/// Each configuration processes the whole call this many times, from a fresh processor.
const PASSES: usize = 8;
/// The cost of 10 ms of audio as a share of one core: microseconds per 10 000.
const FRAME_MICROS: f64 = 10_000.0;

fn main() {
    let room = Room::new(&Script::call(), &Talker::far_end(), &Talker::near_end());
    println!(
        "voice processing, 48 kHz mono, 10 ms frames: {} frames of the synthetic call x {PASSES} passes",
        room.n_frames()
    );
    println!(
        "{:<22} {:>9} {:>11} {:>8} {:>8}   echo reduced, far end alone (3-7 s)",
        "stages", "us/frame", "% of core", "p99 us", "max us"
    );

    let off = ProcessingConfig { echo_cancellation: false, noise_suppression: false, gain_control: false };
    let configs = [
        ("none (plumbing + VAD)", off),
        ("AEC", ProcessingConfig { echo_cancellation: true, ..off }),
        ("NS", ProcessingConfig { noise_suppression: true, ..off }),
        ("AGC", ProcessingConfig { gain_control: true, ..off }),
        ("AEC + NS", ProcessingConfig { echo_cancellation: true, noise_suppression: true, ..off }),
        ("AEC + NS + AGC", ProcessingConfig::default()),
    ];
    let mut full_chain = 0.0;
    for (name, config) in configs {
        let (times, echo) = time_processor(&room, config);
        let mean = median_pass_mean(&times);
        println!("{name:<22} {}   {echo}", columns(mean, &times));
        if config == ProcessingConfig::default() {
            full_chain = mean;
        }
    }
    let vad_times = time_vad(&room);
    println!("{:<22} {}", "VAD alone", columns(median_pass_mean(&vad_times), &vad_times));

    let share = full_chain / FRAME_MICROS * 100.0;
    let verdict = if share <= 2.0 { "met" } else { "NOT met" };
    println!("goal: AEC + NS + AGC at most 2 % of one core: {share:.2} % -> {verdict}");
}

/// Per-frame times in microseconds, one vector per pass, and a description of the echo
/// reduction achieved in the first pass.
fn time_processor(room: &Room, config: ProcessingConfig) -> (Vec<Vec<f64>>, String) {
    let mut echo = String::from("-");
    let times = (0..PASSES)
        .map(|pass| {
            let mut processor = VoiceProcessor::new(config);
            processor.set_stream_delay(ECHO_DELAY);
            let mut out = room.mic.clone();
            let mut stats = None;
            let times = room
                .far_end
                .chunks(FRAME)
                .zip(out.chunks_mut(FRAME))
                .enumerate()
                .map(|(frame_idx, (far, mic))| {
                    let start = Instant::now();
                    processor.process_render(far).expect("frames are 10 ms");
                    black_box(processor.process_capture(mic).expect("frames are 10 ms"));
                    let micros = start.elapsed().as_secs_f64() * 1e6;
                    if frame_idx * FRAME == span(&FAR_END_ONLY).end {
                        stats = Some(processor.stats());
                    }
                    micros
                })
                .collect();
            if pass == 0 && config.echo_cancellation {
                let span = span(&FAR_END_ONLY);
                let reduction = reduction_db(&room.mic[span.clone()], &out[span]);
                let stats = stats.unwrap_or_default();
                let db = |db: Option<f64>| db.map_or("none".to_string(), |db| format!("{db:.1} dB"));
                echo = format!(
                    "{reduction:.1} dB; sonora at 7 s: ERLE {}, ERL {}, delay {:?}",
                    db(stats.echo_return_loss_enhancement_db),
                    db(stats.echo_return_loss_db),
                    stats.echo_delay.unwrap_or_default()
                );
            }
            times
        })
        .collect();
    (times, echo)
}

/// The RNN voice activity detector alone, on the microphone frames, as `VoiceProcessor` runs it.
fn time_vad(room: &Room) -> Vec<Vec<f64>> {
    (0..PASSES)
        .map(|_| {
            let mut vad = VoiceActivityDetectorWrapper::new(sonora_simd::detect_backend(), 48_000);
            let mut scaled = vec![0.0f32; FRAME];
            room.mic
                .chunks(FRAME)
                .map(|frame| {
                    let start = Instant::now();
                    for (s, &x) in scaled.iter_mut().zip(frame) {
                        *s = x * 32_768.0;
                    }
                    black_box(vad.analyze(&scaled));
                    start.elapsed().as_secs_f64() * 1e6
                })
                .collect()
        })
        .collect()
}

/// The median over passes of each pass's mean time per frame: a pass disturbed by another
/// process on the machine does not move it.
fn median_pass_mean(times: &[Vec<f64>]) -> f64 {
    let mut means: Vec<f64> = times.iter().map(|pass| pass.iter().sum::<f64>() / pass.len() as f64).collect();
    means.sort_by(f64::total_cmp);
    means[means.len() / 2]
}

fn columns(mean: f64, times: &[Vec<f64>]) -> String {
    let mut all: Vec<f64> = times.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    let p99 = all[all.len() * 99 / 100];
    let max = all[all.len() - 1];
    format!("{mean:>9.1} {:>10.2}% {p99:>8.1} {max:>8.1}", mean / FRAME_MICROS * 100.0)
}
