//! The call screen: video tiles, the roster with volumes, controls, connection figures and
//! devices.

use eframe::egui::{self, Align2, Color32, FontId, Rect, Sense, Stroke, StrokeKind, pos2, vec2};

use chinwag_engine::{DeviceLists, MAX_VOLUME};

use crate::backend::CallSession;
use crate::call::{CallState, Link, Tile, initials};
use crate::ui::{StatsView, VideoTextures, grid_layout};
use crate::{Action, CameraChoice, Settings};

/// What the call screen draws from.
pub struct View<'a> {
    pub state: &'a CallState,
    pub session: &'a dyn CallSession,
    pub stats: &'a StatsView,
    pub settings: &'a Settings,
    pub devices: Option<&'a DeviceLists>,
}

const SPEAKING_COLOUR: Color32 = Color32::from_rgb(70, 200, 100);

pub fn show(ui: &mut egui::Ui, view: &View<'_>, textures: &mut VideoTextures) -> Vec<Action> {
    let mut actions = Vec::new();
    let state = view.state;
    shortcuts(ui, state, view.settings.push_to_talk, &mut actions);

    egui::Panel::top("call-bar").show(ui, |ui| top_bar(ui, view, &mut actions));
    egui::Panel::right("roster")
        .resizable(true)
        .default_size(250.0)
        .show(ui, |ui| roster(ui, view, textures, &mut actions));
    if state.show_connection {
        egui::Panel::bottom("connection").resizable(true).show(ui, |ui| connection(ui, view));
    }
    if state.show_devices {
        devices(ui.ctx(), view, &mut actions);
    }
    egui::CentralPanel::default().show(ui, |ui| tiles(ui, view, textures, &mut actions));

    textures.retain(|tile| match tile {
        Tile::Me => true,
        Tile::Peer(id) => state.peers.contains_key(id),
    });
    actions
}

/// M mutes, V toggles the camera (unless a text field has the keyboard), Ctrl+Q leaves, F11
/// toggles the window's full screen, and Escape shows every tile again and leaves full
/// screen. With push to talk on, the microphone is open only while Space is
/// held.
fn shortcuts(ui: &mut egui::Ui, state: &CallState, push_to_talk: bool, actions: &mut Vec<Action>) {
    let typing = ui.ctx().text_edit_focused();
    if push_to_talk && !typing && ui.input(|input| input.key_down(egui::Key::Space)) {
        // Space is for talking now: it must not also press whatever button has the focus.
        ui.ctx().memory_mut(|memory| {
            if let Some(focused) = memory.focused() {
                memory.surrender_focus(focused);
            }
        });
    }
    ui.input_mut(|input| {
        if input.consume_key(egui::Modifiers::COMMAND, egui::Key::Q) {
            actions.push(Action::Leave);
        }
        if typing {
            return;
        }
        if push_to_talk {
            let talking = input.key_down(egui::Key::Space);
            if talking == state.muted {
                actions.push(Action::SetMuted(!talking));
            }
        }
        if input.consume_key(egui::Modifiers::NONE, egui::Key::M) {
            actions.push(Action::SetMuted(!state.muted));
        }
        if input.consume_key(egui::Modifiers::NONE, egui::Key::V) {
            actions.push(Action::SetCamera(!state.camera));
        }
        if input.consume_key(egui::Modifiers::NONE, egui::Key::F11) {
            actions.push(Action::WindowFullScreen(!state.window_full_screen));
        }
        if input.consume_key(egui::Modifiers::NONE, egui::Key::Escape) {
            if state.enlarged.is_some() {
                actions.push(Action::Enlarge(None));
            } else if state.window_full_screen {
                actions.push(Action::WindowFullScreen(false));
            }
        }
    });
}

