//! Cameras through nokhwa.
//!
//! Each open camera has its own capture thread, `chinwag-camera`, which only copies each frame
//! into a one-slot lock-free queue, replacing a frame the caller has not taken yet (and
//! counting it): it never waits for the caller. The caller's thread takes the newest frame and
//! converts it. A camera that already compresses to MJPEG has its JPEG passed through as it is;
//! raw formats become RGBA.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use nokhwa::Camera;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};

use crate::convert::{jpeg_len, raw_frame_len, raw_to_rgba};
use crate::{CaptureError, CapturedFrame, FrameContent, VideoSource};

/// What a camera is asked for when the caller passes zero for the size or the frame rate.
const DEFAULT_SIZE: (u32, u32) = (640, 480);
const DEFAULT_FPS: u32 = 30;
/// How long opening a camera may take, including its first format change.
const OPEN_LIMIT: Duration = Duration::from_secs(10);
/// How long a caller waits for a frame before calling the camera lost. Cameras can take a
/// second or two to deliver their first frame while their exposure settles.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// How many reads in a row may fail before the camera counts as gone.
const MAX_FAILED_READS: u32 = 10;
/// How long dropping a source waits for its capture thread before leaving it to finish alone.
const STOP_LIMIT: Duration = Duration::from_secs(2);
/// Every format nokhwa names; [`choose_format`] decides among them.
const ALL_FORMATS: [FrameFormat; 6] = [
    FrameFormat::MJPEG,
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
    FrameFormat::GRAY,
];

/// A camera the system offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// The backend's index for it ("0" for `/dev/video0` on Linux); [`CameraSource::open`]
    /// takes it as well as the name.
    pub id: String,
    pub name: String,
}

impl std::fmt::Display for CameraInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.id, self.name)
    }
}

/// The cameras the platform's backend (V4L2, AVFoundation or Media Foundation) offers; empty
/// when there are none or the backend cannot be asked.
///
/// On Linux every `/dev/video*` node is listed, including the metadata nodes many webcams add
/// beside their capture node; opening one of those fails.
pub fn list_cameras() -> Vec<CameraInfo> {
    query().into_iter().map(|(info, _)| info).collect()
}

fn query() -> Vec<(CameraInfo, CameraIndex)> {
    nokhwa::query(ApiBackend::Auto)
        .unwrap_or_default()
        .into_iter()
        .map(|camera| {
            let index = camera.index().clone();
            (CameraInfo { id: index.as_string(), name: camera.human_name() }, index)
        })
        .collect()
}

/// An open camera, capturing on its own thread until dropped.
pub struct CameraSource {
    name: String,
    format: CameraFormat,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected once the capture thread has ended, however it ended.
    exited: mpsc::Receiver<()>,
}

