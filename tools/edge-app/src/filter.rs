//! Which samples go on: values out of their physical range are dropped (and
//! counted), and a value within the deadband of the last one passed is not
//! news.

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Drop a value closer than this to the last value passed.
    pub deadband: Option<f64>,
    last: Option<f64>,
    pub dropped_range: u64,
    pub dropped_deadband: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    OutOfRange,
    WithinDeadband,
}

impl Filter {
    pub fn new(min: Option<f64>, max: Option<f64>, deadband: Option<f64>) -> Self {
        Filter {
            min,
            max,
            deadband,
            ..Default::default()
        }
    }

    pub fn check(&mut self, v: f64) -> Verdict {
        if !v.is_finite() || self.min.is_some_and(|m| v < m) || self.max.is_some_and(|m| v > m) {
            self.dropped_range += 1;
            return Verdict::OutOfRange;
        }
        if let (Some(db), Some(last)) = (self.deadband, self.last) {
            if (v - last).abs() < db {
                self.dropped_deadband += 1;
                return Verdict::WithinDeadband;
            }
        }
        self.last = Some(v);
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_then_deadband() {
        let mut f = Filter::new(Some(-40.0), Some(125.0), Some(0.5));
        assert_eq!(f.check(20.0), Verdict::Pass);
        assert_eq!(f.check(20.3), Verdict::WithinDeadband);
        assert_eq!(f.check(20.6), Verdict::Pass);
        assert_eq!(f.check(20.2), Verdict::WithinDeadband, "measured from 20.6");
        assert_eq!(f.check(19.9), Verdict::Pass);
        assert_eq!(f.check(130.0), Verdict::OutOfRange);
        assert_eq!(f.check(-41.0), Verdict::OutOfRange);
        assert_eq!(f.check(f64::NAN), Verdict::OutOfRange);
        assert_eq!((f.dropped_range, f.dropped_deadband), (3, 2));
        let mut open = Filter::default();
        assert_eq!(open.check(1e12), Verdict::Pass);
        assert_eq!(open.check(1e12), Verdict::Pass);
    }
}