fn top_bar(ui: &mut egui::Ui, view: &View<'_>, actions: &mut Vec<Action>) {
    let state = view.state;
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        ui.strong(format!("Room {}", state.room));
        ui.label(state.status_line());
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let leave = egui::Button::new(egui::RichText::new("Leave").color(Color32::WHITE))
                .fill(Color32::from_rgb(180, 40, 40));
            if ui.add(leave).on_hover_text("Ctrl+Q").clicked() {
                actions.push(Action::Leave);
            }
            let full = state.window_full_screen;
            let full_label = if full { "Exit full screen" } else { "Full screen" };
            if ui.button(full_label).on_hover_text("F11").clicked() {
                actions.push(Action::WindowFullScreen(!full));
            }
            if ui.add(egui::Button::selectable(state.show_devices, "Devices")).clicked() {
                actions.push(Action::ShowDevices(!state.show_devices));
            }
            if ui.add(egui::Button::selectable(state.show_connection, "Connection")).clicked() {
                actions.push(Action::ShowConnection(!state.show_connection));
            }
            let camera = if state.camera { "Stop camera" } else { "Start camera" };
            if ui.button(camera).on_hover_text("V").clicked() {
                actions.push(Action::SetCamera(!state.camera));
            }
            let mute = if state.muted { "Unmute" } else { "Mute" };
            if ui.button(mute).on_hover_text("M").clicked() {
                actions.push(Action::SetMuted(!state.muted));
            }
        });
    });
    if let Link::Retrying { reason, .. } = &state.link
        && !reason.is_empty()
    {
        ui.colored_label(ui.visuals().warn_fg_color, reason);
    }
    if let Some(addresses) = &state.hosting {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("You are hosting. Others join room \"{}\" at:", state.room));
            for address in addresses {
                ui.add(egui::Label::new(egui::RichText::new(address).monospace()).selectable(true));
            }
        });
    }
    if !state.notices.is_empty() {
        ui.horizontal_wrapped(|ui| {
            for notice in &state.notices {
                ui.colored_label(ui.visuals().warn_fg_color, notice);
            }
            if ui.small_button("Dismiss").clicked() {
                actions.push(Action::DismissNotices);
            }
        });
    }
    ui.add_space(4.0);
}

fn roster(ui: &mut egui::Ui, view: &View<'_>, textures: &mut VideoTextures, actions: &mut Vec<Action>) {
    let state = view.state;
    ui.add_space(6.0);
    // The self-view: what this client sends.
    let width = ui.available_width().min(240.0);
    let (rect, _) = ui.allocate_exact_size(vec2(width, width * 3.0 / 4.0), Sense::hover());
    let preview =
        if state.camera { textures.update(ui.ctx(), Tile::Me, view.session.preview()) } else { None };
    paint_tile(
        ui,
        rect,
        &TileLook {
            name: &format!("{} (you)", state.my_name),
            person: &state.my_name,
            muted: state.muted,
            speaking: view.stats.latest.speaking && !state.muted,
            camera: state.camera,
            video: preview,
        },
    );

    ui.add_space(8.0);
    ui.heading("In this call");
    egui::ScrollArea::vertical().show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.label(format!("{} (you)", state.my_name));
            if state.muted {
                ui.weak("muted");
            }
        });
        for peer in state.peers.values() {
            ui.separator();
            ui.horizontal(|ui| {
                let speaking = view.stats.speaking(peer.id) && !peer.muted;
                let (dot, _) = ui.allocate_exact_size(vec2(10.0, 10.0), Sense::hover());
                let colour = if speaking { SPEAKING_COLOUR } else { ui.visuals().weak_text_color() };
                ui.painter().circle_filled(dot.center(), 4.0, colour);
                ui.label(&peer.name);
                if peer.muted {
                    ui.weak("muted");
                }
                if !peer.camera {
                    ui.weak("camera off");
                }
            });
            ui.horizontal(|ui| {
                ui.weak("Volume");
                let mut volume = peer.volume;
                let slider = egui::Slider::new(&mut volume, 0.0..=MAX_VOLUME).show_value(false);
                if ui.add(slider).accessible_name(format!("Volume for {}", peer.name)).changed() {
                    actions.push(Action::SetVolume(peer.id, volume));
                }
                ui.weak(format!("{:.0}%", peer.volume * 100.0));
            });
        }
    });
}

