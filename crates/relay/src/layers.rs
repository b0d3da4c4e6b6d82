//! Which of a sender's video layers each receiver gets, as a sans-IO core: the sizes of the
//! layers' frames and the video rate the receiver's link carries in, a yes or no per frame out.
//!
//! A video sender sends its full frames and, while those are larger, the same picture at half
//! and at a quarter of the width and height (`chinwag_proto::VideoLayer`). JPEG frames stand
//! alone, so a receiver can be moved between layers at any frame.

use std::time::{Duration, Instant};

use chinwag_proto::VideoLayer;

/// A receiver gets the largest of a sender's video layers whose frames take at most this long
/// at the video rate its link carries: voice queued behind a frame on the way waits for all
/// of it.
pub(crate) const LAYER_FRAME_TIME: Duration = Duration::from_millis(80);
/// A move up to a larger layer needs its frames to fit this much more easily, so that frames
/// whose sizes wander around the limit do not make the picture jump between layers.
const LAYER_UP_MARGIN: f64 = 1.25;
/// A layer no frame of which came for this long is no longer sent.
const LAYER_GONE: Duration = Duration::from_secs(1);

/// One sender's video layers as a receiver was offered them.
#[derive(Debug, Default)]
pub(crate) struct Layers {
    /// Per layer, largest first: the size of its last frame and when that came.
    last: [Option<(usize, Instant)>; VideoLayer::ALL.len()],
    /// The layer this receiver gets.
    chosen: Option<VideoLayer>,
}

impl Layers {
    /// Takes a `len`-byte frame of `layer`; returns whether a receiver whose link carries
    /// `budget` bytes in [`LAYER_FRAME_TIME`] gets it. It gets the largest layer still sent
    /// whose last frame fits the budget (a larger one than now with [`LAYER_UP_MARGIN`] to
    /// spare), or the smallest one still sent if none fits.
    pub(crate) fn handle_frame(&mut self, now: Instant, layer: VideoLayer, len: usize, budget: f64) -> bool {
        self.last[layer.index()] = Some((len, now));
        let mut chosen = None;
        for candidate in VideoLayer::ALL {
            let Some((bytes, at)) = self.last[candidate.index()] else { continue };
            if now.saturating_duration_since(at) >= LAYER_GONE {
                continue;
            }
            chosen = Some(candidate);
            let margin =
                if self.chosen.is_some_and(|current| candidate < current) { LAYER_UP_MARGIN } else { 1.0 };
            if bytes as f64 * margin <= budget {
                break;
            }
        }
        self.chosen = chosen;
        chosen == Some(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const FULL: usize = 37_000;
    const MIDDLE: usize = 10_000;
    const SMALL: usize = 3_000;

    /// Offers one frame of each layer at `at`; returns the layers the receiver got.
    fn offer_all(layers: &mut Layers, at: Instant, budget: f64) -> Vec<VideoLayer> {
        [(VideoLayer::Full, FULL), (VideoLayer::Middle, MIDDLE), (VideoLayer::Small, SMALL)]
            .into_iter()
            .filter(|&(layer, len)| layers.handle_frame(at, layer, len, budget))
            .map(|(layer, _)| layer)
            .collect()
    }

    #[test]
    fn a_receiver_gets_the_largest_layer_its_link_carries_and_only_that_one() {
        let start = Instant::now();
        for (budget, expected) in [
            (50_000.0, VideoLayer::Full),
            (20_000.0, VideoLayer::Middle),
            (5_000.0, VideoLayer::Small),
            // Nothing fits: the smallest there is.
            (1_000.0, VideoLayer::Small),
        ] {
            let mut layers = Layers::default();
            // The first round only shows what is sent; from the second, one layer a round.
            offer_all(&mut layers, start, budget);
            for round in 1..5u32 {
                assert_eq!(
                    offer_all(&mut layers, start + round * 100 * MS, budget),
                    vec![expected],
                    "{budget}"
                );
            }
        }
    }

    #[test]
    fn a_sender_with_one_layer_reaches_every_receiver() {
        let start = Instant::now();
        let mut layers = Layers::default();
        for frame in 0..10u32 {
            assert!(layers.handle_frame(start + frame * 33 * MS, VideoLayer::Full, FULL, 1_000.0));
        }
    }

    #[test]
    fn a_layer_the_sender_stopped_is_not_waited_for() {
        let start = Instant::now();
        let mut layers = Layers::default();
        offer_all(&mut layers, start, 5_000.0);
        assert_eq!(offer_all(&mut layers, start + 100 * MS, 5_000.0), vec![VideoLayer::Small]);
        // The sender stops its small layer: the receiver keeps waiting for it a moment, then
        // gets the smallest layer still sent.
        let soon = start + 600 * MS;
        assert!(!layers.handle_frame(soon, VideoLayer::Middle, MIDDLE, 5_000.0));
        let later = start + 100 * MS + LAYER_GONE;
        assert!(layers.handle_frame(later, VideoLayer::Middle, MIDDLE, 5_000.0));
        assert!(!layers.handle_frame(later, VideoLayer::Full, FULL, 5_000.0));
    }

    #[test]
    fn moving_up_a_layer_needs_room_to_spare_and_moving_down_none() {
        let start = Instant::now();
        let mut layers = Layers::default();
        offer_all(&mut layers, start, 20_000.0);
        assert_eq!(offer_all(&mut layers, start + 100 * MS, 20_000.0), vec![VideoLayer::Middle]);
        // Full frames just fit now, but without room to spare: still the middle layer.
        let just = FULL as f64 * 1.1;
        assert_eq!(offer_all(&mut layers, start + 200 * MS, just), vec![VideoLayer::Middle]);
        let ample = FULL as f64 * LAYER_UP_MARGIN;
        assert_eq!(offer_all(&mut layers, start + 300 * MS, ample), vec![VideoLayer::Full]);
        // And at `just` it stays on the full layer.
        assert_eq!(offer_all(&mut layers, start + 400 * MS, just), vec![VideoLayer::Full]);
    }
}
