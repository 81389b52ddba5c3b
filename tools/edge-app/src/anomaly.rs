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

/// The share of |mean| below which a standard deviation is not trusted.
pub const RELATIVE_STD_FLOOR: f64 = 1e-3;

/// How many standard deviations `v` is from `mean`. The deviation is floored
/// at `min_std` and at 0.1 % of |mean|: a quantized signal (0.1 °C steps)
/// that sat flat for a whole window has a deviation of 0, and its next step
/// of one count is not an anomaly. With no floor at all (a signal flat at
/// 0 and `min_std` 0), any change is one.
pub fn score(v: f64, mean: f64, sd: f64, min_std: f64) -> f64 {
    let sd = sd.max(min_std).max(RELATIVE_STD_FLOOR * mean.abs());
    if sd > 0.0 {
        (v - mean).abs() / sd
    } else if v == mean {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Rolling z-score over the last `window` values: |v - mean| / stddev.
/// Silent until `min_samples` values are in.
#[derive(Debug, Clone)]
pub struct ZScore {
    window: usize,
    min_samples: usize,
    threshold: f64,
    min_std: f64,
    values: std::collections::VecDeque<f64>,
}

impl ZScore {
    pub fn new(window: usize, threshold: f64) -> Self {
        let window = window.max(2);
        ZScore {
            window,
            min_samples: (window / 2).max(2),
            threshold,
            min_std: 0.0,
            values: Default::default(),
        }
    }

    /// The smallest standard deviation to divide by, in the value's units.
    pub fn min_std(mut self, min_std: f64) -> Self {
        self.min_std = min_std.max(0.0);
        self
    }
}

impl Detector for ZScore {
    fn observe(&mut self, v: f64) -> Option<Anomaly> {
        let mut found = None;
        if self.values.len() >= self.min_samples {
            let n = self.values.len() as f64;
            let mean = self.values.iter().sum::<f64>() / n;
            let var = self.values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let score = score(v, mean, var.sqrt(), self.min_std);
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
    min_std: f64,
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
            min_std: 0.0,
            warmup: (2.0 / alpha).ceil() as u32,
            seen: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    /// The smallest standard deviation to divide by, in the value's units.
    pub fn min_std(mut self, min_std: f64) -> Self {
        self.min_std = min_std.max(0.0);
        self
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
        let score = score(v, self.mean, self.var.sqrt(), self.min_std);
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
        // A quantized signal flat for the whole window (25.0 at a sine's
        // top in 0.1 steps): its next step is no anomaly, a jump is.
        let mut z = ZScore::new(20, 6.0);
        for _ in 0..20 {
            assert!(z.observe(25.0).is_none());
        }
        assert!(z.observe(24.9).is_none());
        let a = z.observe(75.0).unwrap();
        assert!(a.score > 100.0 && a.expected > 24.9, "{a:?}");
        // Flat at 0: no floor from the mean, so any change is an anomaly,
        // unless min_std says what is noise.
        let mut z = ZScore::new(4, 3.0);
        let mut zf = ZScore::new(4, 3.0).min_std(0.05);
        for _ in 0..4 {
            assert!(z.observe(0.0).is_none() && zf.observe(0.0).is_none());
        }
        assert!(z.observe(0.1).unwrap().score.is_infinite());
        assert!(zf.observe(0.1).is_none());
        assert!(zf.observe(1.0).is_some());
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
        // Flat, then one count: no alarm; a jump: one.
        let mut e = Ewma::new(0.2, 5.0);
        for _ in 0..30 {
            assert!(e.observe(25.0).is_none());
        }
        assert!(e.observe(24.9).is_none());
        assert!(e.observe(75.0).is_some());
    }
}
