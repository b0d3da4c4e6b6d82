//! Command-line flags and the optional config file, validated into a typed [`Config`].
//!
//! Every setting is a flag; a TOML file given with `--config` may set the same settings under
//! the same names (with dashes). Flags win over the file, and the file wins over defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chinwag_proto::{DEFAULT_PORT, MAX_NAME_CHARS};

use crate::token::{MIN_SECRET_BYTES, TokenKey};
use clap::Parser;
use serde::Deserialize;

/// The relay's flags, as typed by a person. Every field is optional so that the config file
/// and the defaults can fill what the command line leaves out.
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(name = "chinwag-relay", version, about = "The Chinwag relay: rooms, presence and media fan-out.")]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Args {
    /// Address and port to listen on [default: 0.0.0.0:7300].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// A TOML file with any of these settings (names as the flags, without the dashes in front).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// TLS certificate chain (PEM); with --tls-key, serves wss:// and https://.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Most participants in one room [default: 16].
    #[arg(long, value_name = "N")]
    pub max_participants: Option<usize>,

    /// Most open connections, joined or not [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most open connections from one source (an IPv4 address or an IPv6 /64), joined or
    /// not; 0 for no limit [default: 50]. Raise it when clients reach the relay through a NAT
    /// or a proxy that hides their addresses.
    #[arg(long, value_name = "N")]
    pub max_connections_per_source: Option<usize>,

    /// Most connections from one source that have not joined yet (TCP, TLS and WebSocket
    /// handshakes and `join`); 0 for no limit [default: 16].
    #[arg(long, value_name = "N")]
    pub max_handshakes_per_source: Option<usize>,

    /// Largest WebSocket message in bytes; a larger one closes the connection with 1009
    /// [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// A file holding the secret that signs join tokens: at least 32 bytes, for example from
    /// `openssl rand -hex 32`. Tokens are minted with `chinwag-relay token`.
    #[arg(long, value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,

    /// Admit only joins that bring a valid token for their room (and name, if the token
    /// names one): nobody can then take an empty room, or join one, without a token from
    /// whoever runs the relay. Needs --token-secret-file.
    #[arg(long)]
    #[serde(default)]
    pub require_token: bool,

    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,

    /// A web page origin (`https://call.example.com`) whose scripts may connect, besides the
    /// relay's own; repeat for more, `*` for any. Browsers say where a page came from and
    /// native clients do not; without this, pages from elsewhere are refused so that a site
    /// someone visits cannot join their calls.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    #[serde(default)]
    pub allow_origin: Vec<String>,

    /// Largest audio frame in bytes, header included; larger ones are dropped and counted
    /// [default: 4096]. Opus packets of a voice call are a few hundred bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_audio_frame_bytes: Option<usize>,

    /// Largest video frame in bytes, header included; larger ones are dropped and counted
    /// [default: --max-message-bytes].
    #[arg(long, value_name = "BYTES")]
    pub max_video_frame_bytes: Option<usize>,

    /// Seconds a new connection has to finish its handshake and send `join` [default: 5].
    #[arg(long, value_name = "SECONDS")]
    pub join_timeout: Option<f64>,

    /// Seconds without any message from a client before it is closed [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,

    /// Seconds between WebSocket pings the relay sends to keep idle clients alive [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub ping_interval: Option<f64>,

    /// Longest display name, in characters (at most 64) [default: 64].
    #[arg(long, value_name = "N")]
    pub max_name_chars: Option<usize>,

    /// WebSocket frames per second one connection may send, sustained, every kind counted
    /// (pings, pongs, continuation frames), before and after joining; twice this in a burst
    /// [default: 400].
    #[arg(long, value_name = "N")]
    pub max_messages_per_sec: Option<u32>,

    /// Bytes per second one connection may send, sustained; twice this in a burst
    /// [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub max_bytes_per_sec: Option<u64>,

    /// Bytes of audio and control queued for one receiver; past it the oldest audio is
    /// dropped [default: 262144].
    #[arg(long, value_name = "BYTES")]
    pub receiver_audio_bytes: Option<usize>,

    /// Bytes of video queued for one receiver; video beyond it is dropped [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub receiver_video_bytes: Option<usize>,

    /// Milliseconds the oldest queued audio frame for a receiver may wait before the receiver
    /// counts as too slow and is disconnected [default: 1000].
    #[arg(long, value_name = "MS")]
    pub receiver_max_delay_ms: Option<u64>,

    /// Kernel send buffer per connection in bytes, 0 for the system's own sizing
    /// [default: 262144]. A small one keeps a slow receiver's backlog in the relay's queue,
    /// where old video is replaced by new, instead of seconds of it in the kernel.
    #[arg(long, value_name = "BYTES")]
    pub socket_send_buffer: Option<usize>,

    /// Join a cluster of relays through the NATS server at this address (with JetStream
    /// enabled): rooms then span every relay that shares it. Without it the relay stands alone.
    #[arg(long, value_name = "nats://HOST:PORT")]
    pub cluster: Option<String>,

    /// This relay's name in the cluster [default: the host name].
    #[arg(long, value_name = "ID", requires = "cluster")]
    pub node_id: Option<String>,

    /// Seconds without a heartbeat after which another relay counts as dead and its
    /// participants leave [default: 3].
    #[arg(long, value_name = "SECONDS", requires = "cluster")]
    pub cluster_dead_after: Option<f64>,

    /// A CA certificate (PEM) to trust for a `tls://` NATS server besides the system's roots.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_ca_file: Option<PathBuf>,
}

