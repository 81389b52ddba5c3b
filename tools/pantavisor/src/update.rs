//! Updates: installing revisions (`/steps`, `/objects`), the transition to a
//! new revision (only the changed containers, or all of them when the change
//! needs a reboot), TESTING, the commit, and the automatic rollback when a
//! revision does not reach its goals or a container exits while it is tested.
//!
//! In appengine mode a "reboot" transition stops every container and brings
//! the new revision up from its first group, without touching the host. The
//! bootloader handshake (`pv_try`/`pv_trying`/`pv_rev`) is written before the
//! transition starts, so a daemon killed at any point comes back on a complete
//! revision: the committed one, or the one being tried if its try never began.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pvstate::diff::plan;
use pvstate::{ObjectId, State};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::container::Status;
use crate::supervisor::{goal_reached, layout, Daemon};

#[derive(Debug)]
pub enum Phase {
    /// Waiting for these containers to stop before switching to `next`.
    Stopping { next: Box<State>, stop: Vec<String> },
    /// The new revision runs; it must reach its goals by `deadline` and then
    /// run without a container exiting until `commit_at`.
    Testing {
        deadline: Instant,
        commit_at: Option<Instant>,
    },
}

#[derive(Debug)]
pub struct Update {
    /// The revision being moved to.
    pub rev: String,
    /// The revision it replaces (the rollback target).
    pub from: String,
    pub reboot: bool,
    /// Make it the committed revision on success (not for TRY_ONCE).
    pub commit: bool,
    /// This transition goes back after a failure: no testing.
    pub rollback: bool,
    pub phase: Phase,
    /// Why testing failed, noticed between loop turns.
    pub failed: Option<String>,
    pub started: Instant,
}

impl Update {
    /// A revision tried at start (the daemon came up on `pv_try`).
    pub fn after_boot(rev: String, from: String, goals_timeout: Duration) -> Self {
        Update {
            rev,
            from,
            reboot: true,
            commit: true,
            rollback: false,
            phase: Phase::Testing {
                deadline: Instant::now() + goals_timeout,
                commit_at: None,
            },
            failed: None,
            started: Instant::now(),
        }
    }
}

/// A streaming object upload.
pub struct Upload {
    pub id: ObjectId,
    pub tmp: PathBuf,
    pub file: fs::File,
    pub hasher: Sha256,
    pub remaining: u64,
}

/// Check the signatures of `state` under `mode` against the trust store of
/// the storage at `root` (`config/trust/*.pem`); the reason to refuse it.
pub fn signature_problem(
    root: &std::path::Path,
    mode: pvstate::sig::Mode,
    state: &State,
) -> Option<String> {
    if mode == pvstate::sig::Mode::Disabled {
        return None;
    }
    let mut pem = String::new();
    if let Ok(entries) = fs::read_dir(root.join("config/trust")) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "pem") {
                pem.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
                pem.push('\n');
            }
        }
    }
    let trusted = match pvstate::sig::trust_store_from_pem(&pem) {
        Ok(t) => t,
        Err(e) => return Some(e),
    };
    let (refused, warnings) = pvstate::sig::check(state, mode, &trusted);
    for w in warnings {
        warn!("signature (audit): {w}");
    }
    (!refused.is_empty()).then(|| refused.join("; "))
}

/// The name of a local revision (`locals/NAME`) is fine.
fn local_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Bytes free for new objects on the storage's file system.
pub fn free_bytes(path: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0)
}

impl Daemon {
    // ---- installing ----

