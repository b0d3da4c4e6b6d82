//! A scripted backend for UI tests and screenshots: no network, no devices. The test holds a
//! [`FakeRemote`] to feed events in and read back what the app asked of the call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chinwag_engine::{
    CallConfig, CallEvent, CallStats, Command, DeviceLists, EngineError, ParticipantId, VideoFrame,
};
use crossbeam_channel::{Receiver, Sender};
use eframe::egui;

use crate::backend::{Backend, CallSession};

#[derive(Default)]
struct Script {
    events: Option<Sender<CallEvent>>,
    configs: Vec<CallConfig>,
    commands: Vec<Command>,
    stats: CallStats,
    frames: HashMap<ParticipantId, Arc<VideoFrame>>,
    preview: Option<Arc<VideoFrame>>,
    devices: DeviceLists,
    /// Device lists asked for and not yet delivered.
    devices_requested: bool,
    live_sessions: usize,
}

/// The app's side: give it to [`crate::ChinwagApp::with_backend`].
pub struct FakeBackend {
    script: Arc<Mutex<Script>>,
}

/// The test's side.
#[derive(Clone)]
pub struct FakeRemote {
    script: Arc<Mutex<Script>>,
}

/// A backend and the remote control that scripts it.
pub fn fake_backend() -> (FakeBackend, FakeRemote) {
    let script = Arc::new(Mutex::new(Script::default()));
    (FakeBackend { script: Arc::clone(&script) }, FakeRemote { script })
}

fn lock(script: &Mutex<Script>) -> MutexGuard<'_, Script> {
    script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeRemote {
    /// Delivers an event to the current call. Panics if no call was started.
    pub fn send(&self, event: CallEvent) {
        let script = lock(&self.script);
        let events = script.events.as_ref().expect("a call was started before events are sent");
        events.send(event).expect("the app's call is still running");
    }

    /// The configurations calls were started with, oldest first.
    pub fn configs(&self) -> Vec<CallConfig> {
        lock(&self.script).configs.clone()
    }

    /// Everything the app asked of its calls, oldest first.
    pub fn commands(&self) -> Vec<Command> {
        lock(&self.script).commands.clone()
    }

    /// How many calls are running (started and not yet dropped).
    pub fn live_sessions(&self) -> usize {
        lock(&self.script).live_sessions
    }

    pub fn set_stats(&self, stats: CallStats) {
        lock(&self.script).stats = stats;
    }

    pub fn set_frame(&self, peer: ParticipantId, frame: VideoFrame) {
        lock(&self.script).frames.insert(peer, Arc::new(frame));
    }

    pub fn set_preview(&self, frame: VideoFrame) {
        lock(&self.script).preview = Some(Arc::new(frame));
    }

    pub fn set_devices(&self, devices: DeviceLists) {
        lock(&self.script).devices = devices;
    }
}

impl Backend for FakeBackend {
    fn start_call(
        &mut self,
        config: CallConfig,
        _repaint: &egui::Context,
    ) -> Result<Box<dyn CallSession>, EngineError> {
        let (sender, events) = crossbeam_channel::unbounded();
        let mut script = lock(&self.script);
        script.events = Some(sender);
        script.configs.push(config);
        script.live_sessions += 1;
        Ok(Box::new(FakeSession { script: Arc::clone(&self.script), events }))
    }

    fn request_devices(&mut self, _repaint: &egui::Context) {
        lock(&self.script).devices_requested = true;
    }

    fn poll_devices(&mut self) -> Option<DeviceLists> {
        let mut script = lock(&self.script);
        std::mem::take(&mut script.devices_requested).then(|| script.devices.clone())
    }
}

struct FakeSession {
    script: Arc<Mutex<Script>>,
    events: Receiver<CallEvent>,
}

impl CallSession for FakeSession {
    fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.try_recv().ok()
    }

    fn command(&mut self, command: Command) {
        lock(&self.script).commands.push(command);
    }

    fn stats(&self) -> CallStats {
        lock(&self.script).stats.clone()
    }

    fn video_frame(&self, peer: ParticipantId) -> Option<Arc<VideoFrame>> {
        lock(&self.script).frames.get(&peer).cloned()
    }

    fn preview(&self) -> Option<Arc<VideoFrame>> {
        lock(&self.script).preview.clone()
    }
}

impl Drop for FakeSession {
    fn drop(&mut self) {
        lock(&self.script).live_sessions -= 1;
    }
}