fn tiles(ui: &mut egui::Ui, view: &View<'_>, textures: &mut VideoTextures, actions: &mut Vec<Action>) {
    let state = view.state;
    let shown: Vec<Tile> = match state.enlarged {
        Some(tile) => vec![tile],
        None => state.peers.keys().copied().map(Tile::Peer).collect(),
    };
    if shown.is_empty() {
        ui.centered_and_justified(|ui| {
            let waiting = match state.link {
                Link::Joined => format!("Nobody else is in \"{}\" yet.", state.room),
                _ => "Connecting…".to_owned(),
            };
            ui.weak(waiting);
        });
        return;
    }
    let area = ui.available_rect_before_wrap();
    let gap = 8.0;
    let (columns, rows, size) = grid_layout(shown.len(), area.size(), gap);
    let total = vec2(
        columns as f32 * size.x + gap * (columns - 1) as f32,
        rows as f32 * size.y + gap * (rows - 1) as f32,
    );
    let origin = area.center() - total / 2.0;
    for (tile_idx, &tile) in shown.iter().enumerate() {
        let (column, row) = (tile_idx % columns, tile_idx / columns);
        let min = origin + vec2(column as f32 * (size.x + gap), row as f32 * (size.y + gap));
        let rect = Rect::from_min_size(min, size);
        let look = match tile {
            Tile::Me => TileLook {
                name: &format!("{} (you)", state.my_name),
                person: &state.my_name,
                muted: state.muted,
                speaking: view.stats.latest.speaking && !state.muted,
                camera: state.camera,
                video: if state.camera {
                    textures.update(ui.ctx(), tile, view.session.preview())
                } else {
                    None
                },
            },
            Tile::Peer(id) => {
                let Some(peer) = state.peers.get(&id) else { continue };
                TileLook {
                    name: &peer.name,
                    person: &peer.name,
                    muted: peer.muted,
                    speaking: view.stats.speaking(id) && !peer.muted,
                    camera: peer.camera,
                    video: if peer.camera {
                        textures.update(ui.ctx(), tile, view.session.video_frame(id))
                    } else {
                        None
                    },
                }
            }
        };
        let response = ui.interact(rect, ui.scope_id().with(("tile", tile)), Sense::click());
        let name = look.name.to_owned();
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, format!("Tile: {name}")));
        paint_tile(ui, rect, &look);
        let enlarged = state.enlarged.is_some();
        let hint = if enlarged { "Click to show everyone" } else { "Click to enlarge" };
        if response.on_hover_text(hint).clicked() {
            actions.push(Action::Enlarge(if enlarged { None } else { Some(tile) }));
        }
    }
    ui.allocate_rect(area, Sense::hover());
}

/// What a tile shows.
struct TileLook<'a> {
    /// What the tile's name bar says.
    name: &'a str,
    /// The person's own name, for initials.
    person: &'a str,
    muted: bool,
    speaking: bool,
    camera: bool,
    video: Option<(egui::TextureId, egui::Vec2)>,
}