/// What `chinwag-relay` can do besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Prints a join token for a room (and optionally a name), signed with the relay's token
    /// secret, for a relay that runs with --require-token.
    Token {
        #[arg(long)]
        room: String,
        /// The only name the token admits; without it, any name.
        #[arg(long)]
        name: Option<String>,
        /// How long the token admits joins: 90s, 30m, 1h, 7d.
        #[arg(long, value_name = "TTL", default_value = "1h")]
        ttl: String,
        /// The secret file, if not given to the relay's flags or config file.
        #[arg(long, value_name = "FILE")]
        token_secret_file: Option<PathBuf>,
    },
}

/// The relay's settings, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub max_participants: usize,
    pub max_connections: usize,
    /// `None` is no limit.
    pub max_connections_per_source: Option<usize>,
    /// `None` is no limit.
    pub max_handshakes_per_source: Option<usize>,
    pub max_message_bytes: usize,
    /// The key that checks join tokens, from `--token-secret-file`.
    pub token_key: Option<Arc<TokenKey>>,
    /// Whether every join needs a token.
    pub require_token: bool,
    /// Web origins whose pages may connect besides the relay's own (lower case, no trailing
    /// `/`); `*` is any.
    pub allow_origins: Vec<String>,
    pub max_audio_frame_bytes: usize,
    pub max_video_frame_bytes: usize,
    pub join_timeout: Duration,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    pub max_name_chars: usize,
    pub max_messages_per_sec: u32,
    pub max_bytes_per_sec: u64,
    pub receiver_audio_bytes: usize,
    pub receiver_video_bytes: usize,
    pub receiver_max_delay: Duration,
    pub socket_send_buffer: Option<usize>,
    pub cluster: Option<ClusterConfig>,
}

/// How to reach the cluster and how this relay appears in it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub url: String,
    pub node_id: String,
    pub dead_after: Duration,
    pub ca_file: Option<PathBuf>,
}

