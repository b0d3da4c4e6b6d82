//! A userspace link emulator: a TCP proxy on loopback that makes a connection look like a home
//! internet link, so that end-to-end tests can impair the network (`tc netem` does not work on
//! this machine).
//!
//! Each direction of the link is modelled as a bottleneck followed by a delay line. The bottleneck
//! serialises bytes at a rate cap that may change over time (a schedule), and holds what waits for
//! it in a queue measured as time at the cap. When the queue is full the emulator stops reading
//! from the sending socket, so TCP's own flow control pushes back on the sender, as a real full
//! queue does through loss and retransmission (but without loss). Stalls stop the bottleneck
//! entirely for a while. After the bottleneck every byte waits a fixed propagation delay plus a
//! random jitter per chunk, without overtaking what was sent before it, as TCP delivers in order.
//!
//! Each accepted connection gets its own bottleneck in each direction: two connections through one
//! emulator do not share a cap the way they would on one real link. Times in schedules and stalls
//! count from when [`LinkEmulator::start`] was called. Everything stays on loopback.

use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Up to this much is read from a socket at a time, about one packet, so that the bottleneck
/// queue fills and drains in fine steps.
const CHUNK: usize = 1500;

/// The kernel buffers asked for on the emulator's sockets. They are kept small so that the kernel
/// does not hide a second, unmodelled queue in front of the bottleneck: at 4 KiB (which Linux
/// doubles) the emulator's receive buffer holds a few kilobytes, yet an unlimited link still
/// carries some 60 MB/s.
const KERNEL_BUFFER: usize = 4 * 1024;

/// The segment size the emulator's sockets advertise, as on Ethernet. Loopback's own (64 KiB)
/// would let the peers' kernels grow their send buffers far beyond what a real path allows.
const MSS: u32 = 1460;

/// Sleeping threads wake at least this often to see whether the emulator is being dropped.
const POLL: Duration = Duration::from_millis(20);

/// How long the emulator waits to connect to the upstream server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How many chunks may be in flight between a direction's reader and writer. It bounds memory
/// when the receiving application stops reading; the bottleneck, not this, is the modelled queue.
const IN_FLIGHT: usize = 4096;

/// Every configured or computed wait is clamped to this (about 11 days), so that tiny caps and
/// huge delays cannot overflow `Duration` or `Instant` arithmetic.
const FAR: Duration = Duration::from_secs(1_000_000);

/// One direction of the link.
#[derive(Debug, Clone)]
pub struct Direction {
    /// The rate cap over time: (from this long after the emulator started, bits per second or
    /// None = unlimited). Entries may come in any order; before the first one, and when empty,
    /// the rate is unlimited. A cap of zero (or a negative or NaN one) lets nothing through.
    pub schedule: Vec<(Duration, Option<f64>)>,
    /// The bottleneck queue, as time at the current cap (shallow ~200 ms, bufferbloated ~2 s).
    /// When the queue is full, the emulator stops reading from the sending socket (TCP
    /// back-pressure, as a real full queue does via loss + retransmit, but lossless). It should
    /// hold at least a few chunks of 1500 bytes at the cap, or the link cannot keep the cap busy.
    pub queue: Duration,
    /// One-way propagation delay added to every byte after the bottleneck.
    pub delay: Duration,
    /// Extra random delay, uniform in 0..jitter, per chunk; delivery order is kept (TCP), so a
    /// chunk never overtakes the previous one.
    pub jitter: Duration,
    /// Stalls: (from, length) after start; nothing leaves the bottleneck during a stall.
    pub stalls: Vec<(Duration, Duration)>,
}

impl Direction {
    /// A direction without impairment: no cap, no delay, no jitter, no stalls. Its queue (200 ms)
    /// only matters once a cap or a stall is added.
    pub fn clean() -> Self {
        Direction {
            schedule: Vec::new(),
            queue: Duration::from_millis(200),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            stalls: Vec::new(),
        }
    }

