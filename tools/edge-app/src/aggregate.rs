//! Aggregates over fixed time windows aligned to the epoch (a 60 s window
//! covers [12:00:00, 12:01:00)), so every gateway's windows line up. A
//! window is reported when the first sample of a later window arrives, or
//! when `flush` is called at its end.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregate {
    /// Window start and end, milliseconds since the epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone)]
pub struct Window {
    period_ms: u64,
    start_ms: Option<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Window {
    pub fn new(period_ms: u64) -> Self {
        Window {
            period_ms: period_ms.max(1),
            start_ms: None,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn close(&mut self) -> Option<Aggregate> {
        let start = self.start_ms.take()?;
        let a = Aggregate {
            start_ms: start,
            end_ms: start + self.period_ms,
            count: self.count,
            min: self.min,
            max: self.max,
            mean: self.sum / self.count as f64,
        };
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        Some(a)
    }

    /// Add a sample taken at `ts_ms`; returns the window it closed, if any.
    /// A sample older than the open window (clock step back) is counted in it.
    pub fn push(&mut self, ts_ms: u64, v: f64) -> Option<Aggregate> {
        let start = ts_ms - ts_ms % self.period_ms;
        let closed = match self.start_ms {
            Some(s) if start > s => self.close(),
            _ => None,
        };
        if self.start_ms.is_none() {
            self.start_ms = Some(start);
        }
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        closed
    }

    /// Close the open window if `now_ms` is past its end.
    pub fn flush(&mut self, now_ms: u64) -> Option<Aggregate> {
        match self.start_ms {
            Some(s) if now_ms >= s + self.period_ms => self.close(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_close_on_the_next_window_or_on_flush() {
        let mut w = Window::new(10_000);
        assert_eq!(w.push(1_000, 3.0), None);
        assert_eq!(w.push(5_000, 1.0), None);
        assert_eq!(w.push(9_999, 5.0), None);
        let a = w.push(10_000, 7.0).unwrap();
        assert_eq!(
            a,
            Aggregate {
                start_ms: 0,
                end_ms: 10_000,
                count: 3,
                min: 1.0,
                max: 5.0,
                mean: 3.0
            }
        );
        // A gap of several windows: the next one reported is the one with data.
        let a = w.push(45_000, 1.0).unwrap();
        assert_eq!((a.start_ms, a.count, a.mean), (10_000, 1, 7.0));
        assert_eq!(w.flush(49_999), None);
        let a = w.flush(50_000).unwrap();
        assert_eq!((a.start_ms, a.end_ms, a.count), (40_000, 50_000, 1));
        assert_eq!(w.flush(100_000), None, "nothing open");
        // A sample from the past stays in the open window.
        w.push(60_000, 2.0);
        assert_eq!(w.push(55_000, 4.0), None);
        assert_eq!(w.flush(70_000).unwrap().count, 2);
    }
}
