//! Chinwag's rate control: how fast a link can take data without queueing, from what a
//! sender sees.
//!
//! This crate owns two sans-IO cores: [`LinkEstimator`] turns the bytes a socket accepted and
//! measured delays (round trips, and one-way delays where the far end stamps its clock) into
//! a delivered rate and a queueing delay; [`RateController`] turns those into the rate to send
//! at, backing off when a queue builds and climbing back carefully. A client uses them for its
//! uplink (its video's bitrate), the relay for each receiver's downlink (how much video to
//! forward to it).
//!
//! It deliberately reads no clock and opens no socket: `now` and the measurements come in as
//! arguments, so that tests can run a simulated bottleneck in virtual time
//! (`tests/bottleneck.rs`). It knows nothing of codecs: turning a bitrate into frame rate,
//! size and quality is the video sender's business.

mod controller;
mod estimator;

pub use controller::{LinkSignals, RateConfig, RateController};
pub use estimator::LinkEstimator;
