//! Updates, the daemon's side: checking and installing revisions, asking the
//! [update machine](crate::update::machine) to run one, and carrying out its
//! actions (the boot handshake, progress, stops, the switch, reboots,
//! rollbacks). Objects arrive through the control API's uploads.

use std::fs;
use std::time::Instant;

use pvstate::diff::{plan, Transition};
use pvstate::store::ObjectWriter;
use pvstate::{ObjectId, State};
use serde_json::{json, Value};

use super::Daemon;
use crate::error::Refusal;
use crate::revision::Revision;
use crate::runtime::Runtime;
use crate::update::machine::{Action, Busy, Kind, Purpose, Request};

/// Check the signatures of `state` under the configured mode against the
/// device's trust store; the reason to refuse it.
pub(super) fn signature_problem(rt: &Runtime, state: &State) -> Option<String> {
    let (refused, warnings) = pvstate::sig::check_with(state, rt.opts.signatures, &rt.trust);
    for w in warnings {
        warn!("signature (audit): {w}");
    }
    (!refused.is_empty()).then(|| {
        refused
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Verify revision `rev` can run: it parses, its signatures hold, every
/// object is there and, with `hashes`, hashes to its name — but for those
/// dm-verity protects, which the kernel checks block by block when read.
pub(super) fn check(rt: &Runtime, rev: &str, hashes: bool) -> Result<State, String> {
    let state = rt.storage.state(rev).map_err(|e| e.to_string())?;
    if let Some(why) = signature_problem(rt, &state) {
        return Err(why);
    }
    let lazy = pvstate::verity::protected_keys(&state);
    for (key, id) in state.objects() {
        if !rt.objects.contains(id) {
            return Err(format!("object {id} of {key} is missing"));
        }
        if hashes && !lazy.contains(key) {
            rt.objects.verify(id).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    Ok(state)
}

impl Daemon {
    fn floor_path(&self) -> std::path::PathBuf {
        self.rt
            .storage
            .root()
            .join(pvstate::layout::MIN_VERSION_FILE)
    }

    /// The anti-rollback floor: the lowest version this device takes.
    pub(super) fn floor(&self) -> u64 {
        fs::read_to_string(self.floor_path())
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// With `update.min_version`, why `state` is too old to run (its
    /// `version.json` below the floor); rollbacks do not ask.
    fn too_old(&self, state: &State) -> Option<String> {
        if !self.rt.opts.min_version {
            return None;
        }
        let floor = self.floor();
        match state.version() {
            Err(e) => Some(e),
            Ok(v) if v < floor => Some(format!(
                "version {v} is older than this device's floor {floor} (update.min_version)"
            )),
            Ok(_) => None,
        }
    }

    /// On a commit the floor rises to the committed revision's version
    /// (written durably before the commit is recorded).
    pub(super) fn raise_floor(&mut self, rev: &str) {
        if !self.rt.opts.min_version {
            return;
        }
        let Some(v) = self
            .rt
            .storage
            .state(rev)
            .ok()
            .and_then(|s| s.version().ok())
        else {
            return;
        };
        if v > self.floor() {
            let path = self.floor_path();
            match pvstate::store::write_atomic(&path, format!("{v}\n").as_bytes()) {
                Ok(()) => info!("anti-rollback: floor raised to {v} (revision {rev})"),
                Err(e) => error!("anti-rollback: {}: {e}", path.display()),
            }
        }
    }
}

impl Daemon {
    /// Why `state` may not be taken as an update beyond its signatures and
    /// objects: members this daemon would not act on (one refusal naming
    /// every one, see [`crate::support`]), or a version below the floor.
    fn update_problem(&self, state: &State) -> Option<String> {
        let list = crate::support::unsupported(state);
        if !list.is_empty() {
            return Some(format!("not supported by this daemon: {}", list.join("; ")));
        }
        self.too_old(state)
    }
}

impl Daemon {
    /// `PUT /steps/locals/NAME`: install a revision's state.
    pub(super) fn install_step(&mut self, name: &str, body: &[u8]) -> Result<Value, Refusal> {
        let rev = pvstate::layout::local_revision(name).map_err(Refusal::Invalid)?;
        let state = State::parse(body).map_err(|e| Refusal::WontGo(e.to_string()))?;
        if let Some(why) = signature_problem(&self.rt, &state) {
            return Err(Refusal::WontGo(why));
        }
        if let Some(why) = self.update_problem(&state) {
            return Err(Refusal::WontGo(why));
        }
        let missing: Vec<String> = state
            .objects()
            .filter(|(_, id)| !self.rt.objects.contains(id))
            .map(|(k, id)| format!("{k} ({id})"))
            .collect();
        if !missing.is_empty() {
            return Err(Refusal::WontGo(format!(
                "objects missing: {}",
                missing.join(", ")
            )));
        }
        self.rt
            .storage
            .write_state(&rev, &state)
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        // Where a bootloader script loads its kernel, initramfs and fdt from.
        self.rt
            .storage
            .write_boot_links(&rev, &state)
            .map_err(|e| Refusal::Failed(format!("revision {rev}: boot links: {e}")))?;
        let _ = self.rt.storage.set_progress(&rev, "NEW", "Installed", 0);
        info!("revision {rev} installed");
        Ok(json!({"revision": rev}))
    }

    /// The containers a transition stops: all of them for a reboot, else the
    /// removed and the changed ones.
    fn to_stop(&self, t: &Transition) -> Vec<String> {
        if t.reboot {
            self.run.ctrs.iter().map(|c| c.name.clone()).collect()
        } else {
            t.stop.iter().chain(&t.restart).cloned().collect()
        }
    }

    /// `LOCAL_RUN`, `LOCAL_RUN_COMMIT`, `TRY_ONCE`: move to `rev`.
    pub(super) fn run_revision(&mut self, rev: &str, purpose: Purpose) -> Result<Value, Refusal> {
        if self.machine.busy() || self.shutdown_group.is_some() {
            return Err(Refusal::Busy("an update is already under way".into()));
        }
        if rev == self.run.name {
            return Err(Refusal::Invalid(format!(
                "revision {rev} is already running"
            )));
        }
        if !self.rt.storage.has_revision(rev) {
            return Err(Refusal::NotFound(format!("no revision {rev}")));
        }
        let next = check(&self.rt, rev, self.rt.opts.verify_objects)
            .and_then(|s| match self.update_problem(&s) {
                Some(why) => Err(why),
                None => Ok(s),
            })
            .map_err(|e| {
                let r = Refusal::WontGo(e);
                warn!("revision {rev}: {r}");
                let _ = self
                    .rt
                    .storage
                    .set_progress(rev, "WONTGO", &r.to_string(), 0);
                r
            })?;
        let (diff, t) = plan(&self.run.state, &next);
        let stop = self.to_stop(&t);
        info!(
            "revision {rev}: {} transition ({}); stopping {stop:?}",
            if t.reboot { "reboot" } else { "non-reboot" },
            if t.reasons.is_empty() {
                format!("{} container(s) changed", diff.containers.len())
            } else {
                t.reasons.join("; ")
            },
        );
        let answer = json!({"revision": rev, "reboot": t.reboot, "restart": t.restart, "start": t.start, "stop": t.stop});
        self.begin(Request {
            rev: rev.into(),
            from: self.run.name.clone(),
            kind: if t.reboot {
                Kind::Reboot
            } else {
                Kind::NonReboot
            },
            purpose,
            next,
            stop,
        })?;
        Ok(answer)
    }

    /// `REBOOT_DEVICE`: embedded mode reboots; appengine mode brings the
    /// running revision up again from scratch.
    pub(super) fn reboot_device(&mut self, why: &str) -> Result<Value, Refusal> {
        if self.machine.busy() {
            return Err(Refusal::Busy("an update is under way".into()));
        }
        info!("reboot requested ({why})");
        self.begin(Request {
            rev: self.run.name.clone(),
            from: self.run.name.clone(),
            kind: Kind::Reboot,
            purpose: Purpose::Restart,
            next: self.run.state.clone(),
            stop: self.run.ctrs.iter().map(|c| c.name.clone()).collect(),
        })?;
        Ok(json!({}))
    }

    fn begin(&mut self, req: Request) -> Result<(), Refusal> {
        let actions = self
            .machine
            .begin(req, Instant::now())
            .map_err(|Busy| Refusal::Busy("an update is already under way".into()))?;
        self.apply(actions)
    }

    /// Carry out the machine's actions in order. A boot handshake that cannot
    /// be written ends the update before anything stopped.
    pub(super) fn apply(&mut self, actions: Vec<Action>) -> Result<(), Refusal> {
        for action in actions {
            match action {
                Action::Latch { rev, latch } => {
                    // No latch: a reboot tries `rev`. Where the bootloader
                    // boots it from a partition of its own (Raspberry Pi),
                    // its BSP goes there first.
                    if !latch && self.bootenv.stages_bsp() {
                        if let Err(why) = self.stage_bsp(&rev) {
                            self.machine.abort();
                            return Err(Refusal::Failed(why));
                        }
                    }
                    if let Err(e) = self.bootenv.set_try(&rev, latch) {
                        self.machine.abort();
                        return Err(Refusal::Failed(e.to_string()));
                    }
                }
                Action::Commit { rev } => {
                    if let Err(e) = self.bootenv.commit(&rev) {
                        // Not committed: the latch stays, so the next boot
                        // goes back; that boot comes now.
                        let why = format!("its commit failed: {e}");
                        error!("revision {rev}: {why}");
                        let msg = format!("Rolled back: {why}");
                        let _ = self.rt.storage.set_progress(&rev, "ERROR", &msg, 0);
                        self.machine.abort();
                        self.request_reboot(format!("revision {rev} could not be committed"));
                        return Ok(());
                    }
                    self.raise_floor(&rev);
                    self.settle();
                }
                Action::Settle => self.settle(),
                Action::Pending { rev } => self.pending(&rev),
                Action::Resume { rev } if rev != self.bootenv.rev => self.pending(&rev),
                Action::Resume { .. } => self.settle(),
                Action::Progress {
                    rev,
                    status,
                    msg,
                    pct,
                } => {
                    let _ = self.rt.storage.set_progress(&rev, status, &msg, pct);
                }
                Action::Stop(names) => {
                    for i in 0..self.run.ctrs.len() {
                        if names.contains(&self.run.ctrs[i].name) {
                            self.run.ctrs[i].stopped_by_user = true;
                            self.run.ctrs[i].restart_at = None;
                            self.stop_container(i);
                        }
                    }
                }
                Action::Switch { rev, next, stop } => self.switch(rev, *next, &stop),
                Action::Reboot { why } => self.request_reboot(why),
                Action::RollBack { to, failed } => self.roll_back(&to, &failed),
            }
        }
        Ok(())
    }

    /// Revision `rev`'s BSP onto the boot partition its tryboot takes.
    fn stage_bsp(&mut self, rev: &str) -> Result<(), String> {
        let state = self
            .rt
            .storage
            .state(rev)
            .map_err(|e| format!("revision {rev}: {e}"))?;
        let bsp = crate::rpi::BspFiles::of_state(&state, |id| self.rt.objects.path(id));
        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        self.bootenv.stage(rev, &bsp, &cmdline).map_err(|e| {
            format!("revision {rev}: its BSP could not be written to the boot partition: {e}")
        })
    }

    /// `rev` runs uncommitted: the next boot tries it.
    fn pending(&mut self, rev: &str) {
        if let Err(e) = self.bootenv.set_try(rev, false) {
            error!("boot environment: {e}");
        }
    }

    fn settle(&mut self) {
        if let Err(e) = self.bootenv.clear_try() {
            error!("boot environment: {e}");
        }
    }

    /// Every container to stop has stopped: put revision `rev` in place.
    fn switch(&mut self, rev: String, next: State, stop: &[String]) {
        let mut kept = Vec::new();
        for i in 0..self.run.ctrs.len() {
            if stop.contains(&self.run.ctrs[i].name) {
                self.unwatch_log(i);
            }
        }
        let env = self.rt.env(&self.run.state, &self.run.name);
        for mut c in std::mem::take(&mut self.run.ctrs) {
            if stop.contains(&c.name) {
                c.unmount(&env);
            } else {
                kept.push(c);
            }
        }
        match Revision::layout(&rev, next, &self.rt.objects, &mut kept, &mut self.ids) {
            Ok(mut run) => {
                for c in &mut run.ctrs {
                    c.stopped_by_user = false;
                }
                info!("revision {rev} in place");
                self.run = run;
                self.mesh
                    .reconcile(&crate::xconnect::links(&self.run.state));
            }
            Err(e) => {
                error!("revision {rev}: {e}");
                // `kept` is intact: the containers still running stay under
                // the revision they belong to (which laid out before); the
                // rollback brings the stopped ones back.
                let current = std::mem::replace(&mut self.run.state, State::new());
                let name = self.run.name.clone();
                match Revision::layout(&name, current, &self.rt.objects, &mut kept, &mut self.ids) {
                    Ok(run) => self.run = run,
                    Err(e) => error!("revision {name}: {e}"),
                }
                let actions = self.machine.switch_failed(&e.to_string());
                let _ = self.apply(actions);
                return;
            }
        }
        self.advance_groups();
    }

    /// Go back to `to` after `failed` failed.
    fn roll_back(&mut self, to: &str, failed: &str) {
        let back = match self.rt.storage.state(to) {
            Ok(s) => s,
            Err(e) => {
                error!("rollback to {to}: {e}");
                return;
            }
        };
        let (_, t) = plan(&self.run.state, &back);
        let stop = self.to_stop(&t);
        let req = Request {
            rev: to.into(),
            from: failed.into(),
            kind: if t.reboot {
                Kind::Reboot
            } else {
                Kind::NonReboot
            },
            purpose: Purpose::Rollback,
            next: back,
            stop,
        };
        if let Err(e) = self.begin(req) {
            error!("rollback to {to}: {e}");
        }
    }

    /// Begin a `PUT /objects/<sha>` upload of `length` bytes.
    pub(super) fn begin_upload(
        &mut self,
        id: &ObjectId,
        length: u64,
    ) -> Result<ObjectWriter, Refusal> {
        self.ensure_space(&format!("object {id}"), length)?;
        self.rt
            .objects
            .writer(Some(id))
            .map_err(|e| Refusal::Failed(e.to_string()))
    }

    /// `POST /storage/gc`: revisions the keep policy does not hold, then
    /// objects no revision refers to (see `daemon::storage`).
    pub(super) fn gc(&mut self) -> Result<Value, Refusal> {
        self.collect("requested")
    }

    /// On first boot, install the factory packages (`factory-pkgs.d/NAME.pvrexport.tgz`,
    /// optional containers staged by the composer) that the configuration
    /// (`PV_FACTORY_PKGS`) or the user metadata (`factory-pkgs`) selects, as
    /// revision `locals/factory`, and run it.
    pub(super) fn install_factory_packages(&mut self) {
        let storage = &self.rt.storage;
        let marker = storage.root().join(pvstate::layout::FACTORY_DONE);
        if self.run.name != "0" || self.machine.busy() || marker.exists() {
            return;
        }
        let from_meta = fs::read_to_string(storage.user_meta_dir().join("factory-pkgs")).ok();
        let Some(selection) = crate::config::factory_packages(storage.root()).or(from_meta) else {
            return;
        };
        let names: Vec<&str> = selection
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return;
        }
        let mut merged = self.run.state.to_value();
        for name in &names {
            let file = storage.factory_package(name);
            match pvstate::pvrexport::import_file(&file, Some(&self.rt.objects)) {
                Ok(imported) => {
                    for (k, v) in imported.state.to_value().as_object().into_iter().flatten() {
                        if k != "#spec" {
                            merged[k] = v.clone();
                        }
                    }
                }
                Err(e) => {
                    error!("factory package {name}: {e}");
                    return;
                }
            }
        }
        let bytes = pvstate::canonical::to_vec(&merged);
        if let Err(e) = self.install_step("factory", &bytes) {
            error!("factory packages {names:?}: {e}");
            return;
        }
        let _ = pvstate::store::write_atomic(&marker, selection.as_bytes());
        info!("factory packages {names:?} installed as locals/factory");
        if let Err(e) = self.run_revision("locals/factory", Purpose::Run) {
            error!("running the factory packages: {e}");
        }
    }
}
