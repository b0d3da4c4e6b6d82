//! Chinwag's desktop app: the eframe/egui window people call from.
//!
//! This crate owns the screens (connect, call), what they remember between runs
//! ([`Settings`], through eframe's persistence), a relay embedded for hosting and for the demo,
//! and the upload of each participant's video to an egui texture. UI code only draws and returns
//! [`Action`]s; [`ChinwagApp::apply`] carries them out in one place, and engine events update a
//! [`CallState`] in [`ChinwagApp::show`] before anything is drawn.
//!
//! It deliberately holds no media logic: capture, codecs, jitter buffers and the network live in
//! `chinwag-engine` and below, reached through the [`Backend`] and [`CallSession`] seam (which
//! [`fake`] scripts for UI tests). The main type is [`ChinwagApp`].

pub mod backend;
pub mod call;
pub mod cli;
pub mod embedded;
pub mod errors;
pub mod fake;
mod ui;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chinwag_engine::{
    CallConfig, CallEvent, Command, DeviceLists, InputSpec, MAX_NAME_CHARS, MAX_ROOM_CHARS, OutputSpec,
    ParticipantId, TransportConfig, VideoInput, VideoSettings,
};
use eframe::egui;
use serde::{Deserialize, Serialize};

pub use backend::{Backend, CallSession, EngineBackend};
pub use call::{CallState, Link, Participant, Tile};
pub use cli::Args;
pub use errors::Problem;

use crate::call::Outcome;
use crate::embedded::{Demo, EmbeddedRelay};
use crate::ui::{StatsView, VideoTextures};

/// What the app remembers between runs. The password is not among them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub server: String,
    pub room: String,
    pub name: String,
    /// Kept for this run only: secrets are not written to disk.
    #[serde(skip)]
    pub password: String,
    /// The port a hosted relay listens on.
    pub host_port: u16,
    /// `None`: the system's default.
    pub microphone: Option<String>,
    pub speaker: Option<String>,
    pub camera: CameraChoice,
    /// Whether to send video when joining.
    pub camera_on: bool,
    /// Push to talk: the microphone is muted except while Space is held.
    pub push_to_talk: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: "localhost".to_owned(),
            room: "lobby".to_owned(),
            name: login_name(),
            password: String::new(),
            host_port: chinwag_engine::DEFAULT_PORT,
            microphone: None,
            speaker: None,
            camera: CameraChoice::FirstCamera,
            camera_on: false,
            push_to_talk: false,
        }
    }
}

/// The name the person logged in with, as a first display name; "Guest" when there is none
/// that makes a valid name.
pub fn login_name() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| chinwag_engine::validate_name(name, MAX_NAME_CHARS).is_ok())
        .unwrap_or_else(|| "Guest".to_owned())
}

/// What "camera on" sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CameraChoice {
    FirstCamera,
    Named(String),
    /// The synthetic colour bars: for trying video without a camera.
    TestPattern,
}

impl CameraChoice {
    fn video_input(&self) -> VideoInput {
        match self {
            CameraChoice::FirstCamera => VideoInput::Camera(None),
            CameraChoice::Named(name) => VideoInput::Camera(Some(name.clone())),
            CameraChoice::TestPattern => VideoInput::Pattern,
        }
    }

    pub fn label(&self) -> String {
        match self {
            CameraChoice::FirstCamera => "First camera found".to_owned(),
            CameraChoice::Named(name) => name.clone(),
            CameraChoice::TestPattern => "Test pattern".to_owned(),
        }
    }
}

/// Everything a person can ask for. The UI returns these; [`ChinwagApp::apply`] carries them
/// out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Join,
    Host,
    Demo,
    Leave,
    DismissProblem,
    SetMuted(bool),
    SetCamera(bool),
    SetVolume(ParticipantId, f32),
    /// Shows one tile large in the window, or all of them again.
    Enlarge(Option<Tile>),
    /// Makes the window fill the screen, or not.
    WindowFullScreen(bool),
    ShowConnection(bool),
    ShowDevices(bool),
    ChooseMicrophone(Option<String>),
    ChooseSpeaker(Option<String>),
    ChooseCamera(CameraChoice),
    SetPushToTalk(bool),
    DismissNotices,
    Quit,
}

/// The key under which [`Settings`] are stored.
pub const SETTINGS_KEY: &str = "chinwag-settings";

/// The window's state.
pub struct ChinwagApp {
    pub settings: Settings,
    backend: Box<dyn Backend>,
    /// Overrides the devices in [`Settings`] (tests and the demo bot use synthetic audio).
    audio_override: Option<(InputSpec, OutputSpec)>,
    screen: Screen,
    /// Why the last call ended or could not start, shown on the connect screen.
    problem: Option<Problem>,
    /// Actions to apply on the next frame (from the command line).
    pending: Vec<Action>,
    devices: Option<DeviceLists>,
    textures: VideoTextures,
    stats: StatsView,
    /// The window title last asked for.
    title: String,
    window_full_screen: bool,
}

