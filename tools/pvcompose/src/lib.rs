//! `pvcompose`: builds Pantavisor revisions and checks them.
//!
//! - [`container`]: a rootfs directory or tarball -> a container part
//!   (`root.squashfs` object, `run.json`, OCI `config.json`, `src.json`,
//!   `_config/` overlay);
//! - [`bsp`]: kernel, initramfs, device trees, module and firmware trees ->
//!   the `bsp/` part;
//! - [`pvroot`]: a YAML manifest -> the contents of a device's data partition;
//! - [`check`]: `pvcompose validate`.
//!
//! Squashfs images come from a [`squash::SquashWriter`]; the Yocto classes
//! and `pvr` call this library or its binary.

pub mod bsp;
pub mod check;
pub mod container;
pub mod error;
pub mod output;
pub mod part;
pub mod pvroot;
pub mod report;
pub mod spec;
pub mod squash;
pub mod tree;

pub use error::{ComposeError, Result};
