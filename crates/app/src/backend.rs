//! The seam between the app and the engine: a running call and the devices, behind traits,
//! so that UI tests can script a call without a network or a sound card.

use std::sync::Arc;

use chinwag_codec::VideoFrame;
use chinwag_engine::{Call, CallConfig, CallEvent, CallStats, Command, EngineError};
use chinwag_proto::ParticipantId;
use crossbeam_channel::Receiver;
use eframe::egui;

/// A running call, as the app sees it. Dropping it leaves.
pub trait CallSession {
    /// The next thing that happened, if any; never blocks.
    fn poll_event(&mut self) -> Option<CallEvent>;
    fn command(&mut self, command: Command);
    fn stats(&self) -> CallStats;
    /// The frame to show now for `peer`, lip-synced to its audio.
    fn video_frame(&self, peer: ParticipantId) -> Option<Arc<VideoFrame>>;
    /// The last frame this client sent.
    fn preview(&self) -> Option<Arc<VideoFrame>>;
}

/// Starts calls and lists devices.
pub trait Backend {
    /// Starts a call; `repaint` is woken whenever the call has news.
    fn start_call(
        &mut self,
        config: CallConfig,
        repaint: &egui::Context,
    ) -> Result<Box<dyn CallSession>, EngineError>;
    fn devices(&mut self) -> DeviceLists;
}

/// The devices a person can choose from, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLists {
    pub microphones: Vec<String>,
    pub speakers: Vec<String>,
    pub cameras: Vec<String>,
}

/// The real thing: `chinwag_engine::Call` and the system's devices.
#[derive(Debug, Default)]
pub struct EngineBackend;

impl Backend for EngineBackend {
    fn start_call(
        &mut self,
        config: CallConfig,
        repaint: &egui::Context,
    ) -> Result<Box<dyn CallSession>, EngineError> {
        Ok(Box::new(EngineSession::start(config, repaint.clone())?))
    }

    fn devices(&mut self) -> DeviceLists {
        DeviceLists {
            microphones: chinwag_capture::input_device_names(),
            speakers: chinwag_capture::output_device_names(),
            cameras: chinwag_capture::list_cameras().into_iter().map(|camera| camera.name).collect(),
        }
    }
}

/// A `Call` whose events wake the UI: a small thread forwards each one and asks for a repaint,
/// so that the window sleeps while nothing happens.
pub struct EngineSession {
    call: Call,
    events: Receiver<CallEvent>,
}

impl EngineSession {
    pub fn start(config: CallConfig, repaint: egui::Context) -> Result<Self, EngineError> {
        let call = Call::start(config)?;
        let from_call = call.events().clone();
        let (to_ui, events) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("chinwag-ui-waker".into())
            .spawn(move || {
                // Ends when the call's threads have gone (the sender side closes) or the
                // session was dropped (sending fails).
                while let Ok(event) = from_call.recv() {
                    if to_ui.send(event).is_err() {
                        break;
                    }
                    repaint.request_repaint();
                }
            })
            .expect("the OS lets us start a thread");
        Ok(Self { call, events })
    }
}

impl CallSession for EngineSession {
    fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.try_recv().ok()
    }

    fn command(&mut self, command: Command) {
        self.call.command(command);
    }

    fn stats(&self) -> CallStats {
        self.call.stats()
    }

    fn video_frame(&self, peer: ParticipantId) -> Option<Arc<VideoFrame>> {
        self.call.video_frame(peer)
    }

    fn preview(&self) -> Option<Arc<VideoFrame>> {
        self.call.preview()
    }
}
