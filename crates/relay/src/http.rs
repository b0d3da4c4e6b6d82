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
    /// The `Origin` header, which browsers send and native clients do not.
    pub origin: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
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
                let origin = header(&request, "origin");
                let host = header(&request, "host");
                return Ok(Head { route: route(&request), bytes: buf, len, origin, host });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) | Err(_) => {
                let len = buf.len();
                return Ok(Head { route: Route::BadRequest, bytes: buf, len, origin: None, host: None });
            }
        }
    }
}

/// The first header called `name`, if its value is text.
fn header(request: &httparse::Request<'_, '_>, name: &str) -> Option<String> {
    let header = request.headers.iter().find(|header| header.name.eq_ignore_ascii_case(name))?;
    std::str::from_utf8(header.value).ok().map(|value| value.trim().to_owned())
}

/// Whether a WebSocket upgrade from a page of `origin` may go on: always without one (native
/// clients send none), from the relay's own origin (`host` over `http`, or `https` under
/// TLS), and from the origins a deployment `allowed` (`*` is any). Any other web page is
/// refused, so that a script on a site someone visits cannot join their calls.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, tls: bool, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    if allowed.iter().any(|allowed| allowed == "*" || *allowed == origin) {
        return true;
    }
    let scheme = if tls { "https" } else { "http" };
    host.is_some_and(|host| origin == format!("{scheme}://{}", host.to_ascii_lowercase()))
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
    async fn the_origin_and_host_are_read() {
        let request = "GET /v1 HTTP/1.1\r\nHost: relay:7300\r\nORIGIN:  https://a.example \r\n\r\n";
        let head = read_head(&mut request.as_bytes()).await.unwrap();
        assert_eq!(head.origin.as_deref(), Some("https://a.example"));
        assert_eq!(head.host.as_deref(), Some("relay:7300"));
    }

    #[test]
    fn only_native_clients_the_relays_own_pages_and_allowed_origins_may_upgrade() {
        let allowed = vec!["https://call.example.com".to_owned()];
        let host = Some("relay.example:7300");
        let check = |origin, tls| origin_allowed(origin, host, tls, &allowed);
        assert!(check(None, false), "native clients send no Origin");
        assert!(!check(Some("https://evil.example"), false));
        assert!(!check(Some("null"), false), "sandboxed pages and files are web pages too");
        assert!(check(Some("https://Call.Example.com/"), true));
        assert!(check(Some("http://relay.example:7300"), false), "the relay's own origin");
        assert!(!check(Some("http://relay.example:7300"), true), "not over plain http under TLS");
        assert!(check(Some("https://relay.example:7300"), true));
        assert!(!origin_allowed(Some("http://relay.example:7300"), None, false, &[]));
        assert!(origin_allowed(Some("https://any.example"), host, false, &["*".to_owned()]));
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
