//! Opus encode and decode time per frame: `cargo bench -p chinwag-codec --bench opus`.
//!
//! A plain timing loop rather than a benchmark framework: the figures that matter are
//! microseconds per frame against the frame's own duration (the real-time budget), printed as
//! both.

use std::time::Instant;

use chinwag_codec::{FrameDuration, VoiceConfig, VoiceDecoder, VoiceEncoder};

/// A voiced, gliding signal with a little noise: closer to speech than a pure tone.
fn speech_like(n: usize) -> Vec<f32> {
    let mut seed = 0x2545_f491_u32;
    (0..n)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            let pitch = 120.0 + 40.0 * (2.0 * std::f32::consts::PI * 0.5 * t).sin();
            let voiced: f32 =
                (1..=8).map(|h| (2.0 * std::f32::consts::PI * pitch * h as f32 * t).sin() / h as f32).sum();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            0.15 * voiced + 0.01 * (seed as f32 / u32::MAX as f32 - 0.5)
        })
        .collect()
}

fn main() {
    const FRAMES: usize = 3000;
    for frame in [FrameDuration::Ms20, FrameDuration::Ms10] {
        let n = frame.samples();
        let signal = speech_like(FRAMES * n);
        let mut encoder = VoiceEncoder::new(VoiceConfig { frame, ..VoiceConfig::default() }).unwrap();
        let mut packets = Vec::with_capacity(FRAMES);
        let started = Instant::now();
        for pcm in signal.chunks(n) {
            let mut packet = Vec::new();
            encoder.encode(pcm, &mut packet).unwrap();
            packets.push(packet);
        }
        let encode_us = started.elapsed().as_secs_f64() * 1e6 / FRAMES as f64;

        let mut decoder = VoiceDecoder::new();
        let started = Instant::now();
        for packet in &packets {
            std::hint::black_box(decoder.decode(packet).unwrap());
        }
        let decode_us = started.elapsed().as_secs_f64() * 1e6 / FRAMES as f64;

        let started = Instant::now();
        for _ in 0..FRAMES {
            std::hint::black_box(decoder.conceal(n).unwrap());
        }
        let conceal_us = started.elapsed().as_secs_f64() * 1e6 / FRAMES as f64;
        let budget_us = frame.duration().as_secs_f64() * 1e6;
        let bytes: usize = packets.iter().map(Vec::len).sum();
        println!(
            "opus {} ms frames at 32 kb/s, FEC on: encode {encode_us:.1} µs/frame ({:.2} % of real time), decode {decode_us:.1} µs/frame ({:.2} %), conceal {conceal_us:.1} µs/frame; {:.1} kb/s actual",
            frame.duration().as_millis(),
            encode_us / budget_us * 100.0,
            decode_us / budget_us * 100.0,
            bytes as f64 * 8.0 / (FRAMES as f64 * frame.duration().as_secs_f64()) / 1000.0,
        );
    }
}
