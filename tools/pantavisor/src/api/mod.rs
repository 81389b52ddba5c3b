//! The control API as an adapter (RAUC's service.c is the model): the
//! [`server`] owns transport, authentication and uploads; [`routes`] turns
//! requests into typed [`Call`]s; the daemon answers them through
//! [`Service`] with values or domain [`Refusal`]s, which [`status`] maps to
//! HTTP status codes in one table.

pub mod conn;
pub mod http;
pub mod routes;
pub mod server;
pub mod status;

pub use server::Server;

use std::path::PathBuf;

use pvctrl::proto;
use pvstate::store::ObjectWriter;
use pvstate::ObjectId;
use serde_json::Value;

use crate::error::Refusal;

/// Who sent a request, fixed when the connection is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A process of the host (not in a container of ours).
    Host,
    /// The remote API, after its bearer token was checked.
    Remote,
    /// A container, by its stable id (never reused while the daemon runs)
    /// and its name for messages. A revision switch that replaces the
    /// container leaves this id naming nothing: its rights end with it.
    Container { uid: u64, name: String },
}

/// A request, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Signal(proto::Signal),
    Containers,
    ContainerAction {
        name: String,
        action: proto::ContainerAction,
    },
    Groups,
    /// `GET /xconnect-graph`: the service mesh's links (Pantavisor's shape).
    XconnectGraph,
    BuildInfo,
    /// `GET /config`: the effective configuration and each value's origin.
    Config,
    DeviceMeta,
    UserMeta,
    UserMetaGet(String),
    UserMetaPut(String, String),
    UserMetaDelete(String),
    Objects,
    Object(ObjectId),
    /// `GET /objects/SHA/partial`: bytes kept of an interrupted chunk delta.
    ObjectPartial(ObjectId),
    Steps,
    Step(String),
    Progress(String),
    CommitMessage(String, Vec<u8>),
    /// `PUT /steps/locals/NAME`: the name and the state's bytes.
    InstallLocal(String, Vec<u8>),
    Command(proto::Command),
    Gc,
    /// `GET /logs/NAME[?offset=N][&max=M]`: the running revision's log of
    /// container NAME (or `pantavisor`, the daemon's): up to `max` bytes
    /// from `offset`, or the last `max` bytes without one.
    Logs {
        name: String,
        offset: Option<u64>,
        max: u64,
    },
}

impl Call {
    /// Calls every container may make (the others need the mgmt role).
    pub fn open_to_all(&self) -> bool {
        matches!(self, Call::Signal(_))
    }
}

/// An answer.
pub enum Answer {
    Json(Value),
    /// A file sent as it is (an object).
    File(PathBuf),
}

/// What the daemon offers the API.
pub trait Service {
    /// Who the peer with `pid` is (at accept time).
    fn caller_of(&self, pid: i32) -> Caller;
    /// May `caller` make calls beyond [`Call::open_to_all`]? Decided at
    /// request time from the caller's stable identity.
    fn may_manage(&self, caller: &Caller) -> Result<(), Refusal>;
    fn call(&mut self, caller: &Caller, call: Call) -> Result<Answer, Refusal>;
    /// Begin an object upload of `length` bytes.
    fn begin_upload(&mut self, id: &ObjectId, length: u64) -> Result<ObjectWriter, Refusal>;
}
