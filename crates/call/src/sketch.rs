//! Bounded percentile sketches for delays.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The largest delay a sketch tells apart: a minute, in microseconds. Longer ones count as a
/// minute.
const MAX_MICROS: u64 = 60_000_000;

/// The 50th and 95th percentiles of some delays, in milliseconds, and how many there were.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub count: u64,
}

/// A distribution of delays over a whole call in fixed memory (a few kilobytes), to within
/// 1 % of each value, plus the last value recorded.
#[derive(Debug, Clone)]
pub struct Sketch {
    histogram: Histogram<u32>,
    last: Option<Duration>,
}

impl Default for Sketch {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 2)
                .expect("1 µs to a minute at two significant digits is a valid histogram"),
            last: None,
        }
    }
}

impl Sketch {
    pub fn record(&mut self, value: Duration) {
        let micros = (value.as_micros() as u64).clamp(1, MAX_MICROS);
        self.histogram.saturating_record(micros);
        self.last = Some(value);
    }

    /// Records a value in milliseconds; negative or non-finite ones count as zero.
    pub fn record_ms(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        self.record(Duration::from_secs_f64(ms.min(MAX_MICROS as f64 / 1000.0) / 1000.0));
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.histogram.is_empty() {
            return Percentiles::default();
        }
        let at = |quantile| self.histogram.value_at_quantile(quantile) as f64 / 1000.0;
        Percentiles { p50: at(0.5), p95: at(0.95), count: self.histogram.len() }
    }

    pub fn last(&self) -> Option<Duration> {
        self.last
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_ramp_to_within_one_percent() {
        let mut sketch = Sketch::default();
        assert_eq!(sketch.percentiles(), Percentiles::default());
        for ms in 1..=100 {
            sketch.record(Duration::from_millis(ms));
        }
        let p = sketch.percentiles();
        assert_eq!(p.count, 100);
        assert!((p.p50 - 50.0).abs() <= 0.5, "{p:?}");
        assert!((p.p95 - 95.0).abs() <= 1.0, "{p:?}");
        assert_eq!(sketch.last(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn memory_stays_fixed_and_extremes_are_clamped() {
        let mut sketch = Sketch::default();
        for _ in 0..1_000_000 {
            sketch.record(Duration::from_millis(40));
        }
        sketch.record(Duration::from_secs(3600));
        sketch.record_ms(-5.0);
        sketch.record_ms(f64::NAN);
        assert_eq!(sketch.count(), 1_000_003);
        assert!((sketch.percentiles().p95 - 40.0).abs() < 0.5);
    }
}
