//! `pvstate`: the one owner of Pantavisor's formats in meta-pantavisor-rs.
//!
//! - [`State`]: the typed state JSON of a revision (`pantavisor-service-system@1`),
//!   parsed with every problem reported against its key ([`State::parse_lenient`],
//!   [`State::validate`]) and written back in [`canonical`] JSON.
//! - [`ObjectStore`]: the content-addressed object pool, with atomic writes and GC.
//! - [`pvrexport`]: import and export of `pvr export` archives.
//! - [`diff`]: what changed between two revisions and whether it reboots.
//! - [`layout`]: the pvroot (the data partition's directories and files).
//! - [`glob`]: the one glob matcher (fnmatch, and state-key patterns).

pub mod canonical;
pub mod chunks;
pub mod diff;
mod error;
pub mod glob;
pub mod keys;
pub mod layout;
pub mod model;
mod object_id;
pub mod pvrexport;
pub mod sig;
mod state;
pub mod store;
mod validate;
pub mod verity;

pub use error::{Error, Problem, Problems, Result};
pub use model::Entry;
pub use object_id::ObjectId;
pub use state::{Effective, State};
pub use store::ObjectStore;
pub use validate::{parse_duration, Completeness};
