//! Rules for the strings a client chooses: names, rooms and passwords.
//!
//! These are the protocol's outer limits; a relay may be configured stricter.

use crate::ProtoError;

/// The longest display name, in characters, that the protocol allows.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest room name, in characters, that the protocol allows.
pub const MAX_ROOM_CHARS: usize = 64;
/// The longest password, in bytes of UTF-8, that the protocol allows.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// A display name: 1 to `max_chars` characters, no control characters, not blank, and no
/// leading or trailing white space (so that two names that look the same are the same).
pub fn validate_name(name: &str, max_chars: usize) -> Result<(), ProtoError> {
    validate_label("name", name, max_chars)
}

/// A room name: the same rules as a display name.
pub fn validate_room(room: &str, max_chars: usize) -> Result<(), ProtoError> {
    validate_label("room", room, max_chars)
}

/// A password: at most [`MAX_PASSWORD_BYTES`] bytes; an empty string counts as no password.
pub fn validate_password(password: Option<&str>) -> Result<(), ProtoError> {
    match password {
        Some(password) if password.len() > MAX_PASSWORD_BYTES => {
            Err(ProtoError::Invalid { field: "password", reason: "longer than 256 bytes" })
        }
        _ => Ok(()),
    }
}

fn validate_label(field: &'static str, text: &str, max_chars: usize) -> Result<(), ProtoError> {
    let invalid = |reason| Err(ProtoError::Invalid { field, reason });
    if text.trim().is_empty() {
        return invalid("empty");
    }
    if text.chars().count() > max_chars {
        return invalid("too long");
    }
    if text.chars().any(char::is_control) {
        return invalid("contains control characters");
    }
    if text.trim() != text {
        return invalid("starts or ends with white space");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("Ada Lovelace", 64).is_ok());
        assert!(validate_name("Zoë 🎙", 64).is_ok());
        assert!(validate_name("", 64).is_err());
        assert!(validate_name("   ", 64).is_err());
        assert!(validate_name(" Ada", 64).is_err());
        assert!(validate_name("A\nda", 64).is_err());
        assert!(validate_name("A\u{7}da", 64).is_err());
        assert!(validate_name(&"é".repeat(64), 64).is_ok());
        assert!(validate_name(&"é".repeat(65), 64).is_err());
    }

    #[test]
    fn passwords() {
        assert!(validate_password(None).is_ok());
        assert!(validate_password(Some("")).is_ok());
        assert!(validate_password(Some(&"x".repeat(256))).is_ok());
        assert!(validate_password(Some(&"x".repeat(257))).is_err());
    }
}