fn paint_tile(ui: &egui::Ui, rect: Rect, look: &TileLook<'_>) {
    let painter = ui.painter_at(rect);
    let radius = 6.0;
    painter.rect_filled(rect, radius, Color32::from_gray(28));
    match look.video {
        Some((texture, size)) if look.camera => {
            let scale = (rect.width() / size.x).min(rect.height() / size.y);
            let fitted = Rect::from_center_size(rect.center(), size * scale);
            let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
            painter.image(texture, fitted, uv, Color32::WHITE);
        }
        _ => {
            let r = rect.width().min(rect.height()) * 0.2;
            painter.circle_filled(rect.center(), r, name_colour(look.person));
            painter.text(
                rect.center(),
                Align2::CENTER_CENTER,
                initials(look.person),
                FontId::proportional(r * 0.8),
                Color32::WHITE,
            );
            let below = if look.camera { "Waiting for video…" } else { "Camera off" };
            painter.text(
                rect.center() + vec2(0.0, r + 14.0),
                Align2::CENTER_CENTER,
                below,
                FontId::proportional(12.0),
                Color32::from_gray(170),
            );
        }
    }
    let bar = Rect::from_min_max(pos2(rect.left(), rect.bottom() - 24.0), rect.right_bottom());
    painter.rect_filled(bar, 0.0, Color32::from_black_alpha(150));
    let label = if look.muted { format!("{}  (muted)", look.name) } else { look.name.to_owned() };
    painter.text(
        bar.left_center() + vec2(8.0, 0.0),
        Align2::LEFT_CENTER,
        label,
        FontId::proportional(14.0),
        Color32::WHITE,
    );
    if look.speaking {
        painter.rect_stroke(rect, radius, Stroke::new(3.0, SPEAKING_COLOUR), StrokeKind::Inside);
    }
}

/// A steady colour per name, so a person keeps their colour across calls.
fn name_colour(name: &str) -> Color32 {
    let hash =
        name.bytes().fold(2_166_136_261_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(16_777_619));
    let hue = (hash % 360) as f32 / 360.0;
    egui::ecolor::Hsva::new(hue, 0.45, 0.55, 1.0).into()
}

fn connection(ui: &mut egui::Ui, view: &View<'_>) {
    let stats = &view.stats.latest;
    ui.add_space(4.0);
    let rtt = stats.rtt_ms.percentiles();
    ui.horizontal(|ui| {
        ui.strong("Connection");
        if rtt.count > 0 {
            ui.label(format!("Round trip to the relay: {:.0} ms (95%: {:.0} ms)", rtt.p50, rtt.p95));
        } else {
            ui.label("Round trip to the relay: not measured yet");
        }
        ui.label(format!("Sending video: {:.0} kb/s", view.stats.sent_kbps));
    });
    egui::ScrollArea::horizontal().show(ui, |ui| {
        egui::Grid::new("connection-figures").striped(true).spacing([16.0, 4.0]).show(ui, |ui| {
            for heading in [
                "Participant",
                "Jitter buffer",
                "Lost",
                "Concealed",
                "Video",
                "Mouth-to-ear",
                "Glass-to-glass",
            ] {
                ui.strong(heading);
            }
            ui.end_row();
            for peer in stats.peers.iter().filter(|peer| peer.present) {
                ui.label(&peer.name);
                let buffer = peer.jitter_buffer_ms.percentiles();
                ui.label(format!("{:.0} ms (aim {:.0} ms)", buffer.p50, peer.jitter_target_ms));
                let expected = peer.packets_received + peer.packets_lost;
                let lost =
                    if expected == 0 { 0.0 } else { peer.packets_lost as f64 * 100.0 / expected as f64 };
                ui.label(format!("{lost:.1}%"));
                ui.label(format!("{} ms", peer.concealed_ms));
                let kbps = view.stats.received_kbps.get(&peer.id).copied().unwrap_or(0.0);
                if peer.video_frames_received > 0 {
                    ui.label(format!(
                        "{}×{} at {:.0} fps, {kbps:.0} kb/s",
                        peer.video_width,
                        peer.video_height,
                        peer.video_fps()
                    ));
                } else {
                    ui.label("none");
                }
                let mouth = peer.mouth_to_ear_ms.percentiles();
                ui.label(if mouth.count > 0 {
                    format!("{:.0} ms (95%: {:.0} ms)", mouth.p50, mouth.p95)
                } else {
                    "–".to_owned()
                });
                let glass = peer.glass_to_glass_ms.percentiles();
                ui.label(if glass.count > 0 { format!("{:.0} ms", glass.p50) } else { "–".to_owned() });
                ui.end_row();
            }
        });
    });
    ui.add_space(4.0);
}

