//! The runtime context: what the daemon is given and never changes while it
//! runs — its options, the storage and its object store. Borrowed by
//! containers beside the mutable revision, instead of field by field.

use pvstate::layout::Pvroot;
use pvstate::{ObjectStore, State};

use crate::config::Options;
use crate::container::Env;
use crate::error::Result;

pub struct Runtime {
    pub opts: Options,
    pub storage: Pvroot,
    pub objects: ObjectStore,
    /// What signatures must chain to, read once at start.
    pub trust: pvstate::sig::TrustStore,
}

impl Runtime {
    pub fn new(opts: Options) -> Result<Self> {
        let storage = Pvroot::open(&opts.storage)?;
        let objects = storage.objects()?;
        let trust = crate::trust::load(&opts);
        Ok(Runtime {
            opts,
            storage,
            objects,
            trust,
        })
    }

    /// The containers' environment for revision `rev` with `state`.
    pub fn env<'a>(&'a self, state: &'a State, rev: &'a str) -> Env<'a> {
        Env {
            storage: &self.storage,
            objects: &self.objects,
            state,
            rev,
            run_dir: &self.opts.run_dir,
            ctrl_socket: &self.opts.ctrl_socket,
            cgroup_parent: &self.opts.cgroup_parent,
        }
    }
}
