//! A TCP proxy on loopback whose uplink is slow: every byte its clients send towards the
//! upstream server, over all their connections together, passes a shared token bucket. It
//! stands for a slow network link between a relay and its NATS server (`tc netem` does not
//! work on this machine). The way back is not limited.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Up to this much is read and forwarded at a time, so that connections take turns.
const CHUNK: usize = 4096;

pub struct ThrottledProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Waits until `bytes` may pass.
    fn take(bucket: &Mutex<Bucket>, bytes: usize) {
        loop {
            let wait = {
                let mut bucket = bucket.lock().unwrap();
                let now = Instant::now();
                bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * bucket.rate)
                    .min(bucket.burst);
                bucket.at = now;
                if bucket.tokens >= bytes as f64 {
                    bucket.tokens -= bytes as f64;
                    return;
                }
                (bytes as f64 - bucket.tokens) / bucket.rate
            };
            std::thread::sleep(Duration::from_secs_f64(wait.min(0.05)));
        }
    }
}

impl ThrottledProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`, letting
    /// `bytes_per_sec` through towards it across all connections.
    pub fn start(upstream: SocketAddr, bytes_per_sec: u64) -> std::io::Result<ThrottledProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let rate = bytes_per_sec as f64;
        let bucket = Arc::new(Mutex::new(Bucket {
            rate,
            burst: (rate / 20.0).max(CHUNK as f64),
            tokens: 0.0,
            at: Instant::now(),
        }));
        let accept = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            if let Ok(server) = TcpStream::connect(upstream) {
                                pipe(client, server, Arc::clone(&bucket), Arc::clone(&stop));
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(ThrottledProxy { addr, stop, accept: Some(accept) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Copies client → server through the bucket and server → client freely, each on a thread.
fn pipe(client: TcpStream, server: TcpStream, bucket: Arc<Mutex<Bucket>>, stop: Arc<AtomicBool>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else { return };
    let (mut server_in, mut client_out) = (server, client);
    std::thread::spawn(move || {
        let mut buffer = [0u8; CHUNK];
        while !stop.load(Ordering::Relaxed) {
            match client_in.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    Bucket::take(&bucket, n);
                    if server_out.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_out.shutdown(Shutdown::Both);
        let _ = client_in.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Both);
    });
}

impl Drop for ThrottledProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}
