//! The edge-app's logic, free of I/O so it is tested alone: per-topic
//! filters (range, deadband), time-window aggregates (count/min/max/mean) and
//! anomaly detectors (rolling z-score, EWMA), and the configuration that
//! picks them (`edge.toml` in the container's `_config` overlay).

pub mod aggregate;
pub mod anomaly;
pub mod config;
pub mod filter;