/// Where the TLS certificate chain and key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    ParseFile {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("--{flag} {reason}")]
    Invalid { flag: &'static str, reason: String },
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            tls: None,
            max_participants: 16,
            max_connections: 1000,
            max_connections_per_source: Some(50),
            max_handshakes_per_source: Some(16),
            max_message_bytes: 1 << 20,
            token_key: None,
            require_token: false,
            allow_origins: Vec::new(),
            max_audio_frame_bytes: 4 << 10,
            max_video_frame_bytes: 1 << 20,
            join_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(10),
            max_name_chars: MAX_NAME_CHARS,
            max_messages_per_sec: 400,
            max_bytes_per_sec: 8 << 20,
            receiver_audio_bytes: 256 << 10,
            receiver_video_bytes: 4 << 20,
            receiver_max_delay: Duration::from_millis(1000),
            socket_send_buffer: Some(256 << 10),
            cluster: None,
        }
    }
}

impl Args {
    /// Reads the config file named by `--config`, if any, and lets the flags override it.
    pub fn with_config_file(self) -> Result<Args, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = Args::from_file(&path)?;
        Ok(self.or(file))
    }

    fn from_file(path: &Path) -> Result<Args, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::ParseFile { path: path.to_owned(), source })
    }

    /// Each setting from `self` where given, else from `other`.
    fn or(self, other: Args) -> Args {
        Args {
            listen: self.listen.or(other.listen),
            config: self.config,
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            max_participants: self.max_participants.or(other.max_participants),
            max_connections: self.max_connections.or(other.max_connections),
            max_connections_per_source: self.max_connections_per_source.or(other.max_connections_per_source),
            max_handshakes_per_source: self.max_handshakes_per_source.or(other.max_handshakes_per_source),
            max_message_bytes: self.max_message_bytes.or(other.max_message_bytes),
            token_secret_file: self.token_secret_file.or(other.token_secret_file),
            require_token: self.require_token || other.require_token,
            command: self.command,
            allow_origin: if self.allow_origin.is_empty() { other.allow_origin } else { self.allow_origin },
            max_audio_frame_bytes: self.max_audio_frame_bytes.or(other.max_audio_frame_bytes),
            max_video_frame_bytes: self.max_video_frame_bytes.or(other.max_video_frame_bytes),
            join_timeout: self.join_timeout.or(other.join_timeout),
            idle_timeout: self.idle_timeout.or(other.idle_timeout),
            ping_interval: self.ping_interval.or(other.ping_interval),
            max_name_chars: self.max_name_chars.or(other.max_name_chars),
            max_messages_per_sec: self.max_messages_per_sec.or(other.max_messages_per_sec),
            max_bytes_per_sec: self.max_bytes_per_sec.or(other.max_bytes_per_sec),
            receiver_audio_bytes: self.receiver_audio_bytes.or(other.receiver_audio_bytes),
            receiver_video_bytes: self.receiver_video_bytes.or(other.receiver_video_bytes),
            receiver_max_delay_ms: self.receiver_max_delay_ms.or(other.receiver_max_delay_ms),
            socket_send_buffer: self.socket_send_buffer.or(other.socket_send_buffer),
            cluster: self.cluster.or(other.cluster),
            node_id: self.node_id.or(other.node_id),
            cluster_dead_after: self.cluster_dead_after.or(other.cluster_dead_after),
            cluster_ca_file: self.cluster_ca_file.or(other.cluster_ca_file),
        }
    }

    /// Fills defaults and checks every value.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(invalid("tls-cert", "and --tls-key must be given together")),
        };
        let max_message_bytes =
            at_least("max-message-bytes", self.max_message_bytes, 1024, defaults.max_message_bytes)?;
        let config = Config {
            listen: self.listen.unwrap_or(defaults.listen),
            tls,
            max_participants: at_least(
                "max-participants",
                self.max_participants,
                2,
                defaults.max_participants,
            )?,
            max_connections: at_least("max-connections", self.max_connections, 1, defaults.max_connections)?,
            max_connections_per_source: match self.max_connections_per_source {
                Some(0) => None,
                Some(n) => Some(n),
                None => defaults.max_connections_per_source,
            },
            max_handshakes_per_source: match self.max_handshakes_per_source {
                Some(0) => None,
                Some(n) => Some(n),
                None => defaults.max_handshakes_per_source,
            },
            max_message_bytes,
            token_key: self.token_secret_file.as_deref().map(read_token_key).transpose()?.map(Arc::new),
            require_token: self.require_token,
            allow_origins: self.allow_origin.into_iter().map(origin).collect::<Result<_, _>>()?,
            max_audio_frame_bytes: at_least(
                "max-audio-frame-bytes",
                self.max_audio_frame_bytes,
                256,
                defaults.max_audio_frame_bytes,
            )?,
            max_video_frame_bytes: at_least(
                "max-video-frame-bytes",
                self.max_video_frame_bytes,
                1024,
                max_message_bytes,
            )?,
            join_timeout: seconds("join-timeout", self.join_timeout, defaults.join_timeout)?,
            idle_timeout: seconds("idle-timeout", self.idle_timeout, defaults.idle_timeout)?,
            ping_interval: seconds("ping-interval", self.ping_interval, defaults.ping_interval)?,
            max_name_chars: at_least("max-name-chars", self.max_name_chars, 1, defaults.max_name_chars)?,
            max_messages_per_sec: at_least(
                "max-messages-per-sec",
                self.max_messages_per_sec,
                1,
                defaults.max_messages_per_sec,
            )?,
            max_bytes_per_sec: at_least(
                "max-bytes-per-sec",
                self.max_bytes_per_sec,
                1024,
                defaults.max_bytes_per_sec,
            )?,
            receiver_audio_bytes: at_least(
                "receiver-audio-bytes",
                self.receiver_audio_bytes,
                4096,
                defaults.receiver_audio_bytes,
            )?,
            receiver_video_bytes: at_least(
                "receiver-video-bytes",
                self.receiver_video_bytes,
                0,
                defaults.receiver_video_bytes,
            )?,
            receiver_max_delay: Duration::from_millis(at_least(
                "receiver-max-delay-ms",
                self.receiver_max_delay_ms,
                10,
                defaults.receiver_max_delay.as_millis() as u64,
            )?),
            socket_send_buffer: match self.socket_send_buffer {
                Some(0) => None,
                Some(bytes) => Some(at_least("socket-send-buffer", Some(bytes), 4096, bytes)?),
                None => defaults.socket_send_buffer,
            },
            cluster: match self.cluster {
                None => None,
                Some(url) => Some(ClusterConfig {
                    url: cluster_url(url)?,
                    node_id: node_id(self.node_id)?,
                    dead_after: seconds(
                        "cluster-dead-after",
                        self.cluster_dead_after,
                        Duration::from_secs(3),
                    )?,
                    ca_file: self.cluster_ca_file,
                }),
            },
        };
        if config.max_name_chars > MAX_NAME_CHARS {
            return Err(invalid("max-name-chars", format!("must be at most {MAX_NAME_CHARS}")));
        }
        for (flag, bytes) in [
            ("max-audio-frame-bytes", config.max_audio_frame_bytes),
            ("max-video-frame-bytes", config.max_video_frame_bytes),
        ] {
            if bytes > config.max_message_bytes {
                let limit = config.max_message_bytes;
                return Err(invalid(flag, format!("must be at most --max-message-bytes ({limit})")));
            }
        }
        if config.max_audio_frame_bytes > config.receiver_audio_bytes {
            return Err(invalid("max-audio-frame-bytes", "must be at most --receiver-audio-bytes"));
        }
        if config.require_token && config.token_key.is_none() {
            return Err(invalid("require-token", "needs --token-secret-file"));
        }
        if config.ping_interval >= config.idle_timeout {
            return Err(invalid("ping-interval", "must be shorter than --idle-timeout"));
        }
        Ok(config)
    }
}