    /// A direction capped at `bps` bits per second from the start, with a bottleneck queue of
    /// `queue` at that rate.
    pub fn capped(bps: f64, queue: Duration) -> Self {
        Direction { schedule: vec![(Duration::ZERO, Some(bps))], queue, ..Direction::clean() }
    }

    /// Sets the propagation delay and the jitter.
    pub fn with_delay(mut self, delay: Duration, jitter: Duration) -> Self {
        self.delay = delay;
        self.jitter = jitter;
        self
    }

    /// Sets the bottleneck queue.
    pub fn with_queue(mut self, queue: Duration) -> Self {
        self.queue = queue;
        self
    }

    /// Changes the cap to `bps` (None = unlimited) from `from` after the start.
    pub fn with_cap_from(mut self, from: Duration, bps: Option<f64>) -> Self {
        self.schedule.push((from, bps));
        self
    }

    /// Adds a stall of `length` starting `from` after the start.
    pub fn with_stall(mut self, from: Duration, length: Duration) -> Self {
        self.stalls.push((from, length));
        self
    }
}

/// Both directions of a link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Client -> upstream.
    pub up: Direction,
    /// Upstream -> client.
    pub down: Direction,
    /// Seeds the jitter, so that a run can be repeated.
    pub seed: u64,
}

impl LinkConfig {
    /// A link with the same impairment both ways.
    pub fn symmetric(direction: Direction) -> Self {
        LinkConfig { up: direction.clone(), down: direction, seed: 0 }
    }
}

/// A TCP proxy on 127.0.0.1 that forwards every connection it accepts to one upstream address
/// through an emulated link. Dropping it stops its threads and closes its connections.
pub struct LinkEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// What the emulator's threads share.
struct Shared {
    /// Time zero of every schedule and stall.
    epoch: Instant,
    stop: AtomicBool,
    /// Bytes delivered up and down, over all connections.
    delivered: [AtomicU64; 2],
    /// The live connections by index, so that dropping the emulator can close and join them.
    conns: Mutex<HashMap<u64, Conn>>,
}

