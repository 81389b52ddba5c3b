//! Anomaly detectors, each fed one value at a time and answering whether it
//! is anomalous against what came before it (the value itself is then
//! learned, so a step change alarms once and becomes the new normal).

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    pub value: f64,
    /// The expected value and the score that crossed the threshold.
    pub expected: f64,
    pub score: f64,
    pub threshold: f64,
}

pub trait Detector {
    fn observe(&mut self, v: f64) -> Option<Anomaly>;
}

/// Rolling z-score over the last `window` values: |v - mean| / stddev.
/// Silent until `min_samples` values are in; a flat history (stddev 0)
/// makes any change an anomaly.
#[derive(Debug, Clone)]
pub struct ZScore {
    window: usize,
    min_samples: usize,
    threshold: f64,
    values: std::collections::VecDeque<f64>,
}

impl ZScore {
    pub fn new(window: usize, threshold: f64) -> Self {
        let window = window.max(2);
        ZScore {
            window,
            min_samples: (window / 2).max(2),
            threshold,
            values: Default::default(),
        }
    }
}

impl Detector for ZScore {
    fn observe(&mut self, v: f64) -> Option<Anomaly> {
        let mut found = None;
        if self.values.len() >= self.min_samples {
            let n = self.values.len() as f64;
            let mean = self.values.iter().sum::<f64>() / n;
            let var = self.values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let sd = var.sqrt();
            let score = if sd > 0.0 {
                (v - mean).abs() / sd
            } else if v == mean {
                0.0
            } else {
                f64::INFINITY
            };
            if score > self.threshold {
                found = Some(Anomaly {
                    value: v,
                    expected: mean,
                    score,
                    threshold: self.threshold,
                });
            }
        }
        if self.values.len() == self.window {
            self.values.pop_front();
        }
        self.values.push_back(v);
        found
    }
}

/// Exponentially weighted mean and variance (weight `alpha` for the new
/// value); anomalous when the deviation exceeds `threshold` standard deviations.
#[derive(Debug, Clone)]
pub struct Ewma {
    alpha: f64,
    threshold: f64,
    warmup: u32,
    seen: u32,
    mean: f64,
    var: f64,
}

impl Ewma {
    pub fn new(alpha: f64, threshold: f64) -> Self {
        let alpha = alpha.clamp(1e-6, 1.0);
        Ewma {
            alpha,
            threshold,
            warmup: (2.0 / alpha).ceil() as u32,
            seen: 0,
            mean: 0.0,
            var: 0.0,
        }
    }
}

impl Detector for Ewma {
    fn observe(&mut self, v: f64) -> Option<Anomaly> {
        if self.seen == 0 {
            self.mean = v;
            self.seen = 1;
            return None;
        }
        let diff = v - self.mean;
        let sd = self.var.sqrt();
        let score = if sd > 0.0 { diff.abs() / sd } else { 0.0 };
        let found = (self.seen >= self.warmup && score > self.threshold).then_some(Anomaly {
            value: v,
            expected: self.mean,
            score,
            threshold: self.threshold,
        });
        // West's incremental EW variance.
        let incr = self.alpha * diff;
        self.mean += incr;
        self.var = (1.0 - self.alpha) * (self.var + diff * incr);
        self.seen = self.seen.saturating_add(1);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sine wave with a little deterministic noise.
    fn wave(i: usize) -> f64 {
        20.0 + 2.0 * (i as f64 / 10.0).sin() + ((i * 7919) % 13) as f64 / 26.0
    }

    #[test]
    fn zscore_flags_a_spike_once_and_not_the_wave() {
        let mut z = ZScore::new(30, 4.0);
        let mut alarms = Vec::new();
        for i in 0..200 {
            let v = if i == 150 { 45.0 } else { wave(i) };
            if let Some(a) = z.observe(v) {
                alarms.push((i, a));
            }
        }
        assert_eq!(alarms.len(), 1, "{alarms:?}");
        let (i, a) = &alarms[0];
        assert_eq!(*i, 150);
        assert!(a.score > 4.0 && (a.expected - 20.0).abs() < 3.0, "{a:?}");
        // Not enough history yet: silent.
        let mut z = ZScore::new(30, 1.0);
        for v in [1.0, 100.0] {
            assert!(z.observe(v).is_none());
        }
        // Flat history: any change is an anomaly.
        let mut z = ZScore::new(4, 3.0);
        for _ in 0..4 {
            assert!(z.observe(5.0).is_none());
        }
        assert!(z.observe(5.1).unwrap().score.is_infinite());
    }

    #[test]
    fn ewma_flags_a_spike_after_warmup_and_adapts_to_a_step() {
        let mut e = Ewma::new(0.1, 5.0);
        let mut alarms = Vec::new();
        for i in 0..300 {
            let v = match i {
                5 => 100.0, // during warm-up: not reported
                150 => 60.0,
                200.. => wave(i) + 10.0, // a step: alarms at first, then learned
                _ => wave(i),
            };
            if e.observe(v).is_some() {
                alarms.push(i);
            }
        }
        assert!(!alarms.contains(&5), "{alarms:?}");
        assert!(alarms.contains(&150), "{alarms:?}");
        assert!(alarms.contains(&200), "{alarms:?}");
        assert!(
            alarms.iter().all(|&i| i == 150 || (200..240).contains(&i)),
            "{alarms:?}"
        );
    }
}
