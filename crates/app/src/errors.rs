//! What went wrong, in words a person can act on.

use chinwag_proto::ErrorCode;
use chinwag_transport::TransportError;

/// A failure that ended the call, as the connect screen shows it: a short headline and a
/// sentence on what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub headline: String,
    pub detail: String,
}

impl Problem {
    pub fn new(headline: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { headline: headline.into(), detail: detail.into() }
    }
}

/// Describes why the call could not start or go on.
pub fn describe_failure(error: &TransportError) -> Problem {
    match error {
        TransportError::BadAddress { address, reason } => Problem::new(
            "That is not a relay address",
            format!("\"{address}\": {reason}. Type host:port, ws://host:port or wss://host:port."),
        ),
        TransportError::CaFile { path, reason } => {
            Problem::new("Cannot read the certificate file", format!("{}: {reason}.", path.display()))
        }
        TransportError::Unreachable { url, reason } => Problem::new(
            "Cannot reach the relay",
            format!("Nothing answered at {url} ({reason}). Check the address and that the relay is running."),
        ),
        TransportError::Tls { url, reason } => Problem::new(
            "Secure connection failed (TLS problem)",
            format!(
                "{url}: {reason}. Use ws:// if the relay has no TLS, or make sure its certificate is trusted."
            ),
        ),
        TransportError::NotARelay { url, reason } => Problem::new(
            "That address is not a Chinwag relay",
            format!("{url} answered, but not as a Chinwag relay ({reason}). Check the address and port."),
        ),
        TransportError::RelayFull { url } => Problem::new(
            "The relay is full",
            format!("{url} has as many callers as it allows. Try again later."),
        ),
        TransportError::Refused { code, message } => describe_refusal(*code, message),
        TransportError::Lost { url, reason } => {
            Problem::new("Connection lost", format!("The connection to {url} dropped ({reason})."))
        }
        // A variant added later: its own message is the best we have.
        other => Problem::new("The call could not go on", capitalise(&other.to_string())),
    }
}

fn describe_refusal(code: ErrorCode, message: &str) -> Problem {
    match code {
        ErrorCode::WrongPassword => Problem::new(
            "Wrong password",
            "This room has a password and the one given does not match. Check it and join again.",
        ),
        ErrorCode::RoomFull => Problem::new(
            "The room is full",
            "This room has as many participants as the relay allows. Try another room or later.",
        ),
        ErrorCode::UnsupportedVersion => Problem::new(
            "Version mismatch",
            format!(
                "The relay does not speak this version of Chinwag ({}). Update the app or the relay.",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        ErrorCode::ServerFull => {
            Problem::new("The relay is full", "It has as many callers as it allows. Try again later.")
        }
        ErrorCode::ShuttingDown => Problem::new("The relay is shutting down", "Try again in a moment."),
        ErrorCode::Unavailable => Problem::new(
            "The relay cannot reach its cluster",
            "It cannot check this room right now. Try again in a moment.",
        ),
        _ => Problem::new("The relay refused the call", capitalise(message)),
    }
}

/// The headline shown while the engine retries a dropped or not yet made connection.
pub fn describe_retry(joined_before: bool) -> &'static str {
    if joined_before { "Connection lost. Reconnecting…" } else { "Cannot reach the relay yet. Retrying…" }
}

/// Upper-cases the first letter of a sentence.
pub fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_names_its_problem() {
        let url = "ws://relay.example:7300/v1".to_owned();
        let cases = [
            (TransportError::Unreachable { url: url.clone(), reason: "refused".into() }, "Cannot reach"),
            (TransportError::Tls { url: url.clone(), reason: "bad cert".into() }, "TLS"),
            (TransportError::RelayFull { url: url.clone() }, "full"),
            (TransportError::Lost { url: url.clone(), reason: "reset".into() }, "lost"),
            (
                TransportError::Refused { code: ErrorCode::WrongPassword, message: "x".into() },
                "Wrong password",
            ),
            (TransportError::Refused { code: ErrorCode::RoomFull, message: "x".into() }, "room is full"),
            (TransportError::Refused { code: ErrorCode::UnsupportedVersion, message: "x".into() }, "Version"),
        ];
        for (error, words) in cases {
            let problem = describe_failure(&error);
            assert!(problem.headline.contains(words), "{problem:?} should say {words:?}");
        }
    }

    #[test]
    fn capitalises_the_first_letter_only() {
        assert_eq!(capitalise("cannot reach x"), "Cannot reach x");
        assert_eq!(capitalise(""), "");
    }
}
