//! Raising the audio threads' scheduling priority, so that a busy machine (a build, software
//! rendering, other calls) does not starve the threads that keep the voice on time.
//!
//! Real-time scheduling where the OS allows it: SCHED_FIFO on Linux (root, `CAP_SYS_NICE` or
//! an `RLIMIT_RTPRIO` allowance), a time-constraint thread on macOS, MMCSS "Audio" on Windows,
//! through `audio_thread_priority`. Where that is refused, Linux threads at least get a
//! better nice value. Only the light threads audio passes through ask (send, playout and the
//! connection, which only moves bytes), never the video encoder or decoder: a real-time thread
//! that works for long would starve the sound server itself.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{debug, info};

/// The audio threads' period, for the OS's real-time budget: 10 ms at 48 kHz.
const PERIOD_FRAMES: u32 = 480;
const RATE: u32 = 48_000;
/// The nice value asked for when real time is refused (Linux).
#[cfg(target_os = "linux")]
const NICE: i32 = -10;

/// Whether the outcome was logged at info level already (once per process is enough).
static TOLD: AtomicBool = AtomicBool::new(false);

/// Asks the OS to run the calling thread ahead of ordinary work; says once how it went.
pub(crate) fn raise_audio_thread(which: &str) {
    let outcome = match audio_thread_priority::promote_current_thread_to_real_time(PERIOD_FRAMES, RATE) {
        Ok(handle) => {
            // The thread keeps its priority until it ends; nothing demotes it. On some
            // platforms dropping the handle would (MMCSS), on Linux it holds nothing.
            #[allow(clippy::forget_non_drop, reason = "the handle has a Drop on Windows and macOS")]
            std::mem::forget(handle);
            "real-time".to_owned()
        }
        Err(error) => match raise_nice() {
            Some(nice) => format!("nice {nice} (real time refused: {error})"),
            None => format!("normal (real time refused: {error})"),
        },
    };
    if TOLD.swap(true, Ordering::Relaxed) {
        debug!(thread = which, priority = %outcome, "audio thread priority");
    } else {
        info!(thread = which, priority = %outcome, "audio thread priority");
    }
}

#[cfg(target_os = "linux")]
fn raise_nice() -> Option<i32> {
    // On Linux a nice value set with PRIO_PROCESS and id 0 applies to the calling thread only.
    // SAFETY: setpriority reads its three integer arguments and touches no memory of ours.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    (result == 0).then_some(NICE)
}

#[cfg(not(target_os = "linux"))]
fn raise_nice() -> Option<i32> {
    None
}
