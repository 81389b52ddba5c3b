//! `edge.toml`: the broker, and per topic pattern which filters, window and
//! detector apply. Unknown keys are errors, each naming where it is.
//!
//! ```toml
//! broker = "127.0.0.1:1883"        # or "unix:/run/pv/mqtt.sock" (an xconnect socket)
//! input = "sensors/#"            # subscribed
//! output = "edge"                # results on edge/agg/<topic>, alarms on edge/alarms
//! window_s = 60
//! adapter_api = "/run/pv/adapter.sock"  # optional: the modbus-adapter's
//!                                # GET /metrics (an xconnect rest service),
//!                                # republished on <output>/adapter every 10 s
//!
//! [[rule]]
//! topic = "sensors/+/temperature"
//! min = -40.0
//! max = 125.0
//! deadband = 0.2
//! detector = { zscore = { window = 60, threshold = 4.0 } }
//! # or { ewma = { alpha = 0.1, threshold = 5.0 } }; either takes min_std,
//! # the smallest standard deviation to divide by (default 0; at least
//! # 0.1 % of |mean| in any case)
//! ```

use serde::Deserialize;

use crate::anomaly::{Detector, Ewma, ZScore};
use crate::filter::Filter;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_broker")]
    pub broker: String,
    #[serde(default = "default_input")]
    pub input: String,
    #[serde(default = "default_output")]
    pub output: String,
    #[serde(default = "default_window")]
    pub window_s: u64,
    /// A unix socket serving `GET /metrics` (the modbus-adapter's).
    #[serde(default)]
    pub adapter_api: Option<String>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

fn default_broker() -> String {
    "127.0.0.1:1883".into()
}
fn default_input() -> String {
    "sensors/#".into()
}
fn default_output() -> String {
    "edge".into()
}
fn default_window() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// MQTT topic filter (`+` one level, `#` the rest).
    pub topic: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub deadband: Option<f64>,
    pub window_s: Option<u64>,
    pub detector: Option<DetectorConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DetectorConfig {
    Zscore {
        window: usize,
        threshold: f64,
        #[serde(default)]
        min_std: f64,
    },
    Ewma {
        alpha: f64,
        threshold: f64,
        #[serde(default)]
        min_std: f64,
    },
}

impl DetectorConfig {
    pub fn build(&self) -> Box<dyn Detector + Send> {
        match *self {
            DetectorConfig::Zscore {
                window,
                threshold,
                min_std,
            } => Box::new(ZScore::new(window, threshold).min_std(min_std)),
            DetectorConfig::Ewma {
                alpha,
                threshold,
                min_std,
            } => Box::new(Ewma::new(alpha, threshold).min_std(min_std)),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, r) in c.rules.iter().enumerate() {
            if let (Some(lo), Some(hi)) = (r.min, r.max) {
                if lo > hi {
                    return Err(format!(
                        "rule {} ({}): min {lo} is above max {hi}",
                        i + 1,
                        r.topic
                    ));
                }
            }
            if let Some(DetectorConfig::Ewma { alpha, .. }) = r.detector {
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err(format!(
                        "rule {} ({}): ewma alpha must be in (0, 1]",
                        i + 1,
                        r.topic
                    ));
                }
            }
        }
        if c.window_s == 0 || c.rules.iter().any(|r| r.window_s == Some(0)) {
            return Err("window_s must be at least 1".into());
        }
        Ok(c)
    }

    /// The first rule whose topic filter matches.
    pub fn rule_for(&self, topic: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| topic_matches(&r.topic, topic))
    }

    pub fn filter_for(&self, topic: &str) -> Filter {
        match self.rule_for(topic) {
            Some(r) => Filter::new(r.min, r.max, r.deadband),
            None => Filter::default(),
        }
    }
}

/// MQTT topic filter matching: `+` is one level, a final `#` any rest.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            level => {
                if t.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_and_matches_topics() {
        let c = Config::parse(
            r#"
window_s = 10
[[rule]]
topic = "sensors/+/temperature"
min = -40.0
max = 125.0
deadband = 0.2
detector = { zscore = { window = 60, threshold = 4.0 } }
[[rule]]
topic = "sensors/#"
detector = { ewma = { alpha = 0.1, threshold = 5.0 } }
"#,
        )
        .unwrap();
        assert_eq!(c.broker, "127.0.0.1:1883");
        assert_eq!(
            c.rule_for("sensors/plc1/temperature").unwrap().min,
            Some(-40.0)
        );
        assert_eq!(
            c.rule_for("sensors/plc1/pressure").unwrap().topic,
            "sensors/#"
        );
        assert!(c.rule_for("other/x").is_none());
        assert!(topic_matches("a/+/c", "a/b/c") && !topic_matches("a/+/c", "a/b/d"));
        assert!(topic_matches("a/#", "a") && !topic_matches("a/b", "a/b/c"));
        for (bad, why) in [
            ("windw_s = 3", "unknown field"),
            ("[[rule]]\ntopic = \"x\"\nmin = 5.0\nmax = 1.0", "above max"),
            (
                "[[rule]]\ntopic = \"x\"\ndetector = { ewma = { alpha = 2.0, threshold = 1.0 } }",
                "alpha",
            ),
            ("window_s = 0", "at least 1"),
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
