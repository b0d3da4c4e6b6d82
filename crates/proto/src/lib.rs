//! The Chinwag wire protocol, version 1.
//!
//! This crate owns everything that crosses the wire between a client and the relay: the JSON
//! control messages ([`ClientMessage`], [`ServerMessage`]) carried in WebSocket text frames, and
//! the 24-byte binary header ([`MediaHeader`]) in front of every audio and video payload carried
//! in binary frames. It validates strictly and never panics on bytes from the network.
//!
//! It deliberately does no IO: no sockets, no clocks, no tokio. Callers hand it bytes and get
//! typed values or a [`ProtoError`] back. `docs/protocol.md` at the repository root is the
//! human-readable specification of the same format, written for people implementing other
//! clients.

mod control;
mod media;
mod validate;

pub use control::{
    ClientMessage, ErrorCode, ErrorMessage, Join, Peer, PeerState, ServerMessage, StateUpdate, Welcome,
    parse_client_message, parse_server_message,
};
pub use media::{
    HEADER_LEN, MediaFlags, MediaHeader, MediaKind, MediaTimestamp, SeqNo, VideoLayer, encode_frame,
    rewrite_sender_id,
};
pub use validate::{
    MAX_NAME_CHARS, MAX_PASSWORD_BYTES, MAX_ROOM_CHARS, validate_name, validate_password, validate_room,
};

/// The protocol version this crate speaks, sent in `join` and in byte 0 of every media header.
pub const PROTOCOL_VERSION: u8 = 1;

/// The HTTP path on which the relay accepts WebSocket connections for this version.
pub const WS_PATH: &str = "/v1";

/// The TCP port the relay listens on when none is given, and that clients assume when an
/// address has no port.
pub const DEFAULT_PORT: u16 = 7300;

/// A participant id, assigned by the relay and unique within it while the participant is
/// connected. The relay writes it into every media header it forwards.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ParticipantId(pub u32);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A point on the relay's clock, in microseconds since an epoch the relay chose (its start).
///
/// Clients estimate the relay clock from `pong` messages and stamp capture times with it, so
/// that every receiver can compare a frame's capture time with its own estimate of "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RelayTime(u64);

impl RelayTime {
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this time is, or zero when it is not after it.
    pub fn saturating_since(self, earlier: RelayTime) -> std::time::Duration {
        std::time::Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// WebSocket close codes the relay uses, so that clients can tell why they were closed even
/// when the preceding `error` message was lost.
pub mod close_code {
    /// The relay is shutting down (RFC 6455 "going away").
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke a rule: bad message, wrong password, too fast, too slow, no join in time.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message was larger than the relay accepts (RFC 6455 "message too big").
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The room or the relay is full: the client may try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Everything that can be wrong with bytes that claim to be protocol v1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    #[error("media frame is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated { len: usize },
    #[error("media frame has protocol version {0}, this build speaks version {PROTOCOL_VERSION}")]
    BadMediaVersion(u8),
    #[error("media frame has unknown kind {0} (1 is audio, 2 is video)")]
    BadMediaKind(u8),
    #[error("control message is not valid protocol JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error("protocol version {0} is not supported: this relay speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion(u64),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: &'static str },
}
