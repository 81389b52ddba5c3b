//! `pantavisor`: the runtime daemon of meta-pantavisor-rs.
//!
//! In appengine mode (a root process given `--storage DIR`) it runs the
//! revision the storage's boot environment names: containers mounted from
//! their squashfs objects under overlays, started with libcontainer group by
//! group, supervised per their restart policies, and driven through the
//! control socket. Embedded (PID 1) mode builds on the same [`supervisor`].

pub mod bootenv;
pub mod bootloader;
pub mod bundle;
pub mod conn;
pub mod container;
pub mod embedded;
pub mod error;
pub mod http;
pub mod kmod;
pub mod lxc;
#[macro_use]
pub mod log;
pub mod mounts;
pub mod recovery;
pub mod storage;
pub mod supervisor;
pub mod update;

pub use error::{Error, Result};
