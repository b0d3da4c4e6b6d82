//! PESQ-WB of espeak-ng speech through Opus alone, for several bitrate and FEC settings:
//! `cargo run --release -p chinwag-e2e --example opus_settings_sweep`.
//!
//! Opus spends part of its bitrate on in-band FEC once it plans for any loss, which is what
//! the call-quality benchmark's PESQ figure depends on; this shows how much.

use chinwag_codec::{FrameDuration, VoiceConfig};

fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("chinwag-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let text = "The quick brown fox jumps over the lazy dog. A call should sound as clear as this, \
                with no delay that anyone can notice, from the first word to the last.";
    let speech = chinwag_capture::read_wav_48k_mono(&chinwag_e2e::audio::speech_wav(&dir, text)?)?;
    for (bitrate_bps, expected_loss_percent) in
        [(32_000, 10), (32_000, 2), (32_000, 0), (40_000, 10), (40_000, 2), (48_000, 10)]
    {
        let config =
            VoiceConfig { frame: FrameDuration::Ms20, bitrate_bps, fec: true, expected_loss_percent };
        let score = chinwag_e2e::audio::opus_pesq_wb(&speech, config)?;
        println!(
            "{} kb/s, FEC planned for {expected_loss_percent} % loss: PESQ-WB {score:.3}",
            bitrate_bps / 1000
        );
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