fn devices(ctx: &egui::Context, view: &View<'_>, actions: &mut Vec<Action>) {
    let mut open = true;
    let settings = view.settings;
    // Beside the tiles, under the bar: never over the controls it was opened from.
    egui::Window::new("Devices")
        .open(&mut open)
        .resizable(false)
        .collapsible(false)
        .anchor(Align2::RIGHT_TOP, vec2(-270.0, 60.0))
        .show(ctx, |ui| {
            let Some(devices) = view.devices else {
                ui.label("Looking for devices…");
                return;
            };
            egui::Grid::new("devices").num_columns(2).spacing([12.0, 8.0]).show(ui, |ui| {
                let label = ui.label("Microphone");
                ui.label_inputs_by(label.id, |ui| {
                    device_choice(ui, "Microphone", &settings.microphone, &devices.microphones, |name| {
                        actions.push(Action::ChooseMicrophone(name));
                    });
                });
                ui.end_row();
                let label = ui.label("Speaker");
                ui.label_inputs_by(label.id, |ui| {
                    device_choice(ui, "Speaker", &settings.speaker, &devices.speakers, |name| {
                        actions.push(Action::ChooseSpeaker(name));
                    });
                });
                ui.end_row();
                let label = ui.label("Camera");
                ui.label_inputs_by(label.id, |ui| {
                    egui::ComboBox::from_id_salt("Camera").selected_text(settings.camera.label()).show_ui(
                        ui,
                        |ui| {
                            let mut choices = vec![CameraChoice::FirstCamera];
                            choices.extend(devices.cameras.iter().cloned().map(CameraChoice::Named));
                            choices.push(CameraChoice::TestPattern);
                            for choice in choices {
                                if ui.selectable_label(settings.camera == choice, choice.label()).clicked() {
                                    actions.push(Action::ChooseCamera(choice));
                                }
                            }
                        },
                    );
                });
                ui.end_row();
            });
            let level = view.stats.latest.input_level;
            // Speech sits around -30 to -10 dBFS: show 60 dB of range so that it fills the bar.
            let fill = ((20.0 * level.max(1e-6).log10() + 60.0) / 60.0).clamp(0.0, 1.0);
            ui.label("Microphone level");
            ui.add(egui::ProgressBar::new(fill).desired_width(240.0));
            let mut push_to_talk = settings.push_to_talk;
            if ui.checkbox(&mut push_to_talk, "Push to talk (hold Space)").changed() {
                actions.push(Action::SetPushToTalk(push_to_talk));
            }
            if devices.cameras.is_empty() {
                ui.colored_label(ui.visuals().warn_fg_color, "No camera found.");
            }
            if devices.microphones.is_empty() {
                ui.colored_label(ui.visuals().warn_fg_color, "No microphone found.");
            }
            if devices.speakers.is_empty() {
                ui.colored_label(ui.visuals().warn_fg_color, "No speaker found.");
            }
        });
    if !open {
        actions.push(Action::ShowDevices(false));
    }
}

fn device_choice(
    ui: &mut egui::Ui,
    id: &str,
    chosen: &Option<String>,
    names: &[String],
    mut choose: impl FnMut(Option<String>),
) {
    let selected = chosen.clone().unwrap_or_else(|| "System default".to_owned());
    egui::ComboBox::from_id_salt(id).selected_text(selected).show_ui(ui, |ui| {
        if ui.selectable_label(chosen.is_none(), "System default").clicked() {
            choose(None);
        }
        for name in names {
            if ui.selectable_label(chosen.as_ref() == Some(name), name).clicked() {
                choose(Some(name.clone()));
            }
        }
    });
}