/// The token key from the secret in `path`, white space around it left out.
pub fn read_token_key(path: &Path) -> Result<TokenKey, ConfigError> {
    let secret =
        std::fs::read(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    TokenKey::new(secret.trim_ascii()).map_err(|_| {
        let reason = format!(
            "{} must hold at least {MIN_SECRET_BYTES} bytes; make one with `openssl rand -hex 32`",
            path.display()
        );
        invalid("token-secret-file", reason)
    })
}

/// Accepts `*`, `null` or `http[s]://HOST[:PORT]`, as browsers write origins, in lower case.
fn origin(given: String) -> Result<String, ConfigError> {
    let origin = given.trim().trim_end_matches('/').to_ascii_lowercase();
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    let valid = origin == "*"
        || origin == "null"
        || authority.is_some_and(|authority| {
            !authority.is_empty()
                && !authority.contains(['/', '?', '#', '@', ' '])
                && !authority.starts_with(':')
        });
    if !valid {
        let reason = format!("must look like https://host or https://host:port, or be *, not \"{given}\"");
        return Err(invalid("allow-origin", reason));
    }
    Ok(origin)
}

/// Accepts `nats://HOST:PORT`, `tls://HOST:PORT` or a bare `HOST[:PORT]`.
fn cluster_url(url: String) -> Result<String, ConfigError> {
    let url = url.trim().to_owned();
    let rest = url
        .split_once("://")
        .map_or(url.as_str(), |(scheme, rest)| if matches!(scheme, "nats" | "tls") { rest } else { "" });
    if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
        return Err(invalid("cluster", format!("must look like nats://HOST:PORT, not \"{url}\"")));
    }
    Ok(if url.contains("://") { url } else { format!("nats://{url}") })
}

