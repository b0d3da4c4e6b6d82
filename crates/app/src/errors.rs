//! What went wrong, in words a person can act on.

use chinwag_engine::{ErrorCode, TransportError};

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
        TransportError::UnknownHost { host, .. } => Problem::new(
            "No relay by that name",
            format!("\"{host}\" could not be found. Check the spelling of the server address."),
        ),
        TransportError::ConnectionRefused { url } => Problem::new(
            "Nothing answers at that address",
            format!(
                "Nothing is listening at {} (the connection was refused). Check the port, and that the relay is running.",
                plain_address(url)
            ),
        ),
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
        // The relay's sentence says what was too much and when to try again.
        ErrorCode::RateLimited => Problem::new("Too many attempts", capitalise(message)),
        ErrorCode::Unauthorized => Problem::new("Not invited", capitalise(message)),
        ErrorCode::Replaced => Problem::new(
            "Joined again elsewhere",
            "This call went on on a newer connection of yours, which took this one's place.",
        ),
        _ => Problem::new("The relay refused the call", capitalise(message)),
    }
}

/// Why a connection dropped or an attempt failed, in one sentence, for the line under the
/// status while the engine retries.
pub fn describe_drop(error: &TransportError) -> String {
    match error {
        TransportError::Refused { .. } => {
            let problem = describe_failure(error);
            format!("{}. {}", problem.headline, problem.detail)
        }
        TransportError::ConnectionRefused { url } => {
            format!("Nothing is listening at {} yet.", plain_address(url))
        }
        TransportError::Unreachable { url, reason } => {
            format!("No answer from {} ({reason}).", plain_address(url))
        }
        TransportError::Lost { reason, .. } => format!("The connection dropped ({reason})."),
        other => describe_failure(other).detail,
    }
}

/// The relay's own reason for ending the connection, when it gave one worth keeping on the
/// screen while the engine retries.
pub fn relay_reason(error: &TransportError) -> Option<String> {
    let TransportError::Refused { code, message } = error else { return None };
    Some(match code {
        ErrorCode::ShuttingDown => "The relay is shutting down or restarting".to_owned(),
        ErrorCode::TooSlow => {
            "The relay dropped this connection: it could not keep up with the call".to_owned()
        }
        ErrorCode::Unavailable => "The relay cannot reach its cluster".to_owned(),
        ErrorCode::ServerFull => "The relay is full".to_owned(),
        _ => capitalise(message),
    })
}

/// A form field that is not valid, as a sentence: "Your name is empty."
pub fn describe_invalid(field: &str, error: &chinwag_engine::ProtoError) -> String {
    match error {
        chinwag_engine::ProtoError::Invalid { reason, .. } => format!("{field} is {reason}."),
        other => format!("{field} is not valid: {other}."),
    }
}

/// `host:port` of a relay URL, as a person would say it.
fn plain_address(url: &str) -> &str {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.strip_suffix(chinwag_engine::WS_PATH).unwrap_or(rest)
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
            (TransportError::Unreachable { url: url.clone(), reason: "timed out".into() }, "Cannot reach"),
            (
                TransportError::UnknownHost { host: "relay.exmaple".into(), reason: "x".into() },
                "No relay by that name",
            ),
            (TransportError::ConnectionRefused { url: url.clone() }, "Nothing answers"),
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
    fn a_guessing_limit_says_when_to_try_again() {
        let message = "too many wrong passwords from your address; try again in 42 s";
        let problem = describe_failure(&TransportError::Refused {
            code: ErrorCode::RateLimited,
            message: message.into(),
        });
        assert_eq!(problem.headline, "Too many attempts");
        assert_eq!(problem.detail, "Too many wrong passwords from your address; try again in 42 s");
    }

    #[test]
    fn jargon_stays_out_of_first_attempt_failures() {
        let unknown = TransportError::UnknownHost {
            host: "relay.exmaple".into(),
            reason: "failed to lookup address information: Name or service not known".into(),
        };
        let problem = describe_failure(&unknown);
        assert!(
            problem.detail.contains("relay.exmaple") && !problem.detail.contains("lookup"),
            "{problem:?}"
        );
        let refused =
            describe_failure(&TransportError::ConnectionRefused { url: "ws://relay:7301/v1".into() });
        assert!(refused.detail.contains("relay:7301") && !refused.detail.contains("os error"), "{refused:?}");
    }

    #[test]
    fn capitalises_the_first_letter_only() {
        assert_eq!(capitalise("cannot reach x"), "Cannot reach x");
        assert_eq!(capitalise(""), "");
    }
}