impl CameraSource {
    /// Opens the camera `name_or_index` (its [`CameraInfo::id`], its name, or part of its name;
    /// `None` or `"default"` for the first one that opens) and starts capturing.
    ///
    /// Of the formats the camera offers it takes the one closest to `width`×`height` (zero for
    /// 640×480), then closest to `fps` (zero for 30): MJPEG when it is at exactly that size,
    /// since its frames can be sent as they are, otherwise preferably a raw format. The
    /// camera's own size and rate are then [`VideoSource::size`] and [`VideoSource::fps`].
    pub fn open(
        name_or_index: Option<&str>,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<Self, CaptureError> {
        let wanted = if width == 0 || height == 0 { DEFAULT_SIZE } else { (width, height) };
        let wanted =
            Wanted { width: wanted.0, height: wanted.1, fps: if fps == 0 { DEFAULT_FPS } else { fps } };
        let cameras = query();
        let infos: Vec<CameraInfo> = cameras.iter().map(|(info, _)| info.clone()).collect();
        let candidates = matching(&infos, name_or_index)?;
        if !nokhwa::nokhwa_check() {
            // macOS asks the user once; until they agree, no camera opens.
            nokhwa::nokhwa_initialize(|_granted| {});
            return Err(CaptureError::CameraUnavailable {
                name: infos[candidates[0]].name.clone(),
                reason: "this program may not use the camera yet: allow it when asked, or in the \
                         system's privacy settings, and try again"
                    .into(),
            });
        }
        let mut first_error = None;
        for candidate in candidates {
            let (info, index) = &cameras[candidate];
            let index = index.clone();
            match Self::start(&info.name, move || open_camera(index, wanted)) {
                Ok(source) => return Ok(source),
                Err(error) => {
                    tracing::debug!("camera {info} did not open: {error}");
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.expect("matching returns at least one camera or an error"))
    }

    /// Starts the capture thread, which opens the camera with `open` (nokhwa's cameras cannot
    /// move between threads) and then grabs frames until told to stop.
    fn start<G, F>(name: &str, open: F) -> Result<Self, CaptureError>
    where
        G: Grabber,
        F: FnOnce() -> Result<(G, CameraFormat), String> + Send + 'static,
    {
        let unavailable = |reason: String| CaptureError::CameraUnavailable { name: name.to_owned(), reason };
        let shared = Arc::new(Shared {
            slot: ArrayQueue::new(1),
            spare: ArrayQueue::new(2),
            stop: AtomicBool::new(false),
            failure: OnceLock::new(),
            dropped: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
        });
        let (ready_sender, ready) = mpsc::sync_channel(1);
        let (exited_sender, exited) = mpsc::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("chinwag-camera".into())
            .spawn(move || {
                let _exited = exited_sender;
                match open() {
                    Ok((grabber, format)) => {
                        let _ = ready_sender.send(Ok(format));
                        capture(grabber, format, &thread_shared);
                    }
                    Err(reason) => {
                        let _ = ready_sender.send(Err(reason));
                    }
                }
            })
            .map_err(|e| unavailable(format!("cannot start its capture thread: {e}")))?;
        match ready.recv_timeout(OPEN_LIMIT) {
            Ok(Ok(format)) => {
                tracing::info!("camera \"{name}\" opened: {format}");
                Ok(Self { name: name.to_owned(), format, shared, thread: Some(thread), exited })
            }
            Ok(Err(reason)) => {
                let _ = thread.join();
                Err(unavailable(reason))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The thread stops by itself if the camera ever opens.
                shared.stop.store(true, Ordering::Relaxed);
                Err(unavailable(format!("it did not start within {} s", OPEN_LIMIT.as_secs())))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                Err(unavailable("its capture thread failed while opening it".into()))
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The camera's pixel format, as nokhwa names it: "MJPEG", "YUYV", "NV12", ...
    pub fn pixel_format(&self) -> String {
        self.format.format().to_string()
    }

    /// Frames the capture thread replaced before the caller took them (the caller fell behind).
    pub fn dropped_frames(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Frames skipped because they were not a complete image.
    pub fn corrupt_frames(&self) -> u64 {
        self.shared.corrupt.load(Ordering::Relaxed)
    }

    fn lost(&self, reason: String) -> CaptureError {
        CaptureError::CameraLost { name: self.name.clone(), reason }
    }
}

impl VideoSource for CameraSource {
    fn next_frame(&mut self) -> Result<CapturedFrame, CaptureError> {
        let (width, height) = (self.format.width(), self.format.height());
        let waiting_since = Instant::now();
        loop {
            if let Some(RawFrame { data, captured_at }) = self.shared.slot.pop() {
                let format = self.format.format();
                if format == FrameFormat::MJPEG {
                    return Ok(CapturedFrame {
                        captured_at,
                        content: FrameContent::Jpeg { data, width, height },
                    });
                }
                let converted = raw_to_rgba(format, &data, width, height);
                let _dropped_because_spares_are_full = self.shared.spare.push(data);
                match converted {
                    Some(frame) => {
                        return Ok(CapturedFrame { captured_at, content: FrameContent::Rgba(frame) });
                    }
                    None => {
                        self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            if let Some(reason) = self.shared.failure.get() {
                return Err(self.lost(reason.clone()));
            }
            if let Err(mpsc::TryRecvError::Disconnected) = self.exited.try_recv() {
                return Err(self.lost("its capture thread ended".into()));
            }
            if waiting_since.elapsed() > STALL_LIMIT {
                return Err(self.lost(format!("no frame for {} s", STALL_LIMIT.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn size(&self) -> (u32, u32) {
        (self.format.width(), self.format.height())
    }

    fn fps(&self) -> u32 {
        self.format.frame_rate()
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // The thread notices between two frames. A camera that hangs in a read is left to its
        // thread rather than hanging whoever closed it.
        match self.exited.recv_timeout(STOP_LIMIT) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            _ => tracing::warn!("camera \"{}\" did not stop within {} s", self.name, STOP_LIMIT.as_secs()),
        }
    }
}

/// What the capture thread and the caller share: lock-free queues, atomics, and a failure
/// written once when the thread gives up.
struct Shared {
    /// The newest frame the caller has not taken yet.
    slot: ArrayQueue<RawFrame>,
    /// Buffers the caller has finished with, for the capture thread to fill again.
    spare: ArrayQueue<Vec<u8>>,
    stop: AtomicBool,
    failure: OnceLock<String>,
    dropped: AtomicU64,
    corrupt: AtomicU64,
}

/// One frame as the camera delivered it, cut to its length.
struct RawFrame {
    data: Vec<u8>,
    /// When the frame reached this process: after the exposure by the driver's transfer time.
    captured_at: Instant,
}

/// Where frames come from: a nokhwa camera, or a fake in the tests.
trait Grabber {
    /// Blocks until the next frame and returns its bytes, which may run on past the frame.
    fn grab(&mut self) -> Result<Cow<'_, [u8]>, String>;
}

impl Grabber for Camera {
    fn grab(&mut self) -> Result<Cow<'_, [u8]>, String> {
        self.frame_raw().map_err(|e| e.to_string())
    }
}

/// The capture thread's loop: grab, cut, hand over, never wait for the caller.
fn capture(mut grabber: impl Grabber, format: CameraFormat, shared: &Shared) {
    let raw_len = raw_frame_len(format.format(), format.width(), format.height());
    let mut reusable: Option<Vec<u8>> = None;
    let mut failed_reads = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let bytes = match grabber.grab() {
            Ok(bytes) => bytes,
            Err(reason) => {
                failed_reads += 1;
                if failed_reads >= MAX_FAILED_READS {
                    let _ = shared.failure.set(reason);
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        failed_reads = 0;
        let captured_at = Instant::now();
        let len = match raw_len {
            Some(len) => (bytes.len() >= len).then_some(len),
            None => jpeg_len(&bytes),
        };
        let Some(len) = len else {
            shared.corrupt.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut data = reusable.take().or_else(|| shared.spare.pop()).unwrap_or_default();
        data.clear();
        data.extend_from_slice(&bytes[..len]);
        if let Some(overwritten) = shared.slot.force_push(RawFrame { data, captured_at }) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            reusable = Some(overwritten.data);
        }
    }
}

/// What the caller asked for, defaults filled in.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    width: u32,
    height: u32,
    fps: u32,
}

/// Opens the camera, switches it to the format [`choose_format`] picks, and starts its stream.
fn open_camera(index: CameraIndex, wanted: Wanted) -> Result<(Camera, CameraFormat), String> {
    let any_format = RequestedFormat::with_formats(RequestedFormatType::None, &ALL_FORMATS);
    let mut camera = Camera::new(index, any_format).map_err(describe)?;
    let offered = camera.compatible_camera_formats().map_err(|e| format!("cannot list its formats: {e}"))?;
    let chosen = choose_format(&offered, wanted).ok_or("it offers no format Chinwag can read")?;
    if camera.camera_format() != chosen {
        let exact = RequestedFormat::with_formats(RequestedFormatType::Exact(chosen), &ALL_FORMATS);
        camera.set_camera_requset(exact).map_err(|e| format!("cannot switch it to {chosen}: {e}"))?;
    }
    camera.open_stream().map_err(|e| format!("cannot start its stream: {}", describe(e)))?;
    let format = camera.camera_format();
    Ok((camera, format))
}

/// nokhwa's error, with what to do about the common ones.
fn describe(error: nokhwa::NokhwaError) -> String {
    let text = error.to_string();
    let lower = text.to_lowercase();
    if lower.contains("busy") {
        format!("another program is using it ({text})")
    } else if lower.contains("permission denied") {
        format!("this user may not use it; on Linux, join the \"video\" group ({text})")
    } else {
        text
    }
}

/// The offered format closest to what was asked for: nearest in size (width and height
/// differences summed), then in frame rate, then the cheapest to use. MJPEG at exactly the
/// asked-for size is best, since its frames go out as they are; at any other size a raw format
/// is better, since RGBA can be scaled without decoding first.
fn choose_format(offered: &[CameraFormat], wanted: Wanted) -> Option<CameraFormat> {
    offered.iter().copied().min_by_key(|format| {
        let size_distance = format.width().abs_diff(wanted.width) + format.height().abs_diff(wanted.height);
        let rank = match format.format() {
            FrameFormat::MJPEG if size_distance == 0 => 0,
            FrameFormat::YUYV => 1,
            FrameFormat::NV12 => 2,
            FrameFormat::RAWRGB => 3,
            FrameFormat::RAWBGR => 4,
            FrameFormat::MJPEG => 5,
            FrameFormat::GRAY => 6,
        };
        let fps_distance = format.frame_rate().abs_diff(wanted.fps);
        // Ties go to the faster rate, then the larger frame.
        (
            size_distance,
            fps_distance,
            rank,
            std::cmp::Reverse(format.frame_rate()),
            std::cmp::Reverse(format.width()),
        )
    })
}

/// The positions in `cameras` to try for `wanted`, best first: all of them for none or
/// "default", else those whose id or name is `wanted`, else those whose name contains it.
fn matching(cameras: &[CameraInfo], wanted: Option<&str>) -> Result<Vec<usize>, CaptureError> {
    if cameras.is_empty() {
        return Err(CaptureError::NoCamera);
    }
    let wanted = match wanted.map(str::trim) {
        None | Some("" | "default") => return Ok((0..cameras.len()).collect()),
        Some(wanted) => wanted,
    };
    let positions = |matches: &dyn Fn(&CameraInfo) -> bool| -> Vec<usize> {
        cameras.iter().enumerate().filter(|(_, camera)| matches(camera)).map(|(i, _)| i).collect()
    };
    let exact = positions(&|camera| camera.id == wanted || camera.name == wanted);
    if !exact.is_empty() {
        return Ok(exact);
    }
    let lower = wanted.to_lowercase();
    let partial = positions(&|camera| camera.name.to_lowercase().contains(&lower));
    if !partial.is_empty() {
        return Ok(partial);
    }
    let available: Vec<String> =
        cameras.iter().map(|camera| format!("{} \"{}\"", camera.id, camera.name)).collect();
    Err(CaptureError::CameraUnavailable {
        name: wanted.to_owned(),
        reason: format!("no camera has that name or number; available: {}", available.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use nokhwa::utils::Resolution;

    use super::*;
    use crate::convert::tests::jpeg_shape;

    fn format(width: u32, height: u32, format: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new(Resolution::new(width, height), format, fps)
    }

    fn wanted(width: u32, height: u32, fps: u32) -> Wanted {
        Wanted { width, height, fps }
    }

    #[test]
    fn listing_and_opening_say_clearly_when_there_is_no_camera() {
        let cameras = list_cameras();
        match CameraSource::open(None, 640, 480, 30) {
            Err(error) if cameras.is_empty() => {
                assert!(matches!(error, CaptureError::NoCamera), "{error:?}");
                assert_eq!(error.to_string(), "no camera found");
            }
            Err(error) => assert!(error.to_string().contains("camera"), "a readable error: {error}"),
            Ok(camera) => assert!(cameras.iter().any(|info| info.name == camera.name())),
        }
        if cameras.is_empty() {
            let error = CameraSource::open(Some("Integrated Camera"), 0, 0, 0).err().unwrap();
            assert!(matches!(error, CaptureError::NoCamera), "{error:?}");
        }
    }

    #[test]
    fn a_camera_is_found_by_id_name_or_part_of_its_name() {
        let cameras = [
            CameraInfo { id: "0".into(), name: "Integrated Camera: Integrated C".into() },
            CameraInfo { id: "1".into(), name: "Integrated Camera: Integrated I".into() },
            CameraInfo { id: "2".into(), name: "USB Webcam".into() },
        ];
        assert_eq!(matching(&cameras, None).unwrap(), [0, 1, 2]);
        assert_eq!(matching(&cameras, Some("default")).unwrap(), [0, 1, 2]);
        assert_eq!(matching(&cameras, Some("2")).unwrap(), [2]);
        assert_eq!(matching(&cameras, Some("USB Webcam")).unwrap(), [2]);
        assert_eq!(matching(&cameras, Some("integrated")).unwrap(), [0, 1]);
        let error = matching(&cameras, Some("Logitech")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot open camera \"Logitech\": no camera has that name or number; available: \
             0 \"Integrated Camera: Integrated C\", 1 \"Integrated Camera: Integrated I\", 2 \"USB Webcam\""
        );
        assert!(matches!(matching(&[], Some("2")), Err(CaptureError::NoCamera)));
    }

    #[test]
    fn the_format_closest_to_the_request_is_chosen() {
        let usb2_webcam = [
            format(640, 480, FrameFormat::YUYV, 30),
            format(640, 480, FrameFormat::MJPEG, 30),
            format(1280, 720, FrameFormat::YUYV, 10),
            format(1280, 720, FrameFormat::MJPEG, 30),
            format(320, 240, FrameFormat::YUYV, 30),
        ];
        let choose = |offered: &[CameraFormat], w, h, fps| choose_format(offered, wanted(w, h, fps)).unwrap();
        // MJPEG at the asked-for size goes out as it is.
        assert_eq!(choose(&usb2_webcam, 640, 480, 30), format(640, 480, FrameFormat::MJPEG, 30));
        // The rate matters before the pixel format.
        assert_eq!(choose(&usb2_webcam, 1280, 720, 30), format(1280, 720, FrameFormat::MJPEG, 30));
        // Nothing at the asked-for size: the nearest, raw rather than MJPEG.
        assert_eq!(choose(&usb2_webcam, 352, 288, 30), format(320, 240, FrameFormat::YUYV, 30));
        let raw_only = [format(640, 480, FrameFormat::YUYV, 15), format(640, 480, FrameFormat::YUYV, 30)];
        assert_eq!(choose(&raw_only, 640, 480, 25), format(640, 480, FrameFormat::YUYV, 30));
        let odd = [format(800, 600, FrameFormat::NV12, 30), format(1920, 1080, FrameFormat::MJPEG, 30)];
        assert_eq!(choose(&odd, 640, 480, 30), format(800, 600, FrameFormat::NV12, 30));
        assert_eq!(choose_format(&[], wanted(640, 480, 30)), None);
    }

    /// Replays `frames` in turn, one every `period`, after `failures_first` failed reads, and
    /// says when it is dropped.
    struct FakeCamera {
        frames: Vec<Vec<u8>>,
        next: usize,
        period: Duration,
        failing: bool,
        reads: Arc<AtomicU32>,
        dropped: Arc<AtomicBool>,
    }

    impl Grabber for FakeCamera {
        fn grab(&mut self) -> Result<Cow<'_, [u8]>, String> {
            std::thread::sleep(self.period);
            self.reads.fetch_add(1, Ordering::Relaxed);
            if self.failing {
                return Err("No such device".into());
            }
            let frame = &self.frames[self.next % self.frames.len()];
            self.next += 1;
            Ok(Cow::Borrowed(frame))
        }
    }

    impl Drop for FakeCamera {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::Relaxed);
        }
    }

    fn fake(
        frames: Vec<Vec<u8>>,
        period: Duration,
        failing: bool,
    ) -> (FakeCamera, Arc<AtomicU32>, Arc<AtomicBool>) {
        let reads = Arc::new(AtomicU32::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let camera = FakeCamera {
            frames,
            next: 0,
            period,
            failing,
            reads: Arc::clone(&reads),
            dropped: Arc::clone(&dropped),
        };
        (camera, reads, dropped)
    }

    #[test]
    fn raw_frames_are_converted_and_a_slow_caller_gets_the_newest() {
        // 2x1 YUYV frames whose luma counts up, each in a buffer with padding after it.
        let frames: Vec<Vec<u8>> = (0..200u8).map(|i| vec![16 + i, 128, 16 + i, 128, 0xAA, 0xAA]).collect();
        let (camera, reads, dropped) = fake(frames, Duration::from_millis(1), false);
        let format = format(2, 1, FrameFormat::YUYV, 30);
        let mut source = CameraSource::start("Fake", move || Ok((camera, format))).unwrap();
        assert_eq!((source.size(), source.fps(), source.pixel_format().as_str()), ((2, 1), 30, "YUYV"));
        let first = source.next_frame().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let reads_before = reads.load(Ordering::Relaxed);
        let newest = source.next_frame().unwrap();
        let (FrameContent::Rgba(first_rgba), FrameContent::Rgba(newest_rgba)) =
            (&first.content, &newest.content)
        else {
            panic!("YUYV becomes RGBA");
        };
        assert_eq!(newest_rgba.rgba.len(), 2 * 4);
        assert!(
            newest_rgba.rgba[0] > first_rgba.rgba[0] + 10,
            "frames captured while the caller slept were skipped"
        );
        assert!(u64::from(reads_before) <= source.dropped_frames() + 3, "skipped frames are counted");
        assert!(newest.captured_at > first.captured_at);
        drop(source);
        assert!(
            dropped.load(Ordering::Relaxed),
            "dropping the source stops the thread and closes the camera"
        );
    }

    #[test]
    fn mjpeg_is_passed_through_cut_to_the_image() {
        let jpeg = jpeg_shape();
        let mut buffer = jpeg.clone();
        buffer.resize(4096, 0);
        let (camera, _, _) = fake(vec![buffer, vec![0; 4096]], Duration::from_millis(5), false);
        let format = format(640, 480, FrameFormat::MJPEG, 30);
        let mut source = CameraSource::start("Fake", move || Ok((camera, format))).unwrap();
        let frame = source.next_frame().unwrap();
        assert_eq!(frame.content, FrameContent::Jpeg { data: jpeg, width: 640, height: 480 });
        std::thread::sleep(Duration::from_millis(30));
        assert!(source.corrupt_frames() > 0, "a buffer without a JPEG is skipped and counted");
    }

    #[test]
    fn a_camera_that_fails_or_never_opens_gives_a_readable_error() {
        let (camera, _, _) = fake(vec![vec![0; 8]], Duration::ZERO, true);
        let format = format(2, 2, FrameFormat::YUYV, 30);
        let mut source = CameraSource::start("USB Webcam", move || Ok((camera, format))).unwrap();
        let error = source.next_frame().unwrap_err();
        assert_eq!(error.to_string(), "camera \"USB Webcam\" stopped: No such device");

        let error = CameraSource::start::<FakeCamera, _>("USB Webcam", || {
            Err("another program is using it (Device or resource busy)".into())
        })
        .err()
        .unwrap();
        assert_eq!(
            error.to_string(),
            "cannot open camera \"USB Webcam\": another program is using it (Device or resource busy)"
        );
    }

    #[test]
    fn video_sources_can_move_to_the_video_thread() {
        fn send<T: Send>() {}
        send::<CameraSource>();
        send::<crate::TestPatternSource>();
    }
}