enum Screen {
    Connect,
    Call(Box<ActiveCall>),
}

/// A call and what it needs to keep running.
struct ActiveCall {
    // Field order is drop order: leave the call before stopping a relay it talks to.
    session: Box<dyn CallSession>,
    state: CallState,
    _embedded: Embedded,
}

/// What runs inside the app for this call, held only so that it stops when the call ends.
#[expect(dead_code, reason = "the fields are held for their Drop")]
enum Embedded {
    Nothing,
    Host(EmbeddedRelay),
    Demo(Demo),
}

use crate::call::NO_CAMERA;

/// How often the connection figures are read from the engine.
const STATS_REFRESH: Duration = Duration::from_millis(250);
/// Repaint pace while video may be arriving (the engine sends at most 30 frames a second).
const VIDEO_REPAINT: Duration = Duration::from_millis(33);
/// Repaint pace for speaking indicators and figures when nobody sends video.
const AUDIO_ONLY_REPAINT: Duration = Duration::from_millis(200);

impl ChinwagApp {
    /// A new window's app on the real engine, with remembered settings and the command line.
    pub fn new(cc: &eframe::CreationContext<'_>, args: Args) -> Self {
        let mut settings: Settings =
            cc.storage.and_then(|storage| eframe::get_value(storage, SETTINGS_KEY)).unwrap_or_default();
        if settings.name.trim().is_empty() {
            settings.name = login_name();
        }
        Self::with_backend(Box::new(EngineBackend::default()), settings).with_args(args)
    }

    pub fn with_backend(backend: Box<dyn Backend>, settings: Settings) -> Self {
        Self {
            settings,
            backend,
            audio_override: None,
            screen: Screen::Connect,
            problem: None,
            pending: Vec::new(),
            devices: None,
            textures: VideoTextures::default(),
            stats: StatsView::default(),
            title: String::new(),
            window_full_screen: false,
        }
    }

    /// Lets command-line flags override remembered values, and queues `--join` or `--demo`.
    pub fn with_args(mut self, args: Args) -> Self {
        let Args { server, room, name, password, join, demo } = args;
        if let Some(server) = server {
            self.settings.server = server;
        }
        if let Some(room) = room {
            self.settings.room = room;
        }
        if let Some(name) = name {
            self.settings.name = name;
        }
        if let Some(password) = password {
            self.settings.password = password;
        }
        if demo {
            self.pending.push(Action::Demo);
        } else if join {
            self.pending.push(Action::Join);
        }
        self
    }

    /// Uses these instead of the chosen microphone and speaker.
    pub fn with_audio(mut self, input: InputSpec, output: OutputSpec) -> Self {
        self.audio_override = Some((input, output));
        self
    }

    /// The call in progress, if any.
    pub fn call_state(&self) -> Option<&CallState> {
        match &self.screen {
            Screen::Call(call) => Some(&call.state),
            Screen::Connect => None,
        }
    }

    /// What the connect screen says went wrong.
    pub fn problem(&self) -> Option<&Problem> {
        self.problem.as_ref()
    }

