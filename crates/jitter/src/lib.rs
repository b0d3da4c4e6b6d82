//! The adaptive audio jitter buffer: one per remote participant.
//!
//! This crate owns the decision of what to play next from a participant's audio stream. It
//! takes each Opus packet as it arrives, with its sequence number, media timestamp and arrival
//! time, learns how unevenly packets arrive, and sets a target delay from that. Each time the
//! playout side needs a frame it answers with a [`Playout`]: decode this frame, recover a
//! missing one from the next frame's FEC, conceal, or play silence. It sheds frames a few at a
//! time when too much audio has piled up (the burst after a TCP stall) and keeps the delay
//! bounded when the sender's clock runs faster or slower than ours.
//!
//! It deliberately does no IO and keeps no time of its own: no clock reads, threads, sockets,
//! logging or async runtime. The caller passes `now` in, so that tests can replay seeded
//! network traces in virtual time. Payloads are opaque bytes: decoding, FEC decoding and loss
//! concealment happen in the codec, and mixing elsewhere. The main type is [`JitterBuffer`],
//! configured by [`JitterConfig`] and observed through [`JitterStats`].
//!
//! # How it decides
//!
//! *Delay estimation.* A packet's transit is its arrival time minus its media time. The
//! baseline is the smallest transit within the last two seconds (so it follows clock drift), and
//! a packet's relative delay is its transit minus the baseline. Relative delays go into a
//! histogram of 5 ms buckets whose weights fade by a constant factor per packet, with a time
//! constant of 20 seconds. The target delay is the histogram's 95th percentile plus a 10 ms
//! margin, clamped to `[min_delay, max_delay]`. A single stall is a few percent of that memory
//! and barely moves the target; stalls every few seconds raise it to cover part of them; when
//! the network calms, the target comes back down within a minute.
//!
//! *Playout delay.* The delay the buffer adds is how long after its earliest possible arrival
//! (media time plus baseline) a frame is played. Each poll plays the frame at the cursor, so the
//! delay stays put while frames keep coming. It grows only when a frame is not there in time:
//! the buffer conceals and keeps waiting for the same frame, which adds one frame of delay, up to
//! `max_delay`, past which it gives up and re-buffers. It never inserts concealment while the
//! frame due is at hand: without time-stretching, that would cost as much as the underrun it
//! tries to avoid. It shrinks by dropping a frame when the delay has stayed at least a frame
//! above target for a while: 200 ms for one frame of excess, proportionally less for more, but
//! never more often than every 60 ms. After a 400 ms TCP stall, concealed while it lasts,
//! playback resumes where the stream stopped rather than skipping what the stall held back, and
//! the excess is shed a frame at a time within about a second. A 200 ppm clock drift costs one
//! dropped or concealed frame every 100 s.
//!
//! *Missing frames.* When the frame due is missing but a later one is here, it is given up:
//! recovered from the next frame's FEC when that one is here, concealed otherwise. (While the
//! delay is still below target the buffer waits for it instead, as it is more likely reordered
//! than lost.) A packet that arrives after its turn is counted late and discarded. A `RESTART`
//! flag, or a timestamp that does not fit its sequence number, starts the stream afresh and
//! re-buffers to the target learned so far.

mod buffer;
mod config;
mod estimator;

pub use buffer::{JitterBuffer, JitterStats, PacketFlags, Playout};
pub use config::{JitterConfig, JitterError};

#[cfg(feature = "sim")]
pub mod sim;
