//! The app driven through its accessibility tree, with a scripted call: no network, no devices.

use std::time::Duration;

use chinwag::fake::{FakeRemote, fake_backend};
use chinwag::{ChinwagApp, Settings};
use chinwag_engine::{
    CallEvent, Command, DeviceLists, ErrorCode, ParticipantId, Peer, TransportError, VideoFrame,
};
use eframe::egui::{self, Role};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};

const SIZE: [f32; 2] = [1000.0, 640.0];

fn app(settings: Settings) -> (Harness<'static, ChinwagApp>, FakeRemote) {
    let (backend, remote) = fake_backend();
    let app = ChinwagApp::with_backend(Box::new(backend), settings);
    let harness =
        Harness::builder().with_size(SIZE).build_ui_state(|ui, app: &mut ChinwagApp| app.show(ui), app);
    (harness, remote)
}

fn ready_settings() -> Settings {
    Settings {
        server: "relay.example:7300".into(),
        room: "standup".into(),
        name: "Me".into(),
        ..Settings::default()
    }
}

/// An app in a call (joined, as id 1) with the given peers.
fn in_call(peers: &[(u32, &str, bool)]) -> (Harness<'static, ChinwagApp>, FakeRemote) {
    let (mut harness, remote) = app(ready_settings());
    harness.run();
    harness.get_by_label("Join").click();
    harness.run();
    remote.send(CallEvent::Joined {
        id: ParticipantId(1),
        room: "standup".into(),
        peers: peers
            .iter()
            .map(|&(id, name, camera)| Peer {
                id: ParticipantId(id),
                name: name.into(),
                muted: false,
                camera,
            })
            .collect(),
        rejoined: false,
    });
    harness.run();
    (harness, remote)
}

fn type_into(harness: &mut Harness<'_, ChinwagApp>, role: Role, label: &str, text: &str) {
    harness.get_by_role_and_label(role, label).focus();
    harness.run();
    harness.get_by_role_and_label(role, label).type_text(text);
    harness.run();
}

