//! Chinwag's call core: the logic of one participant's media, with no IO.
//!
//! This crate owns what happens to media between the devices and the network: stamping each
//! outgoing stream ([`MediaStamper`], shared by audio and video) and encoding voice
//! ([`VoiceSender`]); on the way in, one jitter buffer and Opus decoder per peer, mixing with
//! per-peer volume under a limiter, and mouth-to-ear measured per played frame ([`Playout`]),
//! with speech time-compressed when a jitter buffer holds more than it needs ([`stretch`]);
//! holding each peer's video until the audio captured with it is heard ([`LipSync`]); turning
//! the rate the link carries into the frame rate, size and quality of outgoing video
//! ([`VideoRate`]); and the bounded percentile sketches the statistics are kept in
//! ([`Sketch`]).
//!
//! It deliberately reads no clock, opens no device or socket and starts no thread: every
//! input comes with its `now` (`handle_*`) and every output is asked for (`poll_*`), so that
//! scenario tests can run two call cores through a simulated relay in virtual time. The
//! engine's threads drive it.

mod lipsync;
mod mix;
mod playout;
mod sketch;
mod stamp;
pub mod stretch;
mod video_rate;
mod voice;

pub use lipsync::LipSync;
pub use mix::Limiter;
pub use playout::{MAX_VOLUME, PeerAudioStats, Playout, TICK_SAMPLES};
pub use sketch::{Percentiles, Sketch};
pub use stamp::MediaStamper;
pub use video_rate::{LOWER_LAYERS, LowerLayer, VideoLevel, VideoRate};
pub use voice::VoiceSender;
