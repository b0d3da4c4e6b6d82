//! JSON control messages, carried in WebSocket text frames and tagged by `"type"`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{PROTOCOL_VERSION, ParticipantId, ProtoError};

/// A message from a client to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The first message on every connection.
    Join(Join),
    /// The client's microphone or camera changed; the relay tells the others.
    State(StateUpdate),
    /// A clock probe; the relay answers with [`ServerMessage::Pong`] at once.
    Ping {
        client_time_us: u64,
        /// Bytes the client has received on this connection so far: the relay learns how fast
        /// its link to this client really delivers. Absent from older clients.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        received_bytes: Option<u64>,
    },
}

/// The `join` message: which room, under which name, with which password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The protocol version the client speaks; the relay refuses any but its own.
    pub version: u64,
    pub room: String,
    pub name: String,
    /// The room password. The first joiner of an empty room sets it (or leaves the room open
    /// with `null`); later joiners must give the same.
    #[serde(default)]
    pub password: Option<String>,
    /// The `resume` secret of this client's previous connection to the same room, when it
    /// rejoins: the relay ends that connection if it is still there, so that a connection that
    /// only looks alive never keeps the client out of its own place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// A join token from whoever runs the relay (`chinwag-relay token`), for relays that admit
    /// only token holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The `state` message: a client's own mute and camera state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateUpdate {
    pub muted: bool,
    pub camera: bool,
}

/// A message from the relay to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded.
    Welcome(Welcome),
    /// Something went wrong; unless the code says otherwise the relay closes the connection.
    Error(ErrorMessage),
    PeerJoined {
        peer: Peer,
    },
    PeerLeft {
        id: ParticipantId,
    },
    PeerState(PeerState),
    /// The answer to a ping: the client's time echoed back, and the relay's clock.
    Pong {
        client_time_us: u64,
        server_time_us: u64,
        /// Bytes the relay has received from this client on this connection so far: the
        /// client learns how fast its uplink really delivers. Absent from older relays.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        received_bytes: Option<u64>,
    },
}

/// The answer to a successful join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The id the relay gave this participant; it appears as sender id on its media.
    pub id: ParticipantId,
    pub room: String,
    /// Everyone else already in the room.
    pub peers: Vec<Peer>,
    /// The relay's clock when it sent this message, in microseconds.
    pub server_time_us: u64,
    /// A secret for this place in the room, to send as `join.resume` when rejoining. Absent
    /// from older relays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: ParticipantId,
    pub name: String,
    pub muted: bool,
    pub camera: bool,
}

/// The `peer_state` message: another participant's mute and camera state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    pub id: ParticipantId,
    pub muted: bool,
    pub camera: bool,
}

/// The `error` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub code: ErrorCode,
    /// A sentence a person can act on.
    pub message: String,
    /// With `rate_limited`: whole seconds until an attempt may succeed. Absent from older
    /// relays and from other errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// Why the relay refused or closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// A message was malformed, out of order or invalid (a bad name, media before join).
    BadRequest,
    /// The `join` named a protocol version the relay does not speak.
    UnsupportedVersion,
    /// The room has a password and the join did not give it.
    WrongPassword,
    /// The room has as many participants as the relay allows.
    RoomFull,
    /// The relay has as many connections as it allows.
    ServerFull,
    /// A message was larger than the relay accepts.
    TooLarge,
    /// The client sent more messages or bytes per second than the relay accepts.
    RateLimited,
    /// The client did not join in time, or went silent.
    Timeout,
    /// The client did not read what the relay sent it fast enough.
    TooSlow,
    /// The relay is shutting down.
    ShuttingDown,
    /// The relay cannot check the room right now (a clustered relay lost its link to the
    /// cluster); try again in a moment.
    Unavailable,
    /// The same participant joined again on another connection (with this one's `resume`
    /// secret), which takes this one's place.
    Replaced,
    /// The relay admits only joins with a valid token for the room (and name), and this one
    /// brought none, or one that is expired, forged, or for another room or name.
    Unauthorized,
    /// A code this build does not know, from a newer relay.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooSlow => "too_slow",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Replaced => "replaced",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClientMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client messages contain only strings, numbers and booleans")
    }
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages contain only strings, numbers and booleans")
    }

    /// An `error` message with `code` and a human-readable `message`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error(ErrorMessage { code, message: message.into(), retry_after_s: None })
    }

    /// An `error` message that also says how long to wait before trying again.
    pub fn error_retry_after(code: ErrorCode, message: impl Into<String>, retry_after: Duration) -> Self {
        let retry_after_s = Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0));
        ServerMessage::Error(ErrorMessage { code, message: message.into(), retry_after_s })
    }
}

/// Parses a text frame from a client.
///
/// A `join` whose version is not [`PROTOCOL_VERSION`] is [`ProtoError::UnsupportedVersion`],
/// even when the rest of it does not match this version's shape, so that an old relay can
/// tell a new client why it was refused.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtoError> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Join(join)) if join.version != u64::from(PROTOCOL_VERSION) => {
            Err(ProtoError::UnsupportedVersion(join.version))
        }
        Ok(message) => Ok(message),
        Err(error) => {
            Err(foreign_join_version(text).map_or(ProtoError::BadJson(error), ProtoError::UnsupportedVersion))
        }
    }
}

/// Parses a text frame from the relay.
pub fn parse_server_message(text: &str) -> Result<ServerMessage, ProtoError> {
    serde_json::from_str(text).map_err(ProtoError::BadJson)
}

