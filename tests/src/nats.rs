//! A NATS server with JetStream as a child process, for the relay's cluster tests and the
//! cluster benchmark.
//!
//! The relays of a cluster share one `nats-server` (the Debian package of that name, or the
//! binary named by `CHINWAG_NATS_SERVER`). It listens on a free loopback port and keeps its
//! JetStream store in a directory of the caller's, so that it can be stopped and restarted on
//! the same port with the same store, as an outage would.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a starting server has to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A `nats-server -js` child process on a loopback port, killed when dropped.
pub struct NatsServer {
    /// `None` while stopped.
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    log: PathBuf,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free loopback port with its store in `dir/js` and its log
    /// in `dir/nats.log`, and waits until it accepts connections with JetStream running.
    pub fn start(dir: &Path) -> anyhow::Result<NatsServer> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut last_error = None;
        // The free port is found by binding and letting go of it, so another process may take
        // it in between; a few tries make that harmless.
        for _ in 0..3 {
            let mut server = NatsServer {
                child: None,
                port: free_port()?,
                store: dir.join("js"),
                log: dir.join("nats.log"),
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(error) if is_not_installed(&error) => return Err(error),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// [`NatsServer::start`] for a test. On Linux the test command installs `nats-server`, so
    /// any failure fails the test; elsewhere (CI runs no set-up script on macOS and Windows) a
    /// missing `nats-server` skips the test, saying why on standard error.
    pub fn start_for_test(dir: &Path, test: &str) -> Option<NatsServer> {
        match NatsServer::start(dir) {
            Ok(server) => Some(server),
            Err(error) if !cfg!(target_os = "linux") && is_not_installed(&error) => {
                eprintln!("skipping {test}: {error:#}");
                None
            }
            Err(error) => panic!("{test}: nats-server does not start: {error:#}"),
        }
    }

    /// `nats://127.0.0.1:PORT`, for `chinwag-relay --cluster`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// User plus system CPU time the running server has used so far (Linux only).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        match self.pid() {
            Some(pid) => crate::process_cpu_time(pid),
            None => bail!("nats-server is stopped"),
        }
    }

    /// Everything the server has logged, across restarts, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server with SIGTERM (a clean shutdown, as an operator's would be) and waits
    /// for it to exit; its port and store stay reserved for [`NatsServer::restart`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        if !status.success() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("kill -TERM {} failed", child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("nats-server did not exit within 10 s of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same port with the same JetStream store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        // The old listening socket may linger for a moment after the process has gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() < deadline && !is_not_installed(&error) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Spawns the process and waits for "Server is ready" in the part of the log it writes.
    fn launch(&mut self) -> anyhow::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let log_start = log.seek(SeekFrom::End(0))?;
        let binary = nats_server_binary();
        let mut child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|error| {
                if error.kind() == std::io::ErrorKind::NotFound {
                    anyhow::Error::new(NotInstalled).context(format!(
                        "cannot run {}: not installed; install it with scripts/setup.sh or \
                         apt install nats-server (or set CHINWAG_NATS_SERVER to its path)",
                        binary.to_string_lossy()
                    ))
                } else {
                    anyhow::Error::new(error).context(format!("cannot run {}", binary.to_string_lossy()))
                }
            })?;
        let deadline = Instant::now() + READY_WITHIN;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let written = read_from(&self.log, log_start);
            if written.contains("Server is ready")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                bail!("nats-server on port {} exited at start ({status}):\n{written}", self.port);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("nats-server on port {} was not ready within {READY_WITHIN:?}:\n{written}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Marks the error of a missing `nats-server`, which retrying cannot fix.
#[derive(Debug)]
struct NotInstalled;

impl std::fmt::Display for NotInstalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nats-server is not installed")
    }
}

impl std::error::Error for NotInstalled {}

fn is_not_installed(error: &anyhow::Error) -> bool {
    error.downcast_ref::<NotInstalled>().is_some()
}

/// `CHINWAG_NATS_SERVER`, else Debian's `/usr/sbin/nats-server` (not on a normal user's
/// `PATH`), else `nats-server` from the `PATH`.
fn nats_server_binary() -> std::ffi::OsString {
    if let Some(binary) = std::env::var_os("CHINWAG_NATS_SERVER") {
        return binary;
    }
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.exists() { debian.as_os_str().to_owned() } else { "nats-server".into() }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    text
}
