//! Drawing. Each screen is a function from state to [`crate::Action`]s; nothing here changes a
//! call directly.

pub mod call;
pub mod connect;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chinwag_engine::{CallStats, ParticipantId, VideoFrame};
use eframe::egui;

use crate::call::Tile;

/// One texture per tile, updated in place when a new frame arrives.
#[derive(Default)]
pub struct VideoTextures {
    slots: HashMap<Tile, Slot>,
}

struct Slot {
    texture: egui::TextureHandle,
    /// The frame uploaded last: the same `Arc` again means nothing new to upload.
    frame: Arc<VideoFrame>,
}

impl VideoTextures {
    /// The texture showing `tile`'s newest frame (uploading it if it is new) and the frame's
    /// size, or the last one shown if no frame is due.
    pub fn update(
        &mut self,
        ctx: &egui::Context,
        tile: Tile,
        frame: Option<Arc<VideoFrame>>,
    ) -> Option<(egui::TextureId, egui::Vec2)> {
        if let Some(frame) = frame
            && frame.width > 0
            && frame.height > 0
            && frame.rgba.len() == frame.width as usize * frame.height as usize * 4
        {
            let fresh = self.slots.get(&tile).is_none_or(|slot| !Arc::ptr_eq(&slot.frame, &frame));
            if fresh {
                let image = egui::ColorImage::from_rgba_unmultiplied(
                    [frame.width as usize, frame.height as usize],
                    &frame.rgba,
                );
                match self.slots.get_mut(&tile) {
                    Some(slot) => {
                        slot.texture.set(image, egui::TextureOptions::LINEAR);
                        slot.frame = frame;
                    }
                    None => {
                        let name = format!("video-{tile:?}");
                        let texture = ctx.load_texture(name, image, egui::TextureOptions::LINEAR);
                        self.slots.insert(tile, Slot { texture, frame });
                    }
                }
            }
        }
        self.slots
            .get(&tile)
            .map(|slot| (slot.texture.id(), egui::vec2(slot.frame.width as f32, slot.frame.height as f32)))
    }

    /// Frees the textures of tiles no longer shown.
    pub fn retain(&mut self, keep: impl Fn(&Tile) -> bool) {
        self.slots.retain(|tile, _| keep(tile));
    }

    pub fn clear(&mut self) {
        self.slots.clear();
    }
}

/// The connection figures, read from the engine a few times a second, with bitrates worked out
/// from the byte counters.
#[derive(Default)]
pub struct StatsView {
    pub latest: CallStats,
    refreshed_at: Option<Instant>,
    received_bytes: HashMap<ParticipantId, u64>,
    /// Video received per peer, in kilobits per second.
    pub received_kbps: HashMap<ParticipantId, f64>,
    sent_bytes: u64,
    /// Video sent, in kilobits per second.
    pub sent_kbps: f64,
}

impl StatsView {
    pub fn due(&self, now: Instant, every: Duration) -> bool {
        self.refreshed_at.is_none_or(|at| now.saturating_duration_since(at) >= every)
    }

    /// Makes the next frame read fresh figures (when the panel opens, say).
    pub fn expire(&mut self) {
        self.refreshed_at = None;
    }

    pub fn refresh(&mut self, stats: CallStats, now: Instant) {
        if let Some(at) = self.refreshed_at {
            let seconds = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
            let kbps = |bytes: u64| bytes as f64 * 8.0 / 1000.0 / seconds;
            for peer in &stats.peers {
                let before = self.received_bytes.get(&peer.id).copied().unwrap_or(peer.video_bytes_received);
                self.received_kbps.insert(peer.id, kbps(peer.video_bytes_received.saturating_sub(before)));
            }
            self.sent_kbps = kbps(stats.video_bytes_sent.saturating_sub(self.sent_bytes));
        }
        self.received_bytes = stats.peers.iter().map(|peer| (peer.id, peer.video_bytes_received)).collect();
        self.sent_bytes = stats.video_bytes_sent;
        self.refreshed_at = Some(now);
        self.latest = stats;
    }

    /// The audio level at which a peer counts as speaking (RMS of the last 10 ms).
    pub const SPEAKING_LEVEL: f32 = 0.02;

    pub fn speaking(&self, id: ParticipantId) -> bool {
        self.latest.peers.iter().any(|peer| peer.id == id && peer.level >= Self::SPEAKING_LEVEL)
    }
}

/// How `n_tiles` tiles of aspect 4:3 fill `area` best: columns, rows and the size of a tile.
pub fn grid_layout(n_tiles: usize, area: egui::Vec2, gap: f32) -> (usize, usize, egui::Vec2) {
    const ASPECT: f32 = 4.0 / 3.0;
    let n_tiles = n_tiles.max(1);
    let mut best = (1, n_tiles, egui::Vec2::ZERO);
    for columns in 1..=n_tiles {
        let rows = n_tiles.div_ceil(columns);
        let cell_w = (area.x - gap * (columns - 1) as f32) / columns as f32;
        let cell_h = (area.y - gap * (rows - 1) as f32) / rows as f32;
        let width = cell_w.min(cell_h * ASPECT).max(0.0);
        if width > best.2.x {
            best = (columns, rows, egui::vec2(width, width / ASPECT));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_reflows_with_the_number_of_tiles() {
        let wide = egui::vec2(1200.0, 600.0);
        assert_eq!(grid_layout(1, wide, 0.0).0, 1);
        assert_eq!(grid_layout(2, wide, 0.0).0, 2);
        let (columns, rows, _) = grid_layout(4, wide, 0.0);
        assert_eq!((columns, rows), (2, 2));
        let (columns, rows, size) = grid_layout(5, egui::vec2(900.0, 600.0), 0.0);
        assert!(columns * rows >= 5);
        assert!(size.x * columns as f32 <= 900.0 && size.y * rows as f32 <= 600.0);
    }

    #[test]
    fn bitrate_from_byte_counters() {
        let mut view = StatsView::default();
        let start = Instant::now();
        let mut stats = CallStats { video_bytes_sent: 1000, ..CallStats::default() };
        view.refresh(stats.clone(), start);
        stats.video_bytes_sent = 1000 + 12_500;
        view.refresh(stats, start + Duration::from_secs(1));
        assert!((view.sent_kbps - 100.0).abs() < 1e-6);
    }
}
