//! Chinwag's client side of the WebSocket.
//!
//! This crate owns one participant's connection to a relay: turning what a person typed into
//! a `ws://` or `wss://` address, connecting (with the system's trusted roots plus an optional
//! CA file), joining, pinging every second to measure the round trip and estimate the relay's
//! clock ([`RelayClock`]), and reconnecting with backoff to rejoin the same room when the
//! connection drops. Its send path keeps audio ahead of video: control messages go first, then
//! every queued audio frame, then only the newest video frame.
//!
//! It deliberately knows nothing of codecs, devices or jitter: it carries bytes. Its main type
//! is [`Transport`], a handle whose network work runs on one named thread with its own small
//! tokio runtime, so that callers on audio or UI threads never block on the network: sending
//! only queues, and everything received arrives as [`TransportEvent`]s on a
//! `crossbeam-channel`.

mod address;
mod client;
mod clock;
mod socket;

pub use address::server_url;
pub use client::{
    LinkState, ReceivedMedia, ThreadSetup, Transport, TransportConfig, TransportEvent, TransportStats,
};
pub use clock::RelayClock;

use std::path::PathBuf;

use chinwag_proto::ErrorCode;

/// Why a connection could not be made or kept.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("\"{address}\" is not a relay address: {reason}")]
    BadAddress { address: String, reason: &'static str },
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    /// The relay's name does not resolve: most likely a typing mistake.
    #[error("no relay called \"{host}\" could be found: check the spelling of the address")]
    UnknownHost { host: String, reason: String },
    /// Something answered at the address but refused the connection: no relay listens there.
    #[error(
        "cannot reach relay at {url}: nothing is listening there (connection refused); check the port and that the relay is running"
    )]
    ConnectionRefused { url: String },
    #[error("cannot reach relay at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("TLS problem with {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url} did not answer as a Chinwag relay: {reason}")]
    NotARelay { url: String, reason: String },
    #[error("relay at {url} is full; try again later")]
    RelayFull { url: String },
    /// The relay refused the join or closed the call, with its own explanation.
    #[error("{message} ({code})")]
    Refused { code: ErrorCode, message: String },
    #[error("connection to {url} lost: {reason}")]
    Lost { url: String, reason: String },
}

impl TransportError {
    /// Whether trying again cannot help without the person changing something (the password,
    /// the room, the client version, the address), or must not be done: a connection
    /// `replaced` by a newer one of the same participant would throw that one out.
    pub fn is_permanent(&self) -> bool {
        match self {
            TransportError::BadAddress { .. }
            | TransportError::CaFile { .. }
            | TransportError::NotARelay { .. } => true,
            TransportError::Refused { code, .. } => matches!(
                code,
                ErrorCode::WrongPassword
                    | ErrorCode::RoomFull
                    | ErrorCode::Replaced
                    | ErrorCode::Unauthorized
                    | ErrorCode::UnsupportedVersion
                    | ErrorCode::BadRequest
            ),
            _ => false,
        }
    }

    /// Whether a first attempt that fails this way should be reported rather than retried:
    /// a name that does not resolve or a refused connection is a mistake to fix, not a
    /// moment to wait out. Once a call has been up, the same errors are retried (the relay
    /// may be restarting).
    pub fn fails_first_attempt(&self) -> bool {
        matches!(self, TransportError::UnknownHost { .. } | TransportError::ConnectionRefused { .. })
    }
}
