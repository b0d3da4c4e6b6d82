//! Keeping the kernel's queue of unsent bytes short, so that the application's priority order
//! (control, then audio, then video) decides what goes next, not the order things were handed
//! to the kernel: a kernel send buffer holding a quarter of a megabyte of video makes every
//! audio frame behind it wait seconds on a slow uplink.
//!
//! On Linux, `TCP_NOTSENT_LOWAT` keeps the socket from asking for more while unsent bytes
//! are over a small mark, and `SIOCOUTQNSD` tells how many are unsent, so that video is held
//! back in the application's queue (where a newer frame replaces it) until the kernel's queue
//! is nearly empty. Elsewhere a small send buffer bounds the kernel's queue instead.

use tokio::net::TcpStream;

/// The most the kernel may hold unsent before video waits: a few milliseconds of a slow link.
pub(crate) const VIDEO_GATE_BYTES: u32 = 2048;
/// Where `TCP_NOTSENT_LOWAT` is not available: the send buffer, which bounds what the kernel
/// holds (sent and unsent) at the cost of throughput on long, fast paths.
#[cfg(not(target_os = "linux"))]
const SEND_BUFFER_BYTES: usize = 64 << 10;

/// Sets the socket up for calls: no Nagle delay, and a short kernel queue.
pub(crate) fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let lowat: libc::c_int = VIDEO_GATE_BYTES as libc::c_int;
        // SAFETY: a valid socket descriptor and a pointer to a c_int that outlives the call.
        let _ignored_because_a_kernel_without_it_still_carries_calls = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                std::ptr::from_ref(&lowat).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ignored_because_the_default_buffer_still_carries_calls =
            socket2::SockRef::from(stream).set_send_buffer_size(SEND_BUFFER_BYTES);
    }
}

/// Reads how many bytes a socket's kernel queue holds that have not been sent yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unsent {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::RawFd,
}

impl Unsent {
    /// For `stream`, which must outlive every use of the result.
    pub(crate) fn of(stream: &TcpStream) -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            Self { fd: stream.as_raw_fd() }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = stream;
            Self {}
        }
    }

    /// Bytes queued and not yet sent, where the OS says.
    pub(crate) fn bytes(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            let mut unsent: libc::c_int = 0;
            // SAFETY: SIOCOUTQNSD writes one c_int through the pointer, which is valid; the
            // descriptor belongs to a socket that is still open (see `of`).
            let result = unsafe { libc::ioctl(self.fd, libc::SIOCOUTQNSD, std::ptr::from_mut(&mut unsent)) };
            (result == 0).then_some(unsent.max(0) as u32)
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }
}
