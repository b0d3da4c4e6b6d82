//! End-to-end test helpers: start real relay processes and talk to them over real sockets.
//!
//! Used by the relay's integration tests and by the load generators in `src/bin/`. Nothing
//! here reaches beyond loopback.

pub mod audio;
pub mod clip;
pub mod display;
pub mod link;
pub mod linkcall;
pub mod load;
pub mod nats;
pub mod throttle;

pub use link::{Direction, LinkConfig, LinkEmulator};
pub use nats::NatsServer;
pub use throttle::ThrottledProxy;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chinwag_proto::{
    ClientMessage, Join, MediaFlags, MediaHeader, MediaKind, MediaTimestamp, ParticipantId, RelayTime, SeqNo,
    ServerMessage, Welcome, encode_frame, parse_server_message,
};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// A binary of this workspace next to the running program: the benchmark programs run the
/// relay and the bot built beside them (`cargo build --release -p chinwag-relay -p
/// chinwag-bot -p chinwag-e2e`).
pub fn sibling_binary(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .expect("the program knows where it is")
        .with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// A binary of this workspace, next to the running test: `cargo test --workspace` builds
/// `chinwag-relay` (the relay crate has integration tests, so cargo builds its binary first).
/// Panics with the command to run when it is missing.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test knows where it runs from");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (or run `cargo test --workspace`)",
        path.display()
    );
    path
}

/// A relay running as a child process, killed when dropped.
pub struct RelayProcess {
    child: Child,
    /// `ws://127.0.0.1:PORT` or `wss://...`, as the relay printed it.
    pub url: String,
    pub addr: SocketAddr,
}

