//! From what a person types to the WebSocket URL of a relay.

use chinwag_proto::{DEFAULT_PORT, WS_PATH};

use crate::TransportError;

/// Turns `host`, `host:port`, `ws://host`, `wss://host:port` or a full `.../v1` URL into the
/// relay's WebSocket URL, adding `ws://`, the default port and `/v1` where they are missing.
pub fn server_url(typed: &str) -> Result<String, TransportError> {
    let bad = |reason| TransportError::BadAddress { address: typed.to_owned(), reason };
    let typed_trimmed = typed.trim();
    if typed_trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let (scheme, rest) = match typed_trimmed.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("ws".to_owned(), typed_trimmed),
    };
    let scheme = match scheme.as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(bad("it must start with ws:// or wss://")),
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, ""),
    };
    if !path.is_empty() && path != "/" && path != WS_PATH {
        return Err(bad("the only path a relay serves is /v1"));
    }
    let (host, port) =
        split_host_port(authority).ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        return Err(bad("it has no valid host name"));
    }
    Ok(format!("{scheme}://{host}:{}{WS_PATH}", port.unwrap_or(DEFAULT_PORT)))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `None` when a port is there but invalid.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let parse_port = |port: &str| port.parse::<u16>().ok().filter(|&p| p != 0);
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let host = &authority[..=end];
        return match &authority[end + 1..] {
            "" => Some((host, None)),
            rest => Some((host, Some(parse_port(rest.strip_prefix(':')?)?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(parse_port(port)?))),
        // More than one colon without brackets: an IPv6 address typed without them.
        Some(_) => None,
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_people_type_becomes_a_relay_url() {
        let cases = [
            ("example.org", "ws://example.org:7300/v1"),
            ("example.org:9000", "ws://example.org:9000/v1"),
            ("  ws://10.0.0.2  ", "ws://10.0.0.2:7300/v1"),
            ("wss://relay.example.org", "wss://relay.example.org:7300/v1"),
            ("WSS://relay.example.org:443/v1", "wss://relay.example.org:443/v1"),
            ("https://relay.example.org/", "wss://relay.example.org:7300/v1"),
            ("[::1]", "ws://[::1]:7300/v1"),
            ("ws://[::1]:7301", "ws://[::1]:7301/v1"),
        ];
        for (typed, url) in cases {
            assert_eq!(server_url(typed).unwrap(), url, "{typed}");
        }
    }

    #[test]
    fn nonsense_is_explained() {
        for (typed, says) in [
            ("", "empty"),
            ("ftp://x", "ws://"),
            ("host:port", "port"),
            ("host:70000", "port"),
            ("host:0", "port"),
            ("ws://host/other", "/v1"),
            ("ws://:7300", "host"),
            ("my host", "host"),
            ("a:b:c", "port"),
        ] {
            let error = server_url(typed).unwrap_err().to_string();
            assert!(error.contains(says), "{typed:?}: {error}");
        }
    }
}
