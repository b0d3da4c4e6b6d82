//! `chinwag`: the desktop app. Parses flags and opens the window; everything else is in the
//! library.

use anyhow::Context as _;
use chinwag::{Args, ChinwagApp};
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Chinwag")
            .with_inner_size([1100.0, 720.0])
            .with_min_inner_size([640.0, 420.0]),
        ..Default::default()
    };
    eframe::run_native("Chinwag", options, Box::new(|cc| Ok(Box::new(ChinwagApp::new(cc, args)))))
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("cannot open the Chinwag window (is a display available?)")
}
