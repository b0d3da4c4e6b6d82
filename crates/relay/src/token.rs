//! Join tokens, as a sans-IO core: a relay's secret signs a grant (a room, optionally a
//! name, an expiry), and a relay that requires tokens admits only joins that bring one it
//! signed, for their room and name, before it expires. Nobody can then take an empty room
//! by joining it first, nor join a room at all, without a token from whoever runs the relay.
//!
//! A token is `cw1.` + the grant as JSON + `.` + its HMAC-SHA256, both in URL-safe base64
//! without padding, so that it can travel in a link or a shell argument as it is. It reads
//! no clock: callers pass `now`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "cw1.";
/// The shortest secret a relay accepts, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longer than any token this relay mints for a real room and name; anything longer is
/// refused before it is decoded.
const MAX_TOKEN_CHARS: usize = 1024;

/// The key that signs and checks tokens.
pub struct TokenKey(ring::hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a token lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub room: String,
    /// The only name the holder may join under; `None` is any name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seconds since 1970 after which the token no longer admits anyone.
    pub expires_unix_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("the token secret is shorter than {MIN_SECRET_BYTES} bytes")]
    SecretTooShort,
    #[error("the token is not a Chinwag join token")]
    Malformed,
    #[error("the token was not signed by this relay")]
    BadSignature,
    #[error("the token expired {} s ago", .0.as_secs())]
    Expired(Duration),
    #[error("the token is for room \"{0}\"")]
    OtherRoom(String),
    #[error("the token is for the name \"{0}\"")]
    OtherName(String),
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TokenError::SecretTooShort);
        }
        Ok(Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)))
    }

    pub fn mint(&self, grant: &Grant) -> String {
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).expect("a grant is only strings and a number"));
        let tag = ring::hmac::sign(&self.0, payload.as_bytes());
        format!("{PREFIX}{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The grant of `token` if this key signed it and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Grant, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) =
            token.strip_prefix(PREFIX).and_then(|rest| rest.split_once('.')).ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TokenError::Malformed)?;
        ring::hmac::verify(&self.0, payload.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let grant: Grant = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(grant.expires_unix_s);
        if let Ok(ago) = now.duration_since(expires)
            && !ago.is_zero()
        {
            return Err(TokenError::Expired(ago));
        }
        Ok(grant)
    }
}

impl Grant {
    /// A grant for `room` (and `name`, if given) that lasts `ttl` from `now`.
    pub fn new(room: &str, name: Option<&str>, now: SystemTime, ttl: Duration) -> Self {
        let expires = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().saturating_add(ttl);
        Self { room: room.to_owned(), name: name.map(str::to_owned), expires_unix_s: expires.as_secs() }
    }

    /// Whether this grant admits `name` into `room`.
    pub fn admits(&self, room: &str, name: &str) -> Result<(), TokenError> {
        if self.room != room {
            return Err(TokenError::OtherRoom(self.room.clone()));
        }
        match &self.name {
            Some(granted) if granted != name => Err(TokenError::OtherName(granted.clone())),
            _ => Ok(()),
        }
    }
}

/// Reads a time to live as people write it: `90s`, `30m`, `1h`, `7d`, or plain seconds.
pub fn parse_ttl(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "m" | "min" => number.checked_mul(60)?,
        "h" => number.checked_mul(3600)?,
        "d" => number.checked_mul(86_400)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TokenKey {
        TokenKey::new(&[byte; MIN_SECRET_BYTES]).unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_minted_token_admits_its_room_and_name_until_it_expires() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = key(1).mint(&Grant::new("standup", Some("Ada"), now, HOUR));
        assert!(token.starts_with("cw1.") && !token.contains(['+', '/', '=', ' ']), "{token}");
        let grant = key(1).verify(&token, now + HOUR / 2).unwrap();
        assert_eq!(grant.admits("standup", "Ada"), Ok(()));
        assert_eq!(grant.admits("other", "Ada"), Err(TokenError::OtherRoom("standup".into())));
        assert_eq!(grant.admits("standup", "Eve"), Err(TokenError::OtherName("Ada".into())));
        assert_eq!(
            key(1).verify(&token, now + HOUR + Duration::from_secs(5)),
            Err(TokenError::Expired(Duration::from_secs(5)))
        );
        let anyone = key(1).verify(&key(1).mint(&Grant::new("r", None, now, HOUR)), now).unwrap();
        assert_eq!(anyone.admits("r", "Whoever"), Ok(()));
    }

    #[test]
    fn forged_and_broken_tokens_are_refused_without_a_panic() {
        let now = SystemTime::now();
        let token = key(1).mint(&Grant::new("r", None, now, HOUR));
        assert_eq!(key(2).verify(&token, now), Err(TokenError::BadSignature), "another relay's secret");
        let (payload, tag) = token.rsplit_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(br#"{"room":"vip","expires_unix_s":99999999999}"#);
        assert_eq!(key(1).verify(&format!("cw1.{other}.{tag}"), now), Err(TokenError::BadSignature));
        for broken in [
            "",
            "cw1.",
            "cw1..",
            "cw2.a.b",
            "cw1.!!!.???",
            &format!("{}.{tag}", payload.trim_start_matches(PREFIX)),
            &"a".repeat(5000),
        ] {
            assert!(key(1).verify(broken, now).is_err(), "{broken:?}");
        }
        let unsigned_json = URL_SAFE_NO_PAD.encode(b"not json");
        let tag = ring::hmac::sign(&key(1).0, unsigned_json.as_bytes());
        let signed_garbage = format!("cw1.{unsigned_json}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(key(1).verify(&signed_garbage, now), Err(TokenError::Malformed));
        assert_eq!(TokenKey::new(b"short").err(), Some(TokenError::SecretTooShort));
    }

    #[test]
    fn times_to_live_read_as_people_write_them() {
        assert_eq!(parse_ttl("1h"), Some(HOUR));
        assert_eq!(parse_ttl("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("7d"), Some(Duration::from_secs(7 * 86_400)));
        for bad in ["", "h", "0s", "1y", "-1h", "99999999999999999999d"] {
            assert_eq!(parse_ttl(bad), None, "{bad:?}");
        }
    }
}