    /// One frame: take in the call's news, draw, then carry out what was asked.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let mut actions = std::mem::take(&mut self.pending);
        self.poll_call();
        if let Some(devices) = self.backend.poll_devices() {
            self.devices = Some(devices);
        }
        self.update_title(&ctx);
        match &mut self.screen {
            Screen::Connect => {
                actions.extend(ui::connect::show(ui, &mut self.settings, self.problem.as_ref()));
            }
            Screen::Call(call) => {
                let now = Instant::now();
                if self.stats.due(now, STATS_REFRESH) {
                    self.stats.refresh(call.session.stats(), now);
                }
                let view = ui::call::View {
                    state: &call.state,
                    session: call.session.as_ref(),
                    stats: &self.stats,
                    settings: &self.settings,
                    devices: self.devices.as_ref(),
                };
                actions.extend(ui::call::show(ui, &view, &mut self.textures));
                let video = call.state.camera || call.state.peers.values().any(|peer| peer.camera);
                ctx.request_repaint_after(if video { VIDEO_REPAINT } else { AUDIO_ONLY_REPAINT });
            }
        }
        for action in actions {
            self.apply(action, &ctx);
        }
    }

    /// Applies the call's events to its state; leaves the call screen if the call ended.
    fn poll_call(&mut self) {
        let Screen::Call(call) = &mut self.screen else { return };
        while let Some(event) = call.session.poll_event() {
            if matches!(event, CallEvent::VideoStopped { .. }) {
                // No camera, or it went away: it stays off until asked for again.
                self.settings.camera_on = false;
            }
            if let Outcome::Ended(problem) = call.state.handle_event(event) {
                self.problem = problem;
                self.end_call();
                return;
            }
        }
    }

    /// Back to the connect screen. Dropping the call and any relay or demo it ran only asks
    /// them to stop: nothing here waits for the network or a device.
    fn end_call(&mut self) {
        self.screen = Screen::Connect;
        self.textures.clear();
        self.stats = StatsView::default();
    }

    /// The window title names the room and how many are in it.
    fn update_title(&mut self, ctx: &egui::Context) {
        let title = match &self.screen {
            Screen::Connect => "Chinwag".to_owned(),
            Screen::Call(call) => {
                let people = call.state.peers.len() + 1;
                let people = if people == 1 { "just you".to_owned() } else { format!("{people} people") };
                format!("{} ({people}) – Chinwag", call.state.room)
            }
        };
        if title != self.title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }

    /// The window title as last set.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// Carries out one action. The only place the app changes a call.
    pub fn apply(&mut self, action: Action, ctx: &egui::Context) {
        match action {
            Action::Join => {
                if let Err(problem) = self.join(ctx) {
                    self.problem = Some(problem);
                }
            }
            Action::Host => {
                if let Err(problem) = self.host(ctx) {
                    self.problem = Some(problem);
                }
            }
            Action::Demo => {
                if let Err(problem) = self.demo(ctx) {
                    self.problem = Some(problem);
                }
            }
            Action::Leave => {
                self.problem = None;
                self.end_call();
                if self.window_full_screen {
                    self.apply(Action::WindowFullScreen(false), ctx);
                }
            }
            Action::DismissProblem => self.problem = None,
            Action::Quit => {
                self.end_call();
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            Action::ChooseMicrophone(name) => {
                self.settings.microphone = name.clone();
                self.command(Command::SetInput(InputSpec::Device(name)));
            }
            Action::ChooseSpeaker(name) => {
                self.settings.speaker = name.clone();
                self.command(Command::SetOutput(OutputSpec::Device(name)));
            }
            Action::ChooseCamera(choice) => {
                self.settings.camera = choice.clone();
                if self.call_state().is_some_and(|state| state.camera) {
                    self.command(Command::SetVideoInput(choice.video_input()));
                }
            }
            Action::SetPushToTalk(on) => {
                self.settings.push_to_talk = on;
                // Push to talk starts muted; without it the microphone stays as it is.
                if on {
                    self.apply(Action::SetMuted(true), ctx);
                }
            }
            Action::SetMuted(muted) => {
                self.command(Command::SetMuted(muted));
                self.with_call(|state| state.muted = muted);
            }
            Action::SetCamera(on) => {
                let input = if on { self.camera_input() } else { Some(VideoInput::None) };
                match input {
                    Some(input) => {
                        self.settings.camera_on = on;
                        self.command(Command::SetVideoInput(input));
                        self.with_call(|state| state.camera = on);
                    }
                    None => self.with_call(|state| state.push_notice(NO_CAMERA.to_owned())),
                }
            }
            Action::SetVolume(id, volume) => {
                let volume = volume.clamp(0.0, chinwag_engine::MAX_VOLUME);
                self.command(Command::SetPeerVolume(id, volume));
                self.with_call(|state| {
                    if let Some(peer) = state.peers.get_mut(&id) {
                        peer.volume = volume;
                    }
                });
            }
            Action::Enlarge(tile) => self.with_call(|state| state.enlarged = tile),
            Action::WindowFullScreen(on) => {
                self.window_full_screen = on;
                ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(on));
                self.with_call(|state| state.window_full_screen = on);
            }
            Action::ShowConnection(show) => {
                self.stats.expire();
                self.with_call(|state| state.show_connection = show);
            }
            Action::ShowDevices(show) => {
                if show {
                    // Listed afresh each time the panel opens (devices come and go), on a
                    // thread of their own: the old lists show until the new ones arrive.
                    self.backend.request_devices(ctx);
                }
                self.with_call(|state| state.show_devices = show);
            }
            Action::DismissNotices => self.with_call(|state| state.notices.clear()),
        }
    }

    fn command(&mut self, command: Command) {
        if let Screen::Call(call) = &mut self.screen {
            call.session.command(command);
        }
    }

    fn with_call(&mut self, change: impl FnOnce(&mut CallState)) {
        if let Screen::Call(call) = &mut self.screen {
            change(&mut call.state);
        }
    }

    /// The camera to open, or `None` if the choice is the first camera and the devices last
    /// listed had none. When nobody has listed them yet, the engine tries, and says so if
    /// there is none (listing cameras here would keep the window waiting).
    fn camera_input(&self) -> Option<VideoInput> {
        if self.settings.camera == CameraChoice::FirstCamera
            && self.devices.as_ref().is_some_and(|devices| devices.cameras.is_empty())
        {
            return None;
        }
        Some(self.settings.camera.video_input())
    }

    /// Joins what the connect screen names.
    fn join(&mut self, ctx: &egui::Context) -> Result<(), Problem> {
        let server = self.settings.server.trim().to_owned();
        chinwag_engine::server_url(&server).map_err(|error| errors::describe_failure(&error))?;
        let room = self.settings.room.trim().to_owned();
        self.start_call(server, room, Embedded::Nothing, None, ctx)
    }

    /// Starts a relay in the app on the chosen port and joins it.
    fn host(&mut self, ctx: &egui::Context) -> Result<(), Problem> {
        let port = self.settings.host_port;
        let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let relay = match EmbeddedRelay::start(listen) {
            Ok(relay) => relay,
            Err(error) if error.port_in_use() => {
                let problem = match embedded::free_port_after(port) {
                    Some(free) => {
                        // Offer the free port: pressing Host a call again uses it.
                        self.settings.host_port = free;
                        Problem::new(
                            format!("Port {port} is already in use"),
                            format!(
                                "Another program (perhaps another relay) listens on port {port}. Port {free} \
                                 is free: press Host a call again to use it."
                            ),
                        )
                    }
                    None => Problem::new(
                        format!("Port {port} is already in use"),
                        "Another program listens on it. Choose another port to host on.",
                    ),
                };
                return Err(problem);
            }
            Err(error) => {
                return Err(Problem::new(
                    "Cannot host a call",
                    format!("{}.", errors::capitalise(&error.to_string())),
                ));
            }
        };
        let server = relay.loopback_url();
        let addresses = relay.dial_addresses();
        let room = self.settings.room.trim().to_owned();
        self.start_call(server, room, Embedded::Host(relay), Some(addresses), ctx)
    }

    /// Starts the demo relay and bot and joins their room.
    fn demo(&mut self, ctx: &egui::Context) -> Result<(), Problem> {
        let demo = Demo::start().map_err(|error| {
            Problem::new("Cannot start the demo", format!("{}.", errors::capitalise(&error.to_string())))
        })?;
        // The demo has a room of its own; what the person typed stays as it was.
        let server = demo.relay().loopback_url();
        self.start_call(server, embedded::DEMO_ROOM.to_owned(), Embedded::Demo(demo), None, ctx)
    }

    fn start_call(
        &mut self,
        server: String,
        room: String,
        embedded: Embedded,
        hosting: Option<Vec<String>>,
        ctx: &egui::Context,
    ) -> Result<(), Problem> {
        let name = self.settings.name.trim().to_owned();
        chinwag_engine::validate_name(&name, MAX_NAME_CHARS).map_err(|error| {
            Problem::new("Choose a display name", errors::describe_invalid("Your name", &error))
        })?;
        chinwag_engine::validate_room(&room, MAX_ROOM_CHARS)
            .map_err(|error| Problem::new("Choose a room", errors::describe_invalid("The room", &error)))?;
        let password = Some(self.settings.password.clone()).filter(|password| !password.is_empty());
        chinwag_engine::validate_password(password.as_deref()).map_err(|error| {
            Problem::new("Check the password", errors::describe_invalid("The password", &error))
        })?;

        let mut transport = TransportConfig::new(server, room.clone(), name.clone());
        transport.password = password;
        // The app waits for a relay that is slow to answer, showing the retries; a wrong name
        // or a refused port still fails at once, in plain words.
        transport.retry_first_connect = true;
        let mut config = CallConfig::new(transport);
        (config.input, config.output) = self.audio_override.clone().unwrap_or_else(|| {
            (
                InputSpec::Device(self.settings.microphone.clone()),
                OutputSpec::Device(self.settings.speaker.clone()),
            )
        });
        // Only open a camera at the start if one was on last time and one is there.
        let video_input = if self.settings.camera_on { self.camera_input() } else { Some(VideoInput::None) };
        let camera = video_input.as_ref().is_some_and(|input| *input != VideoInput::None);
        config.video = VideoSettings {
            input: video_input.clone().unwrap_or(VideoInput::None),
            ..VideoSettings::default()
        };

        let session = self.backend.start_call(config, ctx).map_err(|error| {
            Problem::new("Cannot start the call", format!("{}.", errors::capitalise(&error.to_string())))
        })?;
        let mut state = CallState::new(room, name, camera);
        state.hosting = hosting;
        if video_input.is_none() {
            state.push_notice(NO_CAMERA.to_owned());
        }
        self.problem = None;
        self.stats = StatsView::default();
        self.screen = Screen::Call(Box::new(ActiveCall { session, state, _embedded: embedded }));
        Ok(())
    }
}

impl eframe::App for ChinwagApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, SETTINGS_KEY, &self.settings);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        // Leave the call and stop any embedded relay before the process goes.
        self.end_call();
    }
}
