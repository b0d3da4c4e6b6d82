//! A stream that shows every byte a client sends to a [`FrameMeter`] before the WebSocket
//! library reads it, and fails a read once the client goes over its limits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limiter::{FrameMeter, RateExceeded};

/// How much a connection over its limits may still be read while it closes: enough for the
/// close handshake, which keeps the error message from being destroyed by a reset.
const DRAIN_BYTES: usize = 64 << 10;

pub struct Metered<S> {
    inner: S,
    meter: FrameMeter,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Metering,
    /// The bytes that went over the limit were handed on, so that the WebSocket library does
    /// not lose its place; the next read fails.
    Exceeded,
    /// The failure was reported: what the connection sends while it closes is read, up to a
    /// point, without being metered.
    Draining {
        left: usize,
    },
}

impl<S> Metered<S> {
    pub fn new(inner: S, meter: FrameMeter) -> Self {
        Self { inner, meter, state: State::Metering }
    }
}

/// Whether a read failed because the client went over its limits.
pub fn is_rate_exceeded(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<RateExceeded>())
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.state {
            State::Metering => {}
            State::Exceeded => {
                self.state = State::Draining { left: DRAIN_BYTES };
                return Poll::Ready(Err(io::Error::other(RateExceeded)));
            }
            State::Draining { left: 0 } => return Poll::Ready(Err(io::Error::other(RateExceeded))),
            State::Draining { .. } => {}
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            let read = &buf.filled()[before..];
            match &mut this.state {
                State::Metering => {
                    if this.meter.handle_bytes(Instant::now(), read).is_err() {
                        this.state = State::Exceeded;
                    }
                }
                State::Draining { left } => *left = left.saturating_sub(read.len()),
                State::Exceeded => {}
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
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