/// The version of a `join` that did not parse as a version 1 join, if it names another one.
fn foreign_join_version(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct AnyJoin {
        #[serde(rename = "type")]
        kind: String,
        version: u64,
    }
    let join: AnyJoin = serde_json::from_str(text).ok()?;
    (join.kind == "join" && join.version != u64::from(PROTOCOL_VERSION)).then_some(join.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn join_parses_from_the_documented_form() {
        let text = r#"{"type":"join","version":1,"room":"standup","name":"Ada","password":null}"#;
        let message = parse_client_message(text).unwrap();
        assert_eq!(
            message,
            ClientMessage::Join(Join {
                version: 1,
                room: "standup".into(),
                name: "Ada".into(),
                password: None,
                resume: None,
                token: None,
            })
        );
    }

    #[test]
    fn resume_secrets_travel_only_when_there_is_one() {
        let text = r#"{"type":"join","version":1,"room":"r","name":"n","resume":"00ff"}"#;
        let Ok(ClientMessage::Join(join)) = parse_client_message(text) else { panic!("a join") };
        assert_eq!(join.resume.as_deref(), Some("00ff"));
        let join = Join { resume: None, ..join };
        assert!(!ClientMessage::Join(join).to_json().contains("resume"), "older relays see no new field");
        let text = r#"{"type":"welcome","id":1,"room":"r","peers":[],"server_time_us":0,"resume":"ab"}"#;
        let Ok(ServerMessage::Welcome(welcome)) = parse_server_message(text) else { panic!("a welcome") };
        assert_eq!(welcome.resume.as_deref(), Some("ab"));
    }

    #[test]
    fn password_may_be_omitted() {
        let text = r#"{"type":"join","version":1,"room":"r","name":"n"}"#;
        assert!(matches!(parse_client_message(text), Ok(ClientMessage::Join(Join { password: None, .. }))));
    }

    #[test]
    fn other_versions_are_unsupported_even_with_another_shape() {
        let text = r#"{"type":"join","version":2,"room":"r","name":"n"}"#;
        assert!(matches!(parse_client_message(text), Err(ProtoError::UnsupportedVersion(2))));
        let text = r#"{"type":"join","version":3,"rooms":["a","b"]}"#;
        assert!(matches!(parse_client_message(text), Err(ProtoError::UnsupportedVersion(3))));
    }

    #[test]
    fn garbage_is_bad_json() {
        for text in
            ["", "{", "[]", r#"{"type":"dance"}"#, r#"{"type":"state","muted":1}"#, r#"{"version":1}"#]
        {
            assert!(matches!(parse_client_message(text), Err(ProtoError::BadJson(_))), "{text}");
        }
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let welcome = ServerMessage::Welcome(Welcome {
            id: ParticipantId(3),
            room: "r".into(),
            peers: vec![Peer { id: ParticipantId(1), name: "Ada".into(), muted: false, camera: true }],
            server_time_us: 42,
            resume: None,
        });
        assert_eq!(
            welcome.to_json(),
            r#"{"type":"welcome","id":3,"room":"r","peers":[{"id":1,"name":"Ada","muted":false,"camera":true}],"server_time_us":42}"#
        );
        assert_eq!(
            ServerMessage::error(ErrorCode::RoomFull, "full").to_json(),
            r#"{"type":"error","code":"room_full","message":"full"}"#
        );
        assert_eq!(
            ServerMessage::PeerLeft { id: ParticipantId(9) }.to_json(),
            r#"{"type":"peer_left","id":9}"#
        );
        assert_eq!(
            ServerMessage::PeerState(PeerState { id: ParticipantId(9), muted: true, camera: false })
                .to_json(),
            r#"{"type":"peer_state","id":9,"muted":true,"camera":false}"#
        );
        assert_eq!(
            ServerMessage::Pong { client_time_us: 1, server_time_us: 2, received_bytes: None }.to_json(),
            r#"{"type":"pong","client_time_us":1,"server_time_us":2}"#
        );
        // The byte counts are optional both ways: older peers neither send nor expect them.
        let pong = ServerMessage::Pong { client_time_us: 1, server_time_us: 2, received_bytes: Some(3) };
        assert_eq!(
            pong.to_json(),
            r#"{"type":"pong","client_time_us":1,"server_time_us":2,"received_bytes":3}"#
        );
        assert_eq!(
            parse_client_message(r#"{"type":"ping","client_time_us":5}"#).unwrap(),
            ClientMessage::Ping { client_time_us: 5, received_bytes: None }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"ping","client_time_us":5,"received_bytes":6}"#).unwrap(),
            ClientMessage::Ping { client_time_us: 5, received_bytes: Some(6) }
        );
    }

    #[test]
    fn unknown_error_codes_from_newer_relays_still_parse() {
        let text = r#"{"type":"error","code":"solar_flare","message":"try later"}"#;
        assert_eq!(
            parse_server_message(text).unwrap(),
            ServerMessage::error(ErrorCode::Unknown, "try later")
        );
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse_client_message(&text);
            let _ = parse_server_message(&text);
        }

        #[test]
        fn join_round_trips(room in "\\PC{1,20}", name in "\\PC{1,20}", password in proptest::option::of("\\PC{0,20}")) {
            let message = ClientMessage::Join(Join { version: 1, room, name, password, resume: None, token: None });
            prop_assert_eq!(parse_client_message(&message.to_json()).unwrap(), message);
        }
    }
}
