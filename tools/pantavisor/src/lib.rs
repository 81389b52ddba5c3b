//! `pantavisor`: the runtime daemon of meta-pantavisor-rs.
//!
//! In appengine mode (a root process given `--storage DIR`) it runs the
//! revision the storage's boot environment names: containers mounted from
//! their squashfs objects under overlays, started with libcontainer group by
//! group, supervised per their restart policies, and driven through the
//! control socket. Embedded (PID 1) mode builds on the same [`daemon`].
//! docs/architecture.md maps where each thing is decided.

#[macro_use]
pub mod log;
pub mod api;
pub mod boot;
pub mod bootenv;
pub mod bootloader;
pub mod bundle;
pub mod config;
pub mod container;
pub mod daemon;
pub mod dm;
pub mod embedded;
pub mod error;
pub mod gc;
pub mod kmod;
pub mod lxc;
pub mod mounts;
pub mod recovery;
pub mod revision;
pub mod rpi;
pub mod runtime;
pub mod settings;
pub mod support;
pub mod sys;
pub mod trust;
pub mod update;
pub mod watchdog;
pub mod xconnect;

pub use error::{Error, Refusal, Result};
