//! Chinwag's voice and video codecs and resampling: buffers in, buffers out.
//!
//! This crate owns Opus at 48 kHz mono ([`VoiceEncoder`], [`VoiceDecoder`]) with the settings
//! a call wants (VOIP mode, in-band FEC, a settable bitrate, 10 or 20 ms frames), packet-loss
//! concealment and FEC recovery on the decoding side, and sample-rate conversion
//! ([`Resampler`]) for devices and files that do not run at 48 kHz. For video it owns JPEG
//! ([`JpegEncoder`], [`JpegDecoder`]): every frame an independent baseline 4:2:0 JPEG, decoded
//! only after its header shows it fits the receiver's limits, and an RGBA [`scale`]r for
//! senders that adapt their resolution. For the microphone it owns voice processing
//! ([`VoiceProcessor`]): echo cancellation against what the speaker plays, noise suppression,
//! automatic gain and voice activity, on 10 ms frames.
//!
//! It deliberately does no IO, keeps no clock and spawns no thread: callers hand it samples,
//! frames or packets and get packets, frames or samples back. Decoding a malformed packet or
//! JPEG is an error, never a panic.

mod jpeg;
mod opus_voice;
pub mod picture;
mod processing;
mod resample;
mod video;

pub use jpeg::{
    DEFAULT_JPEG_QUALITY, DEFAULT_MAX_HEIGHT, DEFAULT_MAX_WIDTH, JpegDecoder, JpegEncoder, scale,
};
pub use opus_voice::{CODEC_DELAY, FrameDuration, VoiceConfig, VoiceDecoder, VoiceEncoder};
pub use processing::{
    CaptureAnalysis, MAX_STREAM_DELAY, PROCESSING_FRAME_SAMPLES, ProcessingConfig, ProcessingStats,
    SILENCE_DBFS, VoiceProcessor,
};
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
    #[error("JPEG quality {0} is outside 1 to 100")]
    BadJpegQuality(u8),
    #[error(
        "a {width}x{height} RGBA frame needs width * height * 4 bytes and at least one pixel, not {len} bytes"
    )]
    BadVideoFrame { width: u32, height: u32, len: usize },
    #[error("cannot encode the video frame as JPEG: {0}")]
    JpegEncode(#[source] turbojpeg::Error),
    #[error(
        "a {width}x{height} video frame is larger than the {max_width}x{max_height} this decoder accepts"
    )]
    FrameTooLarge { width: u32, height: u32, max_width: u32, max_height: u32 },
    #[error("not a usable JPEG frame (dropped): {0}")]
    BadJpeg(String),
}