/// The node id as given, or the host name; letters, digits, `-` and `_` only, as it goes
/// into NATS subjects and logs.
fn node_id(given: Option<String>) -> Result<String, ConfigError> {
    let id = match given {
        Some(id) => id,
        None => std::fs::read_to_string("/etc/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .map(|name| name.trim().replace('.', "-"))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "relay".to_owned()),
    };
    let valid = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(invalid("node-id", format!("must be 1–64 letters, digits, - or _, not \"{id}\"")));
    }
    Ok(id)
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, reason: reason.into() }
}

fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    flag: &'static str,
    value: Option<T>,
    minimum: T,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        Some(value) if value < minimum => {
            Err(invalid(flag, format!("must be at least {minimum}, not {value}")))
        }
        Some(value) => Ok(value),
        None => Ok(default),
    }
}

fn seconds(flag: &'static str, value: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        Some(secs) => {
            Err(invalid(flag, format!("must be a number of seconds above 0 and at most a day, not {secs}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_flags() {
        let config = Args::parse_from(["chinwag-relay"]).into_config().unwrap();
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert_eq!(config.max_participants, 16);
        assert_eq!(config.max_message_bytes, 1 << 20);
        assert_eq!(config.join_timeout, Duration::from_secs(5));
        assert_eq!(config.max_audio_frame_bytes, 4096);
        assert_eq!(config.max_video_frame_bytes, config.max_message_bytes);
    }

    #[test]
    fn frame_limits_follow_the_message_limit() {
        let args = ["chinwag-relay", "--max-message-bytes", "100000"];
        let config = Args::parse_from(args).into_config().unwrap();
        assert_eq!(config.max_video_frame_bytes, 100_000, "video defaults to the message limit");
        let args = ["chinwag-relay", "--max-message-bytes", "100000", "--max-video-frame-bytes", "200000"];
        let error = Args::parse_from(args).into_config().unwrap_err();
        assert_eq!(error.to_string(), "--max-video-frame-bytes must be at most --max-message-bytes (100000)");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("chinwag-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax-participants = 4\njoin-timeout = 2.5\n")
            .unwrap();
        let args = Args::parse_from([
            "chinwag-relay",
            "--config",
            path.to_str().unwrap(),
            "--max-participants",
            "8",
        ]);
        let config = args.with_config_file().unwrap().into_config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.max_participants, 8);
        assert_eq!(config.join_timeout, Duration::from_millis(2500));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_name_the_flag() {
        let error = Args::parse_from(["chinwag-relay", "--join-timeout=-1"]).into_config().unwrap_err();
        assert!(error.to_string().starts_with("--join-timeout must be"), "{error}");
        let error = Args::parse_from(["chinwag-relay", "--max-participants", "1"]).into_config().unwrap_err();
        assert_eq!(error.to_string(), "--max-participants must be at least 2, not 1");
    }

    #[test]
    fn cluster_flags() {
        let config = Args::parse_from(["chinwag-relay"]).into_config().unwrap();
        assert!(config.cluster.is_none(), "a relay stands alone unless told otherwise");
        let args = ["chinwag-relay", "--cluster", "127.0.0.1:4222", "--node-id", "eu-1"];
        let cluster = Args::parse_from(args).into_config().unwrap().cluster.unwrap();
        assert_eq!(cluster.url, "nats://127.0.0.1:4222");
        assert_eq!(cluster.node_id, "eu-1");
        assert_eq!(cluster.dead_after, Duration::from_secs(3));
        let error = Args::parse_from(["chinwag-relay", "--cluster", "http://x:1"]).into_config().unwrap_err();
        assert!(error.to_string().starts_with("--cluster must look like nats://"), "{error}");
        let args = ["chinwag-relay", "--cluster", "nats://x:1", "--node-id", "a.b"];
        let error = Args::parse_from(args).into_config().unwrap_err();
        assert!(error.to_string().starts_with("--node-id must be"), "{error}");
        assert!(Args::try_parse_from(["chinwag-relay", "--node-id", "a"]).is_err(), "needs --cluster");
    }

    #[test]
    fn origins_are_checked_and_written_as_browsers_write_them() {
        let args = [
            "chinwag-relay",
            "--allow-origin",
            "https://Call.Example.com/",
            "--allow-origin",
            "http://x:8080",
        ];
        let config = Args::parse_from(args).into_config().unwrap();
        assert_eq!(config.allow_origins, ["https://call.example.com", "http://x:8080"]);
        let error = Args::parse_from(["chinwag-relay", "--allow-origin", "call.example.com"])
            .into_config()
            .unwrap_err();
        assert!(error.to_string().starts_with("--allow-origin must look like https://host"), "{error}");
        let file: Args = toml::from_str("allow-origin = [\"https://a.example\"]").unwrap();
        assert_eq!(file.into_config().unwrap().allow_origins, ["https://a.example"]);
        assert!(Args::parse_from(["chinwag-relay"]).into_config().unwrap().allow_origins.is_empty());
    }

    #[test]
    fn requiring_tokens_needs_a_secret_of_some_length() {
        let error = Args::parse_from(["chinwag-relay", "--require-token"]).into_config().unwrap_err();
        assert_eq!(error.to_string(), "--require-token needs --token-secret-file");
        let dir = std::env::temp_dir().join(format!("chinwag-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (short, good) = (dir.join("short"), dir.join("good"));
        std::fs::write(&short, "tooshort\n").unwrap();
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        let args = ["chinwag-relay", "--require-token", "--token-secret-file", short.to_str().unwrap()];
        let error = Args::parse_from(args).into_config().unwrap_err();
        assert!(error.to_string().contains("at least 32 bytes"), "{error}");
        let args = ["chinwag-relay", "--require-token", "--token-secret-file", good.to_str().unwrap()];
        let config = Args::parse_from(args).into_config().unwrap();
        assert!(config.require_token && config.token_key.is_some());
        let args = ["chinwag-relay", "token", "--room", "r", "--ttl", "2h"];
        assert!(matches!(Args::parse_from(args).command, Some(Command::Token { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(toml::from_str::<Args>("max-partcipants = 3").is_err());
    }
}