    /// `PUT /steps/locals/NAME`: install a revision's state.
    pub(crate) fn install_step(&mut self, name: &str, body: &[u8]) -> (u16, Value) {
        if !local_name_ok(name) {
            return (
                400,
                json!({"Error": format!("\"locals/{name}\": a local revision name is letters, digits, - _ . and under 64 characters")}),
            );
        }
        let state = match State::parse(body) {
            Ok(s) => s,
            Err(e) => return (422, json!({"Error": format!("WONTGO: {e}")})),
        };
        if let Some(why) = self.signature_problem(&state) {
            return (422, json!({"Error": format!("WONTGO: {why}")}));
        }
        let missing: Vec<String> = state
            .objects()
            .filter(|(_, id)| !self.objects.contains(id))
            .map(|(k, id)| format!("{k} ({id})"))
            .collect();
        if !missing.is_empty() {
            return (
                422,
                json!({"Error": format!("WONTGO: objects missing: {}", missing.join(", "))}),
            );
        }
        let rev = format!("locals/{name}");
        let dir = self.storage.trail(&rev).join(".pvr");
        if let Err(e) = fs::create_dir_all(&dir) {
            return (500, json!({"Error": format!("{}: {e}", dir.display())}));
        }
        if let Err(e) = pvstate::store::write_atomic(&dir.join("json"), &state.to_canonical()) {
            return (500, json!({"Error": e.to_string()}));
        }
        let _ = self.storage.set_progress(&rev, "NEW", "Installed", 0);
        info!("revision {rev} installed");
        (200, json!({"revision": rev}))
    }

    pub(crate) fn steps(&self) -> Value {
        Value::Array(
            self.storage
                .revisions()
                .into_iter()
                .map(|rev| {
                    let progress = self.storage.progress(&rev).unwrap_or(json!({}));
                    let msg = fs::read_to_string(self.storage.trail(&rev).join(".pv/commitmsg")).unwrap_or_default();
                    json!({"name": rev, "progress": progress, "commitmsg": msg, "running": rev == self.rev, "committed": rev == self.bootenv.rev})
                })
                .collect(),
        )
    }

    /// Check the signatures of `state` per the configured mode; the reason to
    /// refuse it, if any.
    pub(crate) fn signature_problem(&self, state: &State) -> Option<String> {
        signature_problem(self.storage.root(), self.opts.signatures, state)
    }

    // ---- running ----

    /// Verify a revision can run: it parses and every object verifies.
    fn check_revision(&self, rev: &str) -> Result<State, String> {
        let state = self.storage.state(rev).map_err(|e| e.to_string())?;
        if let Some(why) = self.signature_problem(&state) {
            return Err(why);
        }
        for (key, id) in state.objects() {
            let present = self.objects.contains(id);
            if !present {
                return Err(format!("object {id} of {key} is missing"));
            }
            if self.opts.verify_objects {
                if let Err(e) = self.objects.verify(id) {
                    return Err(format!("{key}: {e}"));
                }
            }
        }
        Ok(state)
    }

