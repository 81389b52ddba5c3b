//! `pvctrl`: the pv-ctrl protocol — Pantavisor's control API, HTTP/1.1 over
//! the daemon's unix socket (or its remote TCP listener with a bearer token).
//!
//! - [`proto`]: the endpoints' typed requests and answers, shared by the
//!   daemon (which serves them) and every client;
//! - [`Client`]: the one client of the workspace, used by `pvr`,
//!   `pvcontrol`, the gateway's apps and the tests.

pub mod client;
pub mod proto;

pub use client::{set_debug, Client, Error, Reply, Target};
pub use proto::{Action, Command, Op};
