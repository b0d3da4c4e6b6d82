//! Keeping each receiver's kernel queue of unsent bytes short, so that the receiver's queue
//! (control, then audio, then video) decides what goes next, not the order things were handed
//! to the kernel; the same as a client does with its uplink.
//!
//! On Linux, `TCP_NOTSENT_LOWAT` keeps the socket from asking for more while unsent bytes are
//! over a small mark, and `SIOCOUTQNSD` tells how many are unsent, so that video is held back
//! in the receiver's queue (where a newer frame replaces it) until the kernel's is nearly
//! empty. Elsewhere only the send buffer's cap bounds the kernel's queue.

use tokio::net::TcpStream;

/// The most the kernel may hold unsent before video waits: a few milliseconds of a slow link.
pub(crate) const VIDEO_GATE_BYTES: u32 = 2048;

/// Sets a connection up for calls: no Nagle delay, a capped send buffer, a short unsent queue.
pub(crate) fn tune(stream: &TcpStream, send_buffer: Option<usize>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(bytes) = send_buffer {
        socket2::SockRef::from(stream).set_send_buffer_size(bytes)?;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let lowat: libc::c_int = VIDEO_GATE_BYTES as libc::c_int;
        // SAFETY: a valid socket descriptor and a pointer to a c_int that outlives the call.
        let result = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                std::ptr::from_ref(&lowat).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads how many bytes a socket's kernel queue holds that have not been sent yet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unsent {
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::RawFd>,
}

impl Unsent {
    /// For `stream`, which must outlive every use of the result.
    pub(crate) fn of(stream: &TcpStream) -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            Self { fd: Some(stream.as_raw_fd()) }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = stream;
            Self {}
        }
    }

    /// Whether the kernel holds few enough unsent bytes for a video frame to go (always, where
    /// the OS does not say).
    pub(crate) fn video_may_go(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            let Some(fd) = self.fd else { return true };
            let mut unsent: libc::c_int = 0;
            // SAFETY: SIOCOUTQNSD writes one c_int through the pointer, which is valid; the
            // descriptor belongs to a socket that is still open (see `of`).
            let result = unsafe { libc::ioctl(fd, libc::SIOCOUTQNSD, std::ptr::from_mut(&mut unsent)) };
            result != 0 || (unsent.max(0) as u32) < VIDEO_GATE_BYTES
        }
        #[cfg(not(target_os = "linux"))]
        {
            true
        }
    }
}