    /// `LOCAL_RUN`, `LOCAL_RUN_COMMIT`, `TRY_ONCE`: move to `rev`.
    pub(crate) fn run_revision(&mut self, rev: &str, commit: bool) -> (u16, Value) {
        if self.update.is_some() || self.shutdown_group.is_some() {
            return (409, json!({"Error": "an update is already under way"}));
        }
        if rev == self.rev {
            return (
                400,
                json!({"Error": format!("revision {rev} is already running")}),
            );
        }
        if !self.storage.trail(rev).join(".pvr/json").is_file() {
            return (404, json!({"Error": format!("no revision {rev}")}));
        }
        let next = match self.check_revision(rev) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("WONTGO: {e}");
                warn!("revision {rev}: {msg}");
                let _ = self.storage.set_progress(rev, "WONTGO", &msg, 0);
                return (422, json!({"Error": msg}));
            }
        };
        let (diff, transition) = plan(&self.state, &next);
        // The latch first: from here a daemon killed at any moment comes back
        // on the old revision, and never tries this one twice. A real reboot
        // (embedded mode) leaves the try pending: the next boot begins it.
        self.bootenv.try_rev = Some(rev.to_string());
        self.bootenv.trying = if transition.reboot && self.opts.real_reboot {
            None
        } else {
            Some(rev.to_string())
        };
        if let Err(e) = self.bootenv.save() {
            return (500, json!({"Error": e.to_string()}));
        }
        let _ = self.storage.set_progress(
            rev,
            "INPROGRESS",
            if transition.reboot {
                "Rebooting"
            } else {
                "Transitioning to new revision without rebooting"
            },
            20,
        );
        let stop = self.to_stop(&transition);
        info!(
            "revision {rev}: {} transition ({}); stopping {:?}",
            if transition.reboot {
                "reboot"
            } else {
                "non-reboot"
            },
            if transition.reasons.is_empty() {
                format!("{} container(s) changed", diff.containers.len())
            } else {
                transition.reasons.join("; ")
            },
            stop
        );
        self.update = Some(Update {
            rev: rev.to_string(),
            from: self.rev.clone(),
            reboot: transition.reboot,
            commit,
            rollback: false,
            phase: Phase::Stopping {
                next: Box::new(next),
                stop: stop.clone(),
            },
            failed: None,
            started: Instant::now(),
        });
        self.stop_for_transition(&stop);
        (
            200,
            json!({"revision": rev, "reboot": transition.reboot, "restart": transition.restart, "start": transition.start, "stop": transition.stop}),
        )
    }

    /// The containers a transition stops: all of them for a reboot, else the
    /// removed and the changed ones.
    fn to_stop(&self, t: &pvstate::diff::Transition) -> Vec<String> {
        if t.reboot {
            self.ctrs.iter().map(|c| c.name.clone()).collect()
        } else {
            t.stop.iter().chain(&t.restart).cloned().collect()
        }
    }

    fn stop_for_transition(&mut self, names: &[String]) {
        for i in 0..self.ctrs.len() {
            if names.contains(&self.ctrs[i].name) {
                self.ctrs[i].stopped_by_user = true;
                self.ctrs[i].restart_at = None;
                self.stop_container(i);
            }
        }
    }

    /// A container exited: while a revision is tested, that fails it.
    pub(crate) fn exit_during_update(&mut self, name: &str) -> bool {
        match self.update.as_mut() {
            Some(u) if !u.rollback && matches!(u.phase, Phase::Testing { .. }) => {
                u.failed
                    .get_or_insert(format!("container {name} stopped during TESTING"));
                true
            }
            _ => false,
        }
    }

    /// Move the update on; called every loop turn.
    pub(crate) fn advance_update(&mut self) {
        let Some(update) = self.update.as_mut() else {
            return;
        };
        match &mut update.phase {
            Phase::Stopping { stop, .. } => {
                if self
                    .ctrs
                    .iter()
                    .any(|c| stop.contains(&c.name) && c.is_running())
                {
                    return;
                }
                self.switch_revision();
            }
            Phase::Testing {
                deadline,
                commit_at,
            } => {
                let now = Instant::now();
                if let Some(why) = update.failed.clone() {
                    self.fail_update(&why);
                    return;
                }
                let up = self.next_group >= self.groups.len() && self.ctrs.iter().all(goal_reached);
                if up {
                    let at = *commit_at.get_or_insert(now + self.opts.commit_delay);
                    let stable = self.ctrs.iter().all(|c| {
                        let need = c
                            .eff
                            .auto_recovery
                            .as_ref()
                            .and_then(|a| a.stable_timeout)
                            .unwrap_or(0);
                        need == 0
                            || c.status == Status::Mounted
                            || c.started_at
                                .is_some_and(|t| t.elapsed() >= Duration::from_secs(need))
                    });
                    if now >= at && stable {
                        self.commit_update();
                    }
                } else if now >= *deadline {
                    let late: Vec<&str> = self
                        .ctrs
                        .iter()
                        .filter(|c| !goal_reached(c))
                        .map(|c| c.name.as_str())
                        .collect();
                    let why = format!("Status goal not reached: {}", late.join(", "));
                    self.fail_update(&why);
                }
            }
        }
    }

    /// Every container to stop has stopped: swap in the next revision.
    fn switch_revision(&mut self) {
        let Some(mut update) = self.update.take() else {
            return;
        };
        let Phase::Stopping { next, stop } = std::mem::replace(
            &mut update.phase,
            Phase::Testing {
                deadline: Instant::now(),
                commit_at: None,
            },
        ) else {
            self.update = Some(update);
            return;
        };
        if update.reboot && self.opts.real_reboot {
            // Embedded mode: every container is down; the boot environment
            // already names the revision to try (or, for a rollback, only the
            // committed one): the bootloader brings it up.
            let why = if update.rollback {
                format!("rolling back to {} needs a reboot", update.rev)
            } else {
                format!("revision {} needs a reboot", update.rev)
            };
            if !update.rollback {
                let _ = self
                    .storage
                    .set_progress(&update.rev, "INPROGRESS", "Rebooting", 50);
            }
            self.request_reboot(why);
            return;
        }
        let env = crate::supervisor::ctr_env!(self);
        let mut kept = Vec::new();
        for mut c in std::mem::take(&mut self.ctrs) {
            if stop.contains(&c.name) {
                if let Some(fd) = c.log_pipe.take() {
                    let _ = self.epoll.delete(std::os::fd::AsFd::as_fd(&fd));
                }
                c.unmount(&env);
            } else {
                kept.push(c);
            }
        }
        match layout(&next, &self.objects, kept, &mut self.next_uid) {
            Ok((ctrs, groups)) => {
                self.ctrs = ctrs;
                self.groups = groups;
            }
            Err(e) => {
                error!("revision {}: {e}", update.rev);
                self.state = *next;
                self.rev = update.rev.clone();
                self.update = Some(update);
                self.fail_update(&e.to_string());
                return;
            }
        }
        for c in &mut self.ctrs {
            c.stopped_by_user = false;
        }
        self.state = *next;
        self.rev = update.rev.clone();
        self.next_group = 0;
        info!(
            "revision {} in place{}",
            self.rev,
            if update.rollback { " (rollback)" } else { "" }
        );
        if update.rollback {
            let _ = self.bootenv_settle(None);
            self.update = None;
        } else {
            let _ = self.storage.set_progress(
                &update.rev,
                "TESTING",
                "Awaiting to see if update is stable",
                60,
            );
            update.phase = Phase::Testing {
                deadline: Instant::now() + self.opts.goals_timeout,
                commit_at: None,
            };
            self.update = Some(update);
        }
        self.advance_groups();
    }

    /// Write the boot environment once an update ended: committed to `rev`,
    /// or back on the committed one (None).
    fn bootenv_settle(&mut self, commit_to: Option<&str>) -> crate::Result<()> {
        if let Some(rev) = commit_to {
            self.bootenv.rev = rev.to_string();
        }
        self.bootenv.try_rev = None;
        self.bootenv.trying = None;
        self.bootenv.save()
    }

    fn commit_update(&mut self) {
        let Some(update) = self.update.take() else {
            return;
        };
        let took = update.started.elapsed().as_secs_f64();
        if update.commit {
            if let Err(e) = self.bootenv_settle(Some(&update.rev)) {
                error!("committing {}: {e}", update.rev);
            }
            let (status, msg) = if update.reboot {
                ("DONE", "Update finished, revision set as rollback point")
            } else {
                (
                    "UPDATED",
                    "Update finished, revision not set as rollback point",
                )
            };
            let _ = self.storage.set_progress(&update.rev, status, msg, 100);
            info!("revision {}: {status} after {took:.2} s", update.rev);
        } else {
            // TRY_ONCE: the latch stays, so the next start goes back.
            let _ =
                self.storage
                    .set_progress(&update.rev, "UPDATED", "Tried once; not committed", 100);
            info!("revision {}: tried once, not committed", update.rev);
        }
    }

    fn fail_update(&mut self, why: &str) {
        let Some(update) = self.update.take() else {
            return;
        };
        error!(
            "revision {}: ERROR: {why}; rolling back to {}",
            update.rev, update.from
        );
        let _ = self.storage.set_progress(&update.rev, "ERROR", why, 100);
        let _ = self.bootenv_settle(None);
        let back = match self.storage.state(&update.from) {
            Ok(s) => s,
            Err(e) => {
                error!("rollback to {}: {e}", update.from);
                return;
            }
        };
        let (_, transition) = plan(&self.state, &back);
        let stop = self.to_stop(&transition);
        self.update = Some(Update {
            rev: update.from.clone(),
            from: update.rev.clone(),
            reboot: transition.reboot,
            commit: false,
            rollback: true,
            phase: Phase::Stopping {
                next: Box::new(back),
                stop: stop.clone(),
            },
            failed: None,
            started: Instant::now(),
        });
        self.stop_for_transition(&stop);
    }

    // ---- objects ----

    /// Begin a `PUT /objects/<sha>` upload of `length` bytes.
    pub(crate) fn begin_upload(&mut self, sha: &str, length: u64) -> Result<Upload, (u16, Value)> {
        let id: ObjectId = sha.parse().map_err(|_| {
            (
                400,
                json!({"Error": format!("\"{sha}\" is not an object id")}),
            )
        })?;
        let free = free_bytes(self.objects.dir());
        // Keep a margin for trails, progress and logs.
        let reserve = 1 << 20;
        if length.saturating_add(reserve) > free {
            return Err((
                507,
                json!({"Error": format!("object {id} needs {length} bytes; {free} are free on storage")}),
            ));
        }
        let tmp = self.objects.temp_path("upload");
        let file = fs::File::create(&tmp)
            .map_err(|e| (500, json!({"Error": format!("{}: {e}", tmp.display())})))?;
        Ok(Upload {
            id,
            tmp,
            file,
            hasher: Sha256::new(),
            remaining: length,
        })
    }

    /// Feed upload bytes; returns the answer once the object is complete or
    /// has failed.
    pub(crate) fn feed_upload(&mut self, up: &mut Upload, data: &[u8]) -> Option<(u16, Value)> {
        let take = (data.len() as u64).min(up.remaining) as usize;
        if let Err(e) = up.file.write_all(&data[..take]) {
            let _ = fs::remove_file(&up.tmp);
            let code = if e.raw_os_error() == Some(libc::ENOSPC) {
                507
            } else {
                500
            };
            return Some((code, json!({"Error": format!("object {}: {e}", up.id)})));
        }
        up.hasher.update(&data[..take]);
        up.remaining -= take as u64;
        if up.remaining > 0 {
            return None;
        }
        let actual = hex::encode(up.hasher.clone().finalize());
        if actual != up.id.as_str() {
            let _ = fs::remove_file(&up.tmp);
            return Some((
                422,
                json!({"Error": format!("object {}: content hashes to {actual}", up.id)}),
            ));
        }
        let dest = self.objects.path(&up.id);
        let done = up
            .file
            .sync_all()
            .and_then(|_| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&up.tmp, fs::Permissions::from_mode(0o644))
            })
            .and_then(|_| fs::rename(&up.tmp, &dest));
        match done {
            Ok(()) => {
                let _ = pvstate::store::sync_dir(self.objects.dir());
                Some((200, json!({"object": up.id.to_string()})))
            }
            Err(e) => {
                let _ = fs::remove_file(&up.tmp);
                let code = if e.raw_os_error() == Some(libc::ENOSPC) {
                    507
                } else {
                    500
                };
                Some((code, json!({"Error": format!("object {}: {e}", up.id)})))
            }
        }
    }

    /// Objects no installed revision refers to are removed (never those of
    /// the running, committed or pending revisions: every trail counts).
    pub(crate) fn gc(&mut self) -> (u16, Value) {
        match pvstate::store::gc_storage(self.storage.root()) {
            Ok(r) => {
                info!(
                    "gc: removed {} object(s), {} bytes",
                    r.removed.len(),
                    r.freed_bytes
                );
                (
                    200,
                    json!({"reclaimed": r.freed_bytes, "removed": r.removed.len()}),
                )
            }
            Err(e) => (500, json!({"Error": e.to_string()})),
        }
    }

    /// `POST /commands`.
    pub(crate) fn command(&mut self, body: &[u8]) -> (u16, Value) {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return (400, json!({"Error": format!("body is not JSON: {e}")})),
        };
        let payload = v
            .get("payload")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match v.get("op").and_then(Value::as_str) {
            Some("LOCAL_RUN") | Some("LOCAL_RUN_COMMIT") => self.run_revision(&payload, true),
            Some("TRY_ONCE") => self.run_revision(&payload, false),
            Some("RUN_GC") => self.gc(),
            Some("REBOOT_DEVICE") => {
                // Appengine: bring the running revision up again from scratch.
                if self.update.is_some() {
                    return (409, json!({"Error": "an update is under way"}));
                }
                let state = self.state.clone();
                let stop: Vec<String> = self.ctrs.iter().map(|c| c.name.clone()).collect();
                self.update = Some(Update {
                    rev: self.rev.clone(),
                    from: self.rev.clone(),
                    reboot: true,
                    commit: false,
                    rollback: true,
                    phase: Phase::Stopping {
                        next: Box::new(state),
                        stop: stop.clone(),
                    },
                    failed: None,
                    started: Instant::now(),
                });
                info!("reboot requested ({payload}): restarting the revision's containers");
                self.stop_for_transition(&stop);
                (200, json!({}))
            }
            Some(other) => (
                400,
                json!({"Error": format!("unsupported command {other}")}),
            ),
            None => (400, json!({"Error": "missing \"op\""})),
        }
    }

    // ---- factory packages ----

    /// On first boot, install the factory packages (`factory-pkgs.d/NAME.pvrexport.tgz`,
    /// optional containers staged by the composer) that the configuration
    /// (`PV_FACTORY_PKGS` in config/pantavisor.config) or the user metadata
    /// (`factory-pkgs`) selects, as revision `locals/factory`, and run it.
    pub(crate) fn install_factory_packages(&mut self) {
        let marker = self.storage.root().join("config/.factory-done");
        if self.rev != "0" || self.update.is_some() || marker.exists() {
            return;
        }
        let config = fs::read_to_string(self.storage.root().join("config/pantavisor.config"))
            .unwrap_or_default();
        let from_config = config
            .lines()
            .find_map(|l| l.strip_prefix("PV_FACTORY_PKGS=").map(str::to_string));
        let from_meta = fs::read_to_string(self.storage.user_meta_dir().join("factory-pkgs")).ok();
        let Some(selection) = from_config.or(from_meta) else {
            return;
        };
        let names: Vec<&str> = selection
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return;
        }
        let mut merged = self.state.to_value();
        for name in &names {
            let file = self
                .storage
                .root()
                .join("factory-pkgs.d")
                .join(format!("{name}.pvrexport.tgz"));
            match pvstate::pvrexport::import_file(&file, Some(&self.objects)) {
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
        let (code, body) = self.install_step("factory", &bytes);
        if code != 200 {
            error!("factory packages {names:?}: {body}");
            return;
        }
        let _ = pvstate::store::write_atomic(&marker, selection.as_bytes());
        info!("factory packages {names:?} installed as locals/factory");
        let (code, body) = self.run_revision("locals/factory", true);
        if code != 200 {
            error!("running the factory packages: {body}");
        }
    }
}
