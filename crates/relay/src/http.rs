//! The first bytes of every connection: read the HTTP request head, decide between a plain
//! HTTP answer (`/healthz`, `/metrics`, errors) and a WebSocket upgrade, and hand the bytes
//! already read back to the WebSocket handshake.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The longest request head the relay reads; browsers and WebSocket clients send far less.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// What the request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    WebSocket,
    NotFound,
    BadRequest,
}

/// A request head as read.
#[derive(Debug)]
pub struct Head {
    pub route: Route,
    /// Every byte read, so that the WebSocket handshake can read them again: the head and
    /// anything the client sent after it.
    pub bytes: Vec<u8>,
    /// How many of `bytes` are the head.
    pub len: usize,
}

/// Reads until the end of the request head.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the request"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                return Ok(Head { route: route(&request), bytes: buf, len });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) | Err(_) => {
                let len = buf.len();
                return Ok(Head { route: Route::BadRequest, bytes: buf, len });
            }
        }
    }
}

fn route(request: &httparse::Request<'_, '_>) -> Route {
    let path = request.path.unwrap_or("").split('?').next().unwrap_or("");
    let is_upgrade = request.headers.iter().any(|header| {
        header.name.eq_ignore_ascii_case("upgrade")
            && std::str::from_utf8(header.value)
                .is_ok_and(|value| value.trim().eq_ignore_ascii_case("websocket"))
    });
    match (request.method, path) {
        (Some("GET"), chinwag_proto::WS_PATH) if is_upgrade => Route::WebSocket,
        (Some("GET"), "/healthz") => Route::Health,
        (Some("GET"), "/metrics") => Route::Metrics,
        (Some("GET"), _) => Route::NotFound,
        _ => Route::BadRequest,
    }
}

/// Writes a complete HTTP/1.1 response and closes the write side.
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A stream that first yields `prefix`, then reads from `inner`; writes go to `inner`.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self { prefix, read: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read < self.prefix.len() {
            let rest = &self.prefix[self.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.read += n;
            if self.read == self.prefix.len() {
                // The head is read once; keep no copy of it for the connection's life.
                self.prefix = Vec::new();
                self.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn route_of(request: &str) -> Route {
        let mut bytes = request.as_bytes();
        read_head(&mut bytes).await.unwrap().route
    }

    #[tokio::test]
    async fn routes() {
        let upgrade = "GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(route_of(upgrade).await, Route::WebSocket);
        assert_eq!(route_of("GET /v1 HTTP/1.1\r\nHost: x\r\n\r\n").await, Route::NotFound);
        assert_eq!(route_of("GET /healthz HTTP/1.1\r\n\r\n").await, Route::Health);
        assert_eq!(route_of("GET /metrics?x=1 HTTP/1.1\r\n\r\n").await, Route::Metrics);
        assert_eq!(route_of("POST /metrics HTTP/1.1\r\n\r\n").await, Route::BadRequest);
        assert_eq!(route_of("\x16\x03\x01garbage\r\n\r\n").await, Route::BadRequest);
    }

    #[tokio::test]
    async fn an_endless_head_is_cut_off() {
        let endless = format!("GET / HTTP/1.1\r\n{}", "X-Pad: aaaaaaaaaaaaaaaa\r\n".repeat(1000));
        let mut bytes = endless.as_bytes();
        assert_eq!(read_head(&mut bytes).await.unwrap().route, Route::BadRequest);
    }

    #[tokio::test]
    async fn prefixed_replays_the_head_then_reads_on() {
        let inner: &[u8] = b" world";
        let mut stream = Prefixed::new(b"hello".to_vec(), inner);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
