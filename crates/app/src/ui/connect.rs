//! The connect screen: where to call, as whom, or host a call, or try the demo.

use eframe::egui;

use crate::errors::Problem;
use crate::{Action, Settings};

pub fn show(ui: &mut egui::Ui, settings: &mut Settings, problem: Option<&Problem>) -> Vec<Action> {
    let mut actions = Vec::new();
    if ui.input_mut(|input| input.consume_key(egui::Modifiers::COMMAND, egui::Key::Q)) {
        actions.push(Action::Quit);
    }
    egui::CentralPanel::default().show(ui, |ui| {
        ui.vertical_centered(|ui| {
            ui.add_space(24.0);
            ui.heading("Chinwag");
            ui.label("Voice and video calls through a relay.");
            ui.add_space(16.0);
        });
        ui.vertical_centered(|ui| {
            ui.set_max_width(420.0);
            let mut submitted = false;
            egui::Grid::new("connect-form").num_columns(2).spacing([12.0, 8.0]).show(ui, |ui| {
                submitted |= field(ui, "Server", &mut settings.server, "host:port or wss://host", false);
                submitted |= field(ui, "Room", &mut settings.room, "lobby", false);
                submitted |= field(ui, "Your name", &mut settings.name, "How others see you", false);
                submitted |= field(ui, "Password", &mut settings.password, "Only if the room has one", true);
            });
            ui.add_space(8.0);
            if ui.add_sized([120.0, 28.0], egui::Button::new("Join")).clicked() || submitted {
                actions.push(Action::Join);
            }

            if let Some(problem) = problem {
                ui.add_space(12.0);
                problem_box(ui, problem, &mut actions);
            }

            ui.add_space(20.0);
            ui.separator();
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                let label = ui.label("Host on port");
                ui.add(egui::DragValue::new(&mut settings.host_port).range(1..=65535)).labelled_by(label.id);
                if ui.button("Host a call").on_hover_text("Run a relay in this app and join it").clicked() {
                    actions.push(Action::Host);
                }
            });
            ui.add_space(8.0);
            if ui
                .button("Try a demo call")
                .on_hover_text("A relay and a bot that sends a tone and a test pattern: no server needed")
                .clicked()
            {
                actions.push(Action::Demo);
            }
        });
    });
    actions
}

/// A labelled single-line field; true when Enter was pressed in it.
fn field(ui: &mut egui::Ui, label: &str, text: &mut String, hint: &str, password: bool) -> bool {
    let label = ui.label(label);
    let response =
        ui.add(egui::TextEdit::singleline(text).hint_text(hint).password(password).desired_width(280.0));
    let response = response.labelled_by(label.id);
    ui.end_row();
    response.lost_focus() && ui.input(|input| input.key_pressed(egui::Key::Enter))
}

fn problem_box(ui: &mut egui::Ui, problem: &Problem, actions: &mut Vec<crate::Action>) {
    let visuals = ui.visuals();
    egui::Frame::group(ui.style())
        .fill(visuals.extreme_bg_color)
        .stroke(egui::Stroke::new(1.0, visuals.error_fg_color))
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(egui::RichText::new(&problem.headline).strong().color(ui.visuals().error_fg_color));
            ui.label(&problem.detail);
            if ui.small_button("Dismiss").clicked() {
                actions.push(Action::DismissProblem);
            }
        });
}
