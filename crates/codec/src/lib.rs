//! Chinwag's voice codec and resampling: buffers in, buffers out.
//!
//! This crate owns Opus at 48 kHz mono ([`VoiceEncoder`], [`VoiceDecoder`]) with the settings
//! a call wants (VOIP mode, in-band FEC, a settable bitrate, 10 or 20 ms frames), packet-loss
//! concealment and FEC recovery on the decoding side, and sample-rate conversion
//! ([`Resampler`]) for devices and files that do not run at 48 kHz.
//!
//! It deliberately does no IO, keeps no clock and spawns no thread: callers hand it samples
//! or packets and get packets or samples back. Decoding a malformed packet is an error, never
//! a panic. JPEG for video arrives here with the video issue.

mod opus_voice;
mod resample;
mod video;

pub use opus_voice::{CODEC_DELAY, FrameDuration, VoiceConfig, VoiceDecoder, VoiceEncoder};
pub use resample::{Resampler, resample_all};
pub use video::VideoFrame;

/// The one sample rate the codec and the engine run at.
pub const SAMPLE_RATE: u32 = 48_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("an empty packet has nothing to decode")]
    EmptyPacket,
    #[error("a frame must be {expected} samples, not {got}")]
    WrongFrameLength { expected: usize, got: usize },
    #[error("bitrate {0} b/s is outside Opus's 6000 to 510000")]
    BadBitrate(u32),
    #[error("cannot resample from {from} Hz to {to} Hz: {reason}")]
    Resampler { from: u32, to: u32, reason: String },
}