fn tile_names(harness: &Harness<'_, ChinwagApp>) -> Vec<String> {
    let mut names: Vec<String> = harness
        .get_all_by_role(Role::Button)
        .filter_map(|node| node.accesskit_node().label())
        .filter_map(|label| label.strip_prefix("Tile: ").map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn connect_screen_joins_with_what_was_typed() {
    let settings =
        Settings { server: String::new(), room: String::new(), name: String::new(), ..Settings::default() };
    let (mut harness, remote) = app(settings);
    harness.run();
    type_into(&mut harness, Role::TextInput, "Server", "relay.example:7300");
    type_into(&mut harness, Role::TextInput, "Room", "standup");
    type_into(&mut harness, Role::TextInput, "Your name", "Ada");
    type_into(&mut harness, Role::PasswordInput, "Password", "hunter2");
    harness.get_by_label("Join").click();
    harness.run();

    let configs = remote.configs();
    assert_eq!(configs.len(), 1, "Join starts one call");
    let transport = &configs[0].transport;
    assert_eq!(
        (transport.server.as_str(), transport.room.as_str(), transport.name.as_str()),
        ("relay.example:7300", "standup", "Ada")
    );
    assert_eq!(transport.password.as_deref(), Some("hunter2"));
    assert!(transport.retry_first_connect, "the app keeps trying and shows it");
    assert!(harness.state().call_state().is_some());
    harness.get_by_label("Mute");
}

#[test]
fn nothing_is_dialled_without_a_name_or_with_a_bad_address() {
    let (mut harness, remote) = app(Settings { name: String::new(), ..ready_settings() });
    harness.run();
    harness.get_by_label("Join").click();
    harness.run();
    harness.get_by_label_contains("Choose a display name");
    harness.get_by_label_contains("Your name is empty.");

    harness.state_mut().settings.name = "Ada".into();
    harness.state_mut().settings.server = "ftp://relay.example".into();
    harness.get_by_label("Join").click();
    harness.run();
    harness.get_by_label_contains("That is not a relay address");
    assert!(remote.configs().is_empty());
}

#[test]
fn each_failure_is_shown_in_plain_words() {
    let url = "ws://relay.example:7300/v1".to_owned();
    let refused = |code| TransportError::Refused { code, message: "refused".into() };
    let cases = [
        (
            TransportError::Unreachable { url: url.clone(), reason: "connection refused".into() },
            "Cannot reach the relay",
        ),
        (
            TransportError::Tls { url: url.clone(), reason: "invalid peer certificate".into() },
            "Secure connection failed (TLS problem)",
        ),
        (
            TransportError::NotARelay { url: url.clone(), reason: "HTTP 404".into() },
            "That address is not a Chinwag relay",
        ),
        (
            TransportError::UnknownHost { host: "relay.exmaple".into(), reason: "x".into() },
            "No relay by that name",
        ),
        (TransportError::ConnectionRefused { url: url.clone() }, "Nothing answers at that address"),
        (TransportError::RelayFull { url: url.clone() }, "The relay is full"),
        (refused(ErrorCode::WrongPassword), "Wrong password"),
        (refused(ErrorCode::RoomFull), "The room is full"),
        (refused(ErrorCode::UnsupportedVersion), "Version mismatch"),
        (TransportError::Lost { url: url.clone(), reason: "reset by peer".into() }, "Connection lost"),
    ];
    for (error, headline) in cases {
        let (mut harness, remote) = app(ready_settings());
        harness.run();
        harness.get_by_label("Join").click();
        harness.run();
        remote.send(CallEvent::Failed(error));
        harness.run();
        assert!(harness.state().call_state().is_none(), "{headline}: back on the connect screen");
        assert_eq!(remote.live_sessions(), 0, "{headline}: the failed call was dropped");
        harness.get_by_label(headline);
        harness.get_by_label("Join");
    }
}

#[test]
fn retrying_is_shown_while_the_call_screen_stays() {
    let (mut harness, remote) = app(ready_settings());
    harness.run();
    harness.get_by_label("Join").click();
    harness.run();
    remote.send(CallEvent::Reconnecting {
        error: TransportError::Unreachable {
            url: "ws://relay.example:7300/v1".into(),
            reason: "no answer within 10 s".into(),
        },
        retry_in: Duration::from_secs(2),
    });
    harness.run();
    harness.get_by_label_contains("Cannot reach the relay yet. Retrying");
    harness.get_by_label_contains("No answer from relay.example:7300");

    remote.send(CallEvent::Joined {
        id: ParticipantId(1),
        room: "standup".into(),
        peers: vec![],
        rejoined: false,
    });
    let lost = TransportError::Lost { url: "ws://relay.example:7300/v1".into(), reason: "reset".into() };
    remote.send(CallEvent::Reconnecting { error: lost, retry_in: Duration::from_secs(1) });
    harness.run();
    harness.get_by_label_contains("Connection lost. Reconnecting");
}

#[test]
fn two_peers_show_two_tiles_with_their_names() {
    let (mut harness, remote) = in_call(&[(2, "Ada Lovelace", true), (3, "Bo", false)]);
    remote.set_frame(ParticipantId(2), VideoFrame::filled(64, 48, [200, 40, 40, 255]));
    harness.run();
    assert_eq!(tile_names(&harness), ["Ada Lovelace", "Bo"]);
    harness.get_by_label_contains("Connected with 2 others");

    remote.send(CallEvent::PeerJoined(Peer {
        id: ParticipantId(4),
        name: "Cy".into(),
        muted: true,
        camera: false,
    }));
    harness.run();
    assert_eq!(tile_names(&harness), ["Ada Lovelace", "Bo", "Cy"]);
    assert!(harness.state().call_state().is_some_and(|call| call.peers[&ParticipantId(4)].muted));

    remote.send(CallEvent::PeerLeft(ParticipantId(2)));
    harness.run();
    assert_eq!(tile_names(&harness), ["Bo", "Cy"]);
}

#[test]
fn a_tile_is_enlarged_and_back() {
    let (mut harness, _remote) = in_call(&[(2, "Ada", true), (3, "Bo", true)]);
    harness.get_by_label("Tile: Bo").click();
    harness.run();
    assert_eq!(tile_names(&harness), ["Bo"]);
    harness.key_press(egui::Key::Escape);
    harness.run();
    assert_eq!(tile_names(&harness), ["Ada", "Bo"]);
}

#[test]
fn mute_camera_and_leave_by_button_and_keyboard() {
    let (mut harness, remote) = in_call(&[(2, "Ada", true)]);
    harness.get_by_label("Mute").click();
    harness.run();
    assert_eq!(remote.commands().last(), Some(&Command::SetMuted(true)));
    harness.get_by_label("Unmute");
    assert!(harness.state().call_state().is_some_and(|call| call.muted));

    harness.key_press(egui::Key::M);
    harness.run();
    assert_eq!(remote.commands().last(), Some(&Command::SetMuted(false)));
    harness.get_by_label("Mute");

    // V asks for the camera; when there is none, the engine says so and the app tells.
    harness.key_press(egui::Key::V);
    harness.run();
    assert_eq!(
        remote.commands().last(),
        Some(&Command::SetVideoInput(chinwag_engine::VideoInput::Camera(None)))
    );
    remote.send(CallEvent::VideoStopped { error: "no camera found".into() });
    harness.run();
    harness.get_by_label_contains("No camera found");
    assert!(harness.state().call_state().is_some_and(|call| !call.camera));
    assert!(!harness.state().settings.camera_on, "not asked for again at the next join");

    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Q);
    harness.run();
    assert!(harness.state().call_state().is_none());
    assert_eq!(remote.live_sessions(), 0, "leaving drops the call");
    harness.get_by_label("Join");
}

#[test]
fn volume_per_participant() {
    let (mut harness, remote) = in_call(&[(2, "Ada", true)]);
    harness.get_by_label("Volume for Ada").set_value_accesskit(0.5);
    harness.run();
    assert_eq!(remote.commands().last(), Some(&Command::SetPeerVolume(ParticipantId(2), 0.5)));
}

#[test]
fn devices_panel_says_no_camera_found() {
    let (mut harness, remote) = in_call(&[(2, "Ada", true)]);
    remote.set_devices(DeviceLists {
        microphones: vec!["Built-in".into()],
        speakers: vec![],
        cameras: vec![],
    });
    harness.get_by_label("Devices").click();
    harness.run();
    harness.get_by_label("No camera found.");
    harness.get_by_label("No speaker found.");
}

#[test]
fn the_connect_screen_does_not_repaint_when_idle() {
    let (mut harness, _remote) = app(ready_settings());
    harness.run();
    let delay = harness.output().viewport_output[&egui::ViewportId::ROOT].repaint_delay;
    assert!(delay > Duration::from_secs(60), "no repaint is scheduled, got {delay:?}");
}

#[test]
fn push_to_talk_opens_the_microphone_only_while_space_is_held() {
    let (mut harness, remote) = in_call(&[(2, "Ada", true)]);
    remote.set_devices(DeviceLists {
        microphones: vec!["Built-in".into()],
        speakers: vec!["Built-in".into()],
        cameras: vec![],
    });
    harness.get_by_label("Devices").click();
    harness.run();
    harness.get_by_label("Microphone level");
    harness.get_by_label("Push to talk (hold Space)").click();
    harness.run();
    assert_eq!(remote.commands().last(), Some(&Command::SetMuted(true)), "push to talk starts muted");
    assert!(harness.state().settings.push_to_talk);

    harness.key_down(egui::Key::Space);
    harness.run();
    assert_eq!(remote.commands().last(), Some(&Command::SetMuted(false)), "holding Space talks");
    harness.key_up(egui::Key::Space);
    harness.run();
    assert_eq!(remote.commands().last(), Some(&Command::SetMuted(true)), "letting go mutes again");
}

#[test]
fn a_first_launch_offers_the_login_name_and_the_title_names_the_room() {
    let settings = Settings::default();
    assert_eq!(settings.name, chinwag::login_name(), "the name field starts filled in");
    assert!(!settings.name.trim().is_empty());
    let (mut harness, _remote) = in_call(&[(2, "Ada", true), (3, "Bo", false)]);
    harness.run();
    assert_eq!(harness.state().title(), "standup (3 people) – Chinwag");
    harness.get_by_label("Leave").click();
    harness.run();
    assert_eq!(harness.state().title(), "Chinwag");
}