impl Shared {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A connection's thread, and its sockets once both ends are connected.
struct Conn {
    handle: Option<JoinHandle<()>>,
    sockets: Vec<TcpStream>,
}

const UP: usize = 0;
const DOWN: usize = 1;

impl LinkEmulator {
    /// Listens on 127.0.0.1:0 and forwards every accepted connection to `upstream` through the
    /// link.
    pub fn start(upstream: SocketAddr, config: LinkConfig) -> std::io::Result<LinkEmulator> {
        let epoch = Instant::now();
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        // Accepted sockets inherit these; the receive buffer must be small before the handshake,
        // which fixes the window scale.
        socket.set_recv_buffer_size(KERNEL_BUFFER)?;
        socket.set_send_buffer_size(KERNEL_BUFFER)?;
        socket.set_tcp_mss(MSS)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        socket.listen(128)?;
        // A nonblocking accept loop can notice promptly that the emulator is being dropped.
        socket.set_nonblocking(true)?;
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch,
            stop: AtomicBool::new(false),
            delivered: [AtomicU64::new(0), AtomicU64::new(0)],
            conns: Mutex::new(HashMap::new()),
        });
        let lines = Arc::new([Line::new(&config.up), Line::new(&config.down)]);
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("link-accept".into())
                .spawn(move || accept_loop(listener, upstream, lines, config.seed, shared))?
        };
        Ok(LinkEmulator { addr, shared, accept: Some(accept) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The emulator's address as a WebSocket URL, e.g. "ws://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Bytes delivered so far in each direction, (up, down), over all connections.
    pub fn delivered(&self) -> (u64, u64) {
        (
            self.shared.delivered[UP].load(Ordering::Relaxed),
            self.shared.delivered[DOWN].load(Ordering::Relaxed),
        )
    }
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Once the accept loop has ended no connection can be added.
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let conns = std::mem::take(&mut *self.shared.conns());
        // Shutting the sockets down wakes every thread blocked in a read or a write; the others
        // sleep at most `POLL` before they see `stop`.
        for conn in conns.values() {
            for socket in &conn.sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        for (_, mut conn) in conns {
            if let Some(handle) = conn.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    lines: Arc<[Line; 2]>,
    seed: u64,
    shared: Arc<Shared>,
) {
    let mut index = 0u64;
    while !shared.stopping() {
        match listener.accept() {
            Ok((client, _)) => {
                index += 1;
                // The registry stays locked until the handle is in it, so the connection's thread
                // cannot try to remove its entry before it exists.
                let mut conns = shared.conns();
                let spawned = {
                    let (shared, lines) = (Arc::clone(&shared), Arc::clone(&lines));
                    std::thread::Builder::new()
                        .name(format!("link-conn-{index}"))
                        .spawn(move || serve(client, upstream, index, &lines, seed, &shared))
                };
                if let Ok(handle) = spawned {
                    conns.insert(index, Conn { handle: Some(handle), sockets: Vec::new() });
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Connects to the upstream server with the same small buffers as the listener.
fn connect_upstream(upstream: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(upstream), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(KERNEL_BUFFER)?;
    socket.set_send_buffer_size(KERNEL_BUFFER)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_mss(MSS)?;
    socket.connect_timeout(&upstream.into(), CONNECT_TIMEOUT)?;
    socket.set_nonblocking(false)?;
    Ok(socket.into())
}

/// Runs one connection: connects upstream, runs both directions, then closes both sockets and
/// takes the connection out of the registry.
fn serve(client: TcpStream, upstream: SocketAddr, index: u64, lines: &[Line; 2], seed: u64, shared: &Shared) {
    let result = connect_upstream(upstream).and_then(|server| {
        client.set_nonblocking(false)?;
        client.set_nodelay(true)?;
        SockRef::from(&client).set_send_buffer_size(KERNEL_BUFFER)?;
        Ok(server)
    });
    let Ok(server) = result else {
        let _ = client.shutdown(Shutdown::Both);
        shared.conns().remove(&index);
        return;
    };
    let _ = run_connection(&client, &server, index, lines, seed, shared);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    shared.conns().remove(&index);
}

fn run_connection(
    client: &TcpStream,
    server: &TcpStream,
    index: u64,
    lines: &[Line; 2],
    seed: u64,
    shared: &Shared,
) -> std::io::Result<()> {
    {
        let mut conns = shared.conns();
        // The emulator is being dropped and has already closed the sockets it knew of: these are
        // not among them, so close them here.
        if shared.stopping() {
            return Ok(());
        }
        if let Some(conn) = conns.get_mut(&index) {
            conn.sockets = vec![client.try_clone()?, server.try_clone()?];
        }
    }
    std::thread::scope(|scope| -> std::io::Result<()> {
        for (dir, src, dst) in [(UP, client, server), (DOWN, server, client)] {
            let (tx, rx) = sync_channel(IN_FLIGHT);
            let rng =
                SmallRng::seed_from_u64(seed.wrapping_add(index.wrapping_mul(2)).wrapping_add(dir as u64));
            let (src_read, src_abort, dst_write) = (src.try_clone()?, src.try_clone()?, dst.try_clone()?);
            let name = if dir == UP { "up" } else { "down" };
            std::thread::Builder::new()
                .name(format!("link-{index}-{name}-read"))
                .spawn_scoped(scope, move || read_side(src_read, &lines[dir], rng, tx, shared))?;
            std::thread::Builder::new()
                .name(format!("link-{index}-{name}-write"))
                .spawn_scoped(scope, move || write_side(dst_write, src_abort, rx, dir, shared))?;
        }
        Ok(())
    })
}

/// What a direction's reader hands its writer.
enum Packet {
    /// Bytes to write at `at` after the epoch.
    Data { at: Duration, bytes: Vec<u8> },
    /// The sender finished (FIN) or failed (`reset`), to be passed on at `at`.
    End { at: Duration, reset: bool },
}

/// Reads one direction from `src` into the bottleneck and works out when each chunk arrives at
/// the far end.
fn read_side(mut src: TcpStream, line: &Line, mut rng: SmallRng, tx: SyncSender<Packet>, shared: &Shared) {
    let epoch = shared.epoch;
    let mut last_depart = Duration::ZERO;
    let mut last_deliver = Duration::ZERO;
    let mut buffer = [0u8; CHUNK];
    let reset = loop {
        // While the queue holds more than `queue` of sending time, the bytes stay in the kernel,
        // whose small buffers then close the sender's TCP window: a full queue pushes back.
        if !sleep_until(epoch, last_depart.saturating_sub(line.queue), &shared.stop) {
            return;
        }
        let n = match src.read(&mut buffer) {
            Ok(0) => break false,
            Ok(n) => n,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        };
        let arrival = epoch.elapsed();
        last_depart = line.departure(arrival.max(last_depart), n);
        let jitter = if line.jitter.is_zero() { Duration::ZERO } else { line.jitter.mul_f64(rng.random()) };
        // A chunk never overtakes the one before it: TCP delivers in order.
        last_deliver = last_depart.saturating_add(line.delay).saturating_add(jitter).max(last_deliver);
        if tx.send(Packet::Data { at: last_deliver, bytes: buffer[..n].to_vec() }).is_err() {
            return;
        }
    };
    // The end of the stream travels the link behind the data.
    let depart = line.departure(epoch.elapsed().max(last_depart), 0);
    let at = depart.saturating_add(line.delay).max(last_deliver);
    let _ = tx.send(Packet::End { at, reset });
}

/// Writes one direction's chunks to `dst` when they are due. On any failure it shuts down both
/// sockets, which ends the connection's other threads too.
fn write_side(mut dst: TcpStream, src: TcpStream, rx: Receiver<Packet>, dir: usize, shared: &Shared) {
    let epoch = shared.epoch;
    let mut pending = None;
    loop {
        let packet = match pending.take() {
            Some(packet) => packet,
            None => match rx.recv() {
                Ok(packet) => packet,
                // The reader quit because the emulator is stopping.
                Err(_) => break,
            },
        };
        match packet {
            Packet::Data { at, mut bytes } => {
                if !sleep_until(epoch, at, &shared.stop) {
                    break;
                }
                // Whatever else is already due goes out in the same write, to save system calls.
                while bytes.len() < 64 * 1024 {
                    match rx.try_recv() {
                        Ok(Packet::Data { at, bytes: more }) if at <= epoch.elapsed() => bytes.extend(more),
                        Ok(packet) => {
                            pending = Some(packet);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                if dst.write_all(&bytes).is_err() {
                    break;
                }
                shared.delivered[dir].fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Packet::End { at, reset } => {
                if !sleep_until(epoch, at, &shared.stop) || reset {
                    break;
                }
                // A half-close passes on as one: the other direction may still have data to carry.
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
        }
    }
    let _ = dst.shutdown(Shutdown::Both);
    let _ = src.shutdown(Shutdown::Both);
}

/// Sleeps until `offset` after `epoch`, waking now and then to see whether the emulator is
/// stopping. Returns false if it is.
fn sleep_until(epoch: Instant, offset: Duration, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = offset.saturating_sub(epoch.elapsed());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(POLL));
    }
}

/// A `Duration` of `seconds`, clamped to 0..=FAR (NaN counts as 0), so it never panics.
fn seconds(seconds: f64) -> Duration {
    if seconds > 0.0 { Duration::try_from_secs_f64(seconds).unwrap_or(FAR).min(FAR) } else { Duration::ZERO }
}

/// One direction's model, with its schedule and stalls sorted and its times clamped.
#[derive(Debug)]
struct Line {
    schedule: Vec<(Duration, Option<f64>)>,
    /// (start, end) of each stall.
    stalls: Vec<(Duration, Duration)>,
    queue: Duration,
    delay: Duration,
    jitter: Duration,
}

impl Line {
    fn new(direction: &Direction) -> Line {
        let mut schedule = direction.schedule.clone();
        schedule.sort_by_key(|&(from, _)| from);
        let mut stalls: Vec<_> =
            direction.stalls.iter().map(|&(from, length)| (from, from.saturating_add(length))).collect();
        stalls.sort();
        Line {
            schedule,
            stalls,
            queue: direction.queue.min(FAR),
            delay: direction.delay.min(FAR),
            jitter: direction.jitter.min(FAR),
        }
    }

    /// The cap at `t` in bits per second, None when unlimited.
    fn rate_at(&self, t: Duration) -> Option<f64> {
        self.schedule.iter().take_while(|&&(from, _)| from <= t).last().and_then(|&(_, bps)| bps)
    }

    /// The end of a stall that `t` falls in.
    fn stall_end(&self, t: Duration) -> Option<Duration> {
        self.stalls.iter().find(|&&(from, end)| from <= t && t < end).map(|&(_, end)| end)
    }

    /// The first time after `t` at which the cap changes or a stall begins.
    fn next_boundary(&self, t: Duration) -> Option<Duration> {
        let changes = self.schedule.iter().map(|&(from, _)| from);
        changes.chain(self.stalls.iter().map(|&(from, _)| from)).filter(|&from| from > t).min()
    }

    /// When the last of `bytes` leaves the bottleneck, if it starts sending them at `start`. The
    /// bits flow at whatever the cap is at each moment and not at all during stalls, so a chunk
    /// that straddles a change of cap or a stall takes as long as it would on a real link.
    fn departure(&self, start: Duration, bytes: usize) -> Duration {
        let mut t = start;
        let mut bits = bytes as f64 * 8.0;
        // Each turn returns or moves `t` on to a later stall end or boundary, so this ends.
        loop {
            if let Some(end) = self.stall_end(t) {
                t = end;
                continue;
            }
            let next = self.next_boundary(t);
            let rate = match self.rate_at(t) {
                None => return t,
                Some(rate) if rate == f64::INFINITY => return t,
                Some(rate) if rate > 0.0 => rate,
                // A zero, negative or NaN cap lets nothing through until the next change.
                Some(_) => match next {
                    Some(next) => {
                        t = next;
                        continue;
                    }
                    None => return t.saturating_add(FAR),
                },
            };
            let finish = t.saturating_add(seconds(bits / rate));
            match next {
                Some(next) if finish > next => {
                    bits -= (next - t).as_secs_f64() * rate;
                    t = next;
                }
                _ => return finish,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A server that accepts one connection and reports when each read returned and what it read;
    /// the channel closes at EOF.
    fn sink() -> (SocketAddr, mpsc::Receiver<(Instant, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Ok((mut socket, _)) = listener.accept() else { return };
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = socket.read(&mut buffer) {
                if tx.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        (addr, rx)
    }

    /// A server that echoes what each connection sends.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(mut socket) = socket else { return };
                std::thread::spawn(move || {
                    let mut back = socket.try_clone().unwrap();
                    let _ = std::io::copy(&mut socket, &mut back);
                });
            }
        });
        addr
    }

    /// A client with a small send buffer, so that its kernel adds little queue of its own.
    fn connect(addr: SocketAddr) -> TcpStream {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        socket.set_tcp_nodelay(true).unwrap();
        socket.connect(&addr.into()).unwrap();
        socket.into()
    }

    fn stamp(base: Instant) -> [u8; 8] {
        (base.elapsed().as_nanos() as u64).to_le_bytes()
    }

    /// Writes as fast as the link takes it until `until` after `base`, in blocks of eight copies
    /// of the 8-byte send time (nanoseconds since `base`).
    fn flood(addr: SocketAddr, base: Instant, until: Duration) -> JoinHandle<()> {
        let mut socket = connect(addr);
        std::thread::spawn(move || {
            while base.elapsed() < until {
                if socket.write_all(&stamp(base).repeat(8)).is_err() {
                    break;
                }
            }
        })
    }

    /// Everything a sink received, as (time after `base`, bytes), until EOF or `until`.
    fn collect(
        rx: &mpsc::Receiver<(Instant, Vec<u8>)>,
        base: Instant,
        until: Duration,
    ) -> Vec<(Duration, Vec<u8>)> {
        let mut reads = Vec::new();
        while let Ok((at, bytes)) = rx.recv_timeout(until.saturating_sub(base.elapsed())) {
            reads.push((at - base, bytes));
        }
        reads
    }

    /// Bits per second received in `from..to` after `base`.
    fn rate(reads: &[(Duration, Vec<u8>)], from: Duration, to: Duration) -> f64 {
        let bytes: usize = reads.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, b)| b.len()).sum();
        bytes as f64 * 8.0 / (to - from).as_secs_f64()
    }

    /// The one-way delay of every 8-byte stamp received: receive time minus send time.
    fn stamp_delays(reads: &[(Duration, Vec<u8>)]) -> Vec<(Duration, Duration)> {
        let mut stream = Vec::new();
        let mut delays = Vec::new();
        for (at, bytes) in reads {
            stream.extend_from_slice(bytes);
            let whole = stream.len() / 8 * 8;
            for record in stream[..whole].chunks_exact(8) {
                let sent = Duration::from_nanos(u64::from_le_bytes(record.try_into().unwrap()));
                delays.push((*at, at.saturating_sub(sent)));
            }
            stream.drain(..whole);
        }
        delays
    }

    fn up_only(up: Direction) -> LinkConfig {
        LinkConfig { up, down: Direction::clean(), seed: 7 }
    }

    #[test]
    fn departure_follows_caps_and_stalls() {
        let close = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_micros(1);
        let unlimited = Line::new(&Direction::clean());
        assert_eq!(unlimited.departure(ms(5), 1500), ms(5));

        // 1250 bytes are 10 ms at 1 Mb/s.
        let capped = Line::new(&Direction::capped(1e6, ms(200)));
        assert!(close(capped.departure(ms(5), 1250), ms(15)));

        // Half before a stall, half after it.
        let stalled = Line::new(&Direction::capped(1e6, ms(200)).with_stall(ms(10), ms(20)));
        assert!(close(stalled.departure(ms(5), 1250), ms(35)));
        assert_eq!(stalled.departure(ms(12), 0), ms(30));

        // Half at 1 Mb/s, half at 0.5 Mb/s.
        let slower = Line::new(&Direction::capped(1e6, ms(200)).with_cap_from(ms(10), Some(0.5e6)));
        assert!(close(slower.departure(ms(5), 1250), ms(20)));

        // Nothing passes at zero until the cap returns; odd caps neither panic nor overflow.
        let paused = Line::new(&Direction::capped(0.0, ms(200)).with_cap_from(ms(1000), None));
        assert_eq!(paused.departure(ms(5), 1500), ms(1000));
        for bps in [0.0, -1.0, f64::NAN, 1e-300, f64::MIN_POSITIVE] {
            let line =
                Line::new(&Direction::capped(bps, Duration::MAX).with_delay(Duration::MAX, Duration::MAX));
            assert_eq!(line.departure(ms(5), 1500), ms(5) + FAR);
            assert_eq!(line.departure(Duration::MAX, 1500), Duration::MAX);
        }
        assert_eq!(Line::new(&Direction::capped(f64::INFINITY, ms(1))).departure(ms(5), 1500), ms(5));
    }

    #[test]
    fn throughput_follows_the_cap() {
        let (upstream, rx) = sink();
        let base = Instant::now();
        let link = LinkEmulator::start(upstream, up_only(Direction::capped(1e6, ms(200)))).unwrap();
        let sender = flood(link.addr(), base, ms(2200));
        let reads = collect(&rx, base, ms(2100));
        let measured = rate(&reads, ms(500), ms(2000));
        eprintln!("throughput at a 1 Mb/s cap: {:.3} Mb/s", measured / 1e6);
        assert!((0.8e6..=1.1e6).contains(&measured), "{measured} b/s through a 1 Mb/s cap");
        let (up, down) = link.delivered();
        // The count follows each write, so it may trail what the sink has just read by a write.
        let received: u64 = reads.iter().map(|(_, b)| b.len() as u64).sum();
        assert!(up + 64 * 1024 >= received && up > received / 2 && down == 0, "{up} {down} {received}");
        drop(link);
        sender.join().unwrap();
    }

    #[test]
    fn the_down_direction_is_capped_too() {
        // The upstream floods the client with stamps, as the relay forwards video.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = listener.local_addr().unwrap();
        let base = Instant::now();
        std::thread::spawn(move || {
            let Ok((mut socket, _)) = listener.accept() else { return };
            while base.elapsed() < ms(1600) && socket.write_all(&stamp(base).repeat(8)).is_ok() {}
        });
        let config = LinkConfig { up: Direction::clean(), down: Direction::capped(1e6, ms(200)), seed: 7 };
        let link = LinkEmulator::start(upstream, config).unwrap();
        let mut client = connect(link.addr());
        client.set_read_timeout(Some(ms(100))).unwrap();
        let mut reads = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        while base.elapsed() < ms(1500) {
            if let Ok(n @ 1..) = client.read(&mut buffer) {
                reads.push((base.elapsed(), buffer[..n].to_vec()));
            }
        }
        let measured = rate(&reads, ms(400), ms(1400));
        let delays: Vec<_> = stamp_delays(&reads).into_iter().map(|(_, delay)| delay).collect();
        eprintln!("down at a 1 Mb/s cap: {:.3} Mb/s, delay up to {:?}", measured / 1e6, delays.iter().max());
        assert!((0.8e6..=1.1e6).contains(&measured), "{measured} b/s through a 1 Mb/s cap");
        assert_eq!(link.delivered().0, 0);
    }

    #[test]
    fn one_way_delay_is_added() {
        let (upstream, rx) = sink();
        let base = Instant::now();
        let config = up_only(Direction::clean().with_delay(ms(40), Duration::ZERO));
        let link = LinkEmulator::start(upstream, config).unwrap();
        let mut client = connect(link.addr());
        for _ in 0..5 {
            client.write_all(&stamp(base)).unwrap();
            std::thread::sleep(ms(60));
        }
        let reads = collect(&rx, base, base.elapsed() + ms(200));
        let mut delays: Vec<_> = stamp_delays(&reads).into_iter().map(|(_, delay)| delay).collect();
        delays.sort();
        eprintln!("one-way times with a 40 ms delay: {delays:?}");
        assert_eq!(delays.len(), 5);
        assert!(delays[0] >= ms(40), "{delays:?}");
        assert!(delays[2] < ms(70), "{delays:?}");
    }

    #[test]
    fn a_full_queue_adds_its_delay_and_no_more() {
        let (upstream, rx) = sink();
        let base = Instant::now();
        let link = LinkEmulator::start(upstream, up_only(Direction::capped(0.5e6, ms(200)))).unwrap();
        let sender = flood(link.addr(), base, ms(2600));
        let reads = collect(&rx, base, ms(2500));
        let delays: Vec<_> =
            stamp_delays(&reads).into_iter().filter(|(at, _)| *at >= ms(1200)).map(|(_, d)| d).collect();
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        eprintln!("delay behind a full 200 ms queue at 0.5 Mb/s: {min:?}..{max:?}");
        assert!(*min > ms(100) && *max < ms(450), "{min:?}..{max:?}");
        drop(link);
        sender.join().unwrap();
    }

    #[test]
    fn jitter_keeps_order() {
        let (upstream, rx) = sink();
        let base = Instant::now();
        let config = up_only(Direction::clean().with_delay(ms(5), ms(20)));
        let link = LinkEmulator::start(upstream, config).unwrap();
        let mut client = connect(link.addr());
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut rest = &sent[..];
        while !rest.is_empty() {
            let n = rng.random_range(1..3000).min(rest.len());
            client.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            if rng.random_bool(0.1) {
                std::thread::sleep(MS);
            }
        }
        // The end of the stream reaches the sink too, which closes its channel.
        client.shutdown(Shutdown::Write).unwrap();
        let reads = collect(&rx, base, base.elapsed() + ms(2000));
        let received: Vec<u8> = reads.into_iter().flat_map(|(_, bytes)| bytes).collect();
        assert!(
            received == sent,
            "{} of {} bytes, in order: {}",
            received.len(),
            sent.len(),
            received == sent
        );
    }

    #[test]
    fn a_stall_holds_data() {
        let (upstream, rx) = sink();
        let base = Instant::now();
        let link =
            LinkEmulator::start(upstream, up_only(Direction::clean().with_stall(ms(200), ms(300)))).unwrap();
        let mut client = connect(link.addr());
        std::thread::sleep(ms(50).saturating_sub(base.elapsed()));
        client.write_all(b"before").unwrap();
        std::thread::sleep(ms(250).saturating_sub(base.elapsed()));
        client.write_all(b"during").unwrap();
        let reads = collect(&rx, base, ms(1200));
        let before = reads.iter().find(|(_, b)| b.starts_with(b"before")).expect("the first message");
        let during = reads.iter().find(|(_, b)| b.ends_with(b"during")).expect("the second message");
        eprintln!(
            "stall 200..500 ms: sent at 50 ms, arrived at {:?}; sent at 250 ms, at {:?}",
            before.0, during.0
        );
        assert!(before.0 < ms(200), "{:?}", before.0);
        assert!(during.0 >= ms(500) && during.0 < ms(1000), "{:?}", during.0);
    }

    #[test]
    fn a_schedule_changes_the_cap() {
        let (upstream, rx) = sink();
        let base = Instant::now();
        let direction = Direction::capped(2e6, ms(200)).with_cap_from(ms(1000), Some(0.5e6));
        let link = LinkEmulator::start(upstream, up_only(direction)).unwrap();
        let sender = flood(link.addr(), base, ms(2300));
        let reads = collect(&rx, base, ms(2200));
        let (fast, slow) = (rate(&reads, ms(300), ms(950)), rate(&reads, ms(1150), ms(2100)));
        eprintln!("2 Mb/s then 0.5 Mb/s: measured {:.3} then {:.3} Mb/s", fast / 1e6, slow / 1e6);
        assert!((1.4e6..=2.4e6).contains(&fast), "{fast} b/s at 2 Mb/s");
        assert!((0.35e6..=0.6e6).contains(&slow), "{slow} b/s at 0.5 Mb/s");
        drop(link);
        sender.join().unwrap();
    }

    #[test]
    fn dropping_closes_connections() {
        let link = LinkEmulator::start(echo(), LinkConfig::symmetric(Direction::clean())).unwrap();
        assert!(link.url().starts_with("ws://127.0.0.1:"));
        let mut client = connect(link.addr());
        client.set_read_timeout(Some(ms(1000))).unwrap();
        client.write_all(b"hello").unwrap();
        let mut buffer = [0u8; 5];
        client.read_exact(&mut buffer).unwrap();
        assert_eq!(&buffer, b"hello");
        // The writer counts its bytes just after the write that the client may already have read.
        let counting = Instant::now();
        while link.delivered() != (5, 5) && counting.elapsed() < ms(1000) {
            std::thread::sleep(MS);
        }
        assert_eq!(link.delivered(), (5, 5));

        let dropping = Instant::now();
        drop(link);
        assert!(dropping.elapsed() < ms(1000), "dropping took {:?}", dropping.elapsed());
        let reading = Instant::now();
        match client.read(&mut buffer) {
            Ok(0) => {}
            Ok(n) => panic!("read {n} bytes after the link was dropped"),
            Err(error) => assert!(
                !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "still open after {:?}",
                reading.elapsed()
            ),
        }
    }
}