impl RelayProcess {
    /// Starts `binary` with `args` (plus `--listen 127.0.0.1:0` unless `args` has `--listen`)
    /// and waits for its "listening on" line.
    pub fn start(binary: &Path, args: &[&str]) -> anyhow::Result<RelayProcess> {
        let mut command = Command::new(binary);
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "chinwag_relay=warn");
        }
        let mut child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = line_tx.send(first);
            // Keep draining so that the relay never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match line_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                bail!("relay did not say where it listens: {other:?}");
            }
        };
        let url = line
            .strip_prefix("chinwag-relay listening on ")
            .ok_or_else(|| anyhow!("unexpected first line from relay: {line:?}"))?
            .to_owned();
        let addr = url.split("://").nth(1).unwrap_or_default().parse().context("relay address")?;
        Ok(RelayProcess { child, url, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the relay process in KiB (Linux only).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line =
            status.lines().find(|line| line.starts_with("VmRSS:")).ok_or_else(|| anyhow!("no VmRSS"))?;
        Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
    }

    /// User plus system CPU time the relay has used so far (Linux only).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        process_cpu_time(self.pid())
    }

    /// Sends SIGTERM and waits for the process to exit (Unix only).
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("relay did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU time process `pid` has used so far (Linux only: read from `/proc`).
pub fn process_cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let per_sec = clock_ticks_per_sec();
    Ok(Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// What a client received.
#[derive(Debug)]
pub enum Received {
    Control(ServerMessage),
    Media(Vec<u8>),
    Closed(Option<CloseFrame>),
}

/// A WebSocket client that speaks just enough of the protocol for tests.
pub struct TestClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl TestClient {
    /// Opens a WebSocket to `url` + `/v1`; `tls_root` is a PEM CA certificate for `wss://`.
    pub async fn connect(url: &str, tls_root: Option<&str>) -> anyhow::Result<TestClient> {
        let connector = match tls_root {
            None => None,
            Some(pem) => {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert?)?;
                }
                let config =
                    rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
                Some(Connector::Rustls(Arc::new(config)))
            }
        };
        let endpoint = format!("{url}{}", chinwag_proto::WS_PATH);
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(&endpoint, None, true, connector)
            .await
            .with_context(|| format!("cannot connect to {endpoint}"))?;
        Ok(TestClient { ws })
    }

    /// Opens a plain `ws://` WebSocket whose socket has a small receive buffer (`bytes`), so
    /// that a client reading slowly slows the relay's sending at once, as a slow link would.
    pub async fn connect_with_receive_buffer(url: &str, bytes: u32) -> anyhow::Result<TestClient> {
        let addr: SocketAddr =
            url.strip_prefix("ws://").ok_or_else(|| anyhow!("plain ws:// only"))?.parse()?;
        let socket =
            if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_recv_buffer_size(bytes)?;
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let endpoint = format!("{url}{}", chinwag_proto::WS_PATH);
        let (ws, _) = tokio_tungstenite::client_async(endpoint, MaybeTlsStream::Plain(tcp)).await?;
        Ok(TestClient { ws })
    }

    /// Opens a plain `ws://` WebSocket as a script on a web page of `origin` would.
    pub async fn connect_with_origin(url: &str, origin: &str) -> anyhow::Result<TestClient> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = format!("{url}{}", chinwag_proto::WS_PATH).into_client_request()?;
        request.headers_mut().insert("Origin", origin.parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(TestClient { ws })
    }

    /// Opens a plain `ws://` WebSocket from the local address `source` (on Linux any of
    /// 127.0.0.0/8 works), as a client on another machine would.
    pub async fn connect_from(url: &str, source: std::net::IpAddr) -> anyhow::Result<TestClient> {
        let tcp = connect_tcp_from(url, source).await?;
        let endpoint = format!("{url}{}", chinwag_proto::WS_PATH);
        let (ws, _) = tokio_tungstenite::client_async(endpoint, MaybeTlsStream::Plain(tcp)).await?;
        Ok(TestClient { ws })
    }

    /// Connects and joins; fails unless the relay answers with `welcome`.
    pub async fn join(
        url: &str,
        room: &str,
        name: &str,
        password: Option<&str>,
    ) -> anyhow::Result<(TestClient, Welcome)> {
        let mut client = TestClient::connect(url, None).await?;
        let welcome = client.join_here(room, name, password).await?;
        Ok((client, welcome))
    }

    /// Sends `join` on this connection and waits for `welcome`.
    pub async fn join_here(
        &mut self,
        room: &str,
        name: &str,
        password: Option<&str>,
    ) -> anyhow::Result<Welcome> {
        self.join_with(Join {
            version: 1,
            room: room.into(),
            name: name.into(),
            password: password.map(Into::into),
            resume: None,
            token: None,
        })
        .await
    }

    /// Sends this `join` on this connection and waits for `welcome`.
    pub async fn join_with(&mut self, join: Join) -> anyhow::Result<Welcome> {
        self.send(&ClientMessage::Join(join)).await?;
        match self.next_control(Duration::from_secs(5)).await? {
            ServerMessage::Welcome(welcome) => Ok(welcome),
            other => bail!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, message: &ClientMessage) -> anyhow::Result<()> {
        self.send_text(&message.to_json()).await
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        Ok(self.ws.send(Message::text(text)).await?)
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        Ok(self.ws.send(Message::binary(bytes)).await?)
    }

    /// The next control message, media frame or close, within `within`.
    pub async fn next(&mut self, within: Duration) -> anyhow::Result<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!("nothing received within {within:?}"),
                Ok(None) => return Ok(Received::Closed(None)),
                Ok(Some(message)) => message?,
            };
            return Ok(match message {
                Message::Text(text) => Received::Control(parse_server_message(&text)?),
                Message::Binary(bytes) => Received::Media(bytes.to_vec()),
                Message::Close(frame) => Received::Closed(frame),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            });
        }
    }

    /// The next control message, skipping media.
    pub async fn next_control(&mut self, within: Duration) -> anyhow::Result<ServerMessage> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Received::Control(message) => return Ok(message),
                Received::Media(_) => continue,
                Received::Closed(frame) => {
                    bail!("connection closed ({frame:?}) while waiting for a control message")
                }
            }
        }
    }

    /// The next media frame, skipping control messages.
    pub async fn next_media(&mut self, within: Duration) -> anyhow::Result<Vec<u8>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Received::Media(frame) => return Ok(frame),
                Received::Control(_) => continue,
                Received::Closed(frame) => bail!("connection closed ({frame:?}) while waiting for media"),
            }
        }
    }

    /// Reads until the relay's `error` message and close frame; returns both.
    pub async fn expect_refusal(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<(chinwag_proto::ErrorMessage, Option<u16>)> {
        let deadline = Instant::now() + within;
        let mut error = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Ok(Received::Control(ServerMessage::Error(message))) => error = Some(message),
                Ok(Received::Control(_) | Received::Media(_)) => {}
                Ok(Received::Closed(frame)) => {
                    let error =
                        error.ok_or_else(|| anyhow!("closed ({frame:?}) without an error message"))?;
                    return Ok((error, frame.map(|frame| u16::from(frame.code))));
                }
                Err(problem) => match error {
                    // Some platforms reset instead of closing cleanly after the close frame.
                    Some(error) if !problem.to_string().contains("nothing received") => {
                        return Ok((error, None));
                    }
                    _ => return Err(problem),
                },
            }
        }
    }

    /// The WebSocket itself, for load generators that split it.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A TCP connection to the relay at the plain `ws://` `url`, from the local address `source`.
pub async fn connect_tcp_from(url: &str, source: std::net::IpAddr) -> anyhow::Result<TcpStream> {
    let addr: SocketAddr = url.strip_prefix("ws://").ok_or_else(|| anyhow!("plain ws:// only"))?.parse()?;
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("cannot bind to {source}"))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A plain HTTP GET on loopback; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut response)).await??;
    let status = response.split_whitespace().nth(1).ok_or_else(|| anyhow!("empty response"))?.parse()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled or labelled sample in Prometheus text, e.g.
/// `metric(&text, "chinwag_dropped_frames_total{reason=\"bad_header\"}")`.
pub fn metric(text: &str, sample: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Microseconds on a clock shared by every task of this process, for capture times that
/// the same process reads back on receipt.
/// A media frame as a client sends it: `claimed_sender` (which the relay must overwrite),
/// `seq`, a timestamp of 960 ticks per frame and this process's clock as capture time.
pub fn media_frame(kind: MediaKind, claimed_sender: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let header = MediaHeader {
        kind,
        flags: MediaFlags::default(),
        sender: ParticipantId(claimed_sender),
        seq: SeqNo(seq),
        timestamp: MediaTimestamp(seq.wrapping_mul(960)),
        capture_time: RelayTime::from_micros(process_clock_us()),
    };
    encode_frame(&header, payload)
}

pub fn process_clock_us() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}
