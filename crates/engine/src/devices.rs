//! Opening the devices a call asks for, with their fallbacks, and listing what there is.

use std::time::Duration;

use chinwag_capture::{AudioSink, AudioSource, CaptureError, ClockSink};

use crate::{InputSpec, OutputSpec};

/// The devices a person can choose from, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLists {
    pub microphones: Vec<String>,
    pub speakers: Vec<String>,
    pub cameras: Vec<String>,
}

/// Asks the system for its microphones, speakers and cameras. This can take a while (ALSA
/// opens each device to ask): call it from a thread that may wait, never from a UI thread.
pub fn list_devices() -> DeviceLists {
    DeviceLists {
        microphones: chinwag_capture::input_device_names(),
        speakers: chinwag_capture::output_device_names(),
        cameras: chinwag_capture::list_cameras().into_iter().map(|camera| camera.name).collect(),
    }
}

/// Opens an input as specified; `Echo` and `None` are handled by the send thread itself.
pub(crate) fn open_input(spec: &InputSpec) -> Result<Option<Box<dyn AudioSource>>, CaptureError> {
    Ok(match spec {
        InputSpec::Device(name) => Some(Box::new(chinwag_capture::MicSource::open(name.as_deref())?)),
        InputSpec::Tone(hz) => Some(Box::new(chinwag_capture::ToneSource::new(*hz, 0.5))),
        InputSpec::Wav(path) => Some(Box::new(chinwag_capture::WavSource::open(path)?)),
        InputSpec::Silence => Some(Box::new(chinwag_capture::SilenceSource::default())),
        InputSpec::None | InputSpec::Echo => None,
    })
}

pub(crate) fn open_output(spec: &OutputSpec) -> Result<Box<dyn AudioSink>, CaptureError> {
    Ok(match spec {
        OutputSpec::Device(name) => Box::new(chinwag_capture::SpeakerSink::open(name.as_deref())?),
        OutputSpec::None => Box::new(ClockSink::new(Duration::ZERO)),
    })
}

/// A named microphone falls back to the default one; anything else to silence.
pub(crate) fn input_fallback(spec: &InputSpec) -> InputSpec {
    match spec {
        InputSpec::Device(Some(name)) if name != "default" => InputSpec::Device(None),
        _ => InputSpec::Silence,
    }
}

/// A named speaker falls back to the default one; anything else to no sound output.
pub(crate) fn output_fallback(spec: &OutputSpec) -> OutputSpec {
    match spec {
        OutputSpec::Device(Some(name)) if name != "default" => OutputSpec::Device(None),
        _ => OutputSpec::None,
    }
}

pub(crate) fn describe_input(spec: &InputSpec) -> &'static str {
    match spec {
        InputSpec::Device(_) => "the default microphone",
        _ => "silence",
    }
}

pub(crate) fn describe_output(spec: &OutputSpec) -> &'static str {
    match spec {
        OutputSpec::Device(_) => "the default speaker",
        OutputSpec::None => "no sound output",
    }
}

/// Remembers the last device problem reported, so that the same one is not reported again
/// and again (a device that keeps failing the same way is one problem, not a storm).
#[derive(Debug, Default)]
pub(crate) struct ProblemOnce {
    last: Option<(String, String)>,
}

impl ProblemOnce {
    /// Whether `error` with `fallback` is news.
    pub(crate) fn is_new(&mut self, error: &str, fallback: &str) -> bool {
        let key = (error.to_owned(), fallback.to_owned());
        if self.last.as_ref() == Some(&key) {
            return false;
        }
        self.last = Some(key);
        true
    }

    /// The device works again: a later failure is news.
    pub(crate) fn clear(&mut self) {
        self.last = None;
    }
}

/// Watches the system's default device on a thread of its own (asking the system can take a
/// while, which an audio thread cannot spare) and reports when it changes. Stops when
/// dropped.
pub(crate) struct DefaultWatcher {
    changes: crossbeam_channel::Receiver<String>,
    _alive: std::sync::Arc<()>,
}

impl DefaultWatcher {
    /// Watches the default input (`input`) or output device, starting from `current`.
    pub(crate) fn start(input: bool, current: Option<String>) -> Self {
        let (tx, changes) = crossbeam_channel::bounded(1);
        let alive = std::sync::Arc::new(());
        let watching = std::sync::Arc::downgrade(&alive);
        let spawned = std::thread::Builder::new().name("chinwag-device-watch".into()).spawn(move || {
            let mut last = current;
            loop {
                std::thread::sleep(crate::DEFAULT_DEVICE_CHECK);
                if watching.upgrade().is_none() {
                    return;
                }
                let now = if input {
                    chinwag_capture::default_input_name()
                } else {
                    chinwag_capture::default_output_name()
                };
                if let Some(name) = now.filter(|name| last.as_ref() != Some(name)) {
                    last = Some(name.clone());
                    let _only_the_latest_change_matters = tx.try_send(name);
                }
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot watch the default device");
        }
        Self { changes, _alive: alive }
    }

    /// The new default device's name, once it changed.
    pub(crate) fn poll(&self) -> Option<String> {
        self.changes.try_recv().ok()
    }
}
