//! A relay inside the app (for hosting a call or the demo) and the demo's bot.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::thread::JoinHandle;

use chinwag_engine::{
    Call, CallConfig, EngineError, InputSpec, OutputSpec, TransportConfig, VideoInput, VideoSettings,
};
use chinwag_relay::{Config, Relay, RelayError};

/// The room the demo call takes place in.
pub const DEMO_ROOM: &str = "demo";
/// The demo peer's display name.
pub const DEMO_BOT_NAME: &str = "Demo bot";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    #[error("cannot start the relay's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("cannot start the demo bot: {0}")]
    Bot(#[source] EngineError),
}

impl EmbeddedError {
    /// Whether the port asked for is taken by another program.
    pub fn port_in_use(&self) -> bool {
        let EmbeddedError::Relay(RelayError::Bind { source, .. }) = self else { return false };
        source.kind() == std::io::ErrorKind::AddrInUse
    }
}

/// The first port after `port` (up to a hundred on) that nothing listens on, to offer instead.
pub fn free_port_after(port: u16) -> Option<u16> {
    (port.saturating_add(1)..=port.saturating_add(100))
        .find(|&candidate| std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, candidate)).is_ok())
}

/// A relay serving on its own thread (a small tokio runtime) until dropped.
pub struct EmbeddedRelay {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedRelay {
    /// Binds `listen` (port 0 picks a free port) and starts serving.
    pub fn start(listen: SocketAddr) -> Result<Self, EmbeddedError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chinwag-relay")
            .enable_all()
            .build()
            .map_err(EmbeddedError::Runtime)?;
        let relay = runtime.block_on(Relay::bind(Config { listen, ..Config::default() }))?;
        let local_addr = relay.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("chinwag-relay".into())
            .spawn(move || {
                runtime.block_on(relay.run(async {
                    // A dropped sender stops the relay as well as a sent ().
                    let _ = stopped.await;
                }));
            })
            .map_err(EmbeddedError::Runtime)?;
        Ok(Self { local_addr, stop: Some(stop), thread: Some(thread) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address this app itself dials: loopback, whatever the relay listens on.
    pub fn loopback_url(&self) -> String {
        let ip = if self.local_addr.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        };
        format!("ws://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// Addresses others can dial: this machine's outward address (if it has one) and loopback.
    pub fn dial_addresses(&self) -> Vec<String> {
        let port = self.local_addr.port();
        let mut addresses = Vec::new();
        if self.local_addr.ip().is_unspecified()
            && let Some(ip) = outward_ip()
        {
            addresses.push(format!("ws://{}", SocketAddr::new(ip, port)));
        } else if !self.local_addr.ip().is_unspecified() && !self.local_addr.ip().is_loopback() {
            addresses.push(format!("ws://{}", self.local_addr));
        }
        addresses.push(self.loopback_url());
        addresses
    }
}

impl Drop for EmbeddedRelay {
    /// Asks the relay to stop (telling its participants it is going) and returns at once:
    /// the window must not wait for its relay's connections to close.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.thread.take());
    }
}

/// The address this machine would use to reach the internet, found by routing a UDP socket
/// (nothing is sent).
fn outward_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// The demo: a relay on loopback and a bot in its room sending a 440 Hz tone and the test
/// pattern. Dropping it stops both.
pub struct Demo {
    // Field order is drop order: the bot leaves before its relay stops.
    bot: Call,
    relay: EmbeddedRelay,
}

impl Demo {
    pub fn start() -> Result<Self, EmbeddedError> {
        let relay = EmbeddedRelay::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let mut transport = TransportConfig::new(relay.loopback_url(), DEMO_ROOM, DEMO_BOT_NAME);
        transport.retry_first_connect = true;
        let mut config = CallConfig::new(transport);
        config.input = InputSpec::Tone(440.0);
        config.output = OutputSpec::None;
        config.video = VideoSettings { input: VideoInput::Pattern, width: 640, height: 360, fps: 15 };
        let bot = Call::start(config).map_err(EmbeddedError::Bot)?;
        Ok(Self { bot, relay })
    }

    pub fn relay(&self) -> &EmbeddedRelay {
        &self.relay
    }

    pub fn bot(&self) -> &Call {
        &self.bot
    }
}
