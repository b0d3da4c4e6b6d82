//! The seam between the app and the engine: a running call and the devices, behind traits,
//! so that UI tests can script a call without a network or a sound card.

use std::sync::Arc;

use chinwag_engine::{
    Call, CallConfig, CallEvent, CallStats, Command, DeviceLists, EngineError, ParticipantId, VideoFrame,
    Waker,
};
use crossbeam_channel::Receiver;
use eframe::egui;

/// A running call, as the app sees it. Dropping it leaves, without waiting.
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

/// Starts calls and lists devices; nothing here may keep the UI thread waiting.
pub trait Backend {
    /// Starts a call; `repaint` is woken whenever the call has news.
    fn start_call(
        &mut self,
        config: CallConfig,
        repaint: &egui::Context,
    ) -> Result<Box<dyn CallSession>, EngineError>;
    /// Starts listing the devices; the lists arrive through [`Backend::poll_devices`], and
    /// `repaint` is woken when they do.
    fn request_devices(&mut self, repaint: &egui::Context);
    /// The lists asked for, once they are ready.
    fn poll_devices(&mut self) -> Option<DeviceLists>;
}

/// The real thing: `chinwag_engine::Call` and the system's devices.
#[derive(Debug, Default)]
pub struct EngineBackend {
    devices: Option<Receiver<DeviceLists>>,
}

impl Backend for EngineBackend {
    fn start_call(
        &mut self,
        config: CallConfig,
        repaint: &egui::Context,
    ) -> Result<Box<dyn CallSession>, EngineError> {
        Ok(Box::new(EngineSession::start(config, repaint.clone())?))
    }

    fn request_devices(&mut self, repaint: &egui::Context) {
        if self.devices.is_some() {
            return;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let repaint = repaint.clone();
        // Asking ALSA and the cameras can take a second or more: never on the UI thread.
        let spawned = std::thread::Builder::new().name("chinwag-devices".into()).spawn(move || {
            let _ = tx.send(chinwag_engine::list_devices());
            repaint.request_repaint();
        });
        match spawned {
            Ok(_) => self.devices = Some(rx),
            Err(error) => tracing::warn!(%error, "cannot list devices"),
        }
    }

    fn poll_devices(&mut self) -> Option<DeviceLists> {
        let lists = self.devices.as_ref()?.try_recv().ok()?;
        self.devices = None;
        Some(lists)
    }
}

/// A `Call` whose events wake the UI through the engine's waker.
pub struct EngineSession {
    call: Call,
    events: Receiver<CallEvent>,
}

impl EngineSession {
    pub fn start(mut config: CallConfig, repaint: egui::Context) -> Result<Self, EngineError> {
        config.waker = Some(Waker::new(move || repaint.request_repaint()));
        let call = Call::start(config)?;
        let events = call.events().clone();
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
