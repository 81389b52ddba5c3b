//! Storage lifetime, the daemon's side: removing revisions the keep policy
//! ([`crate::gc`]) does not hold — their trails, logs and per-revision
//! disks — and then the objects nothing refers to; after every commit, when
//! storage is fuller than `storage.gc.threshold`, when an upload needs the
//! room, and on `POST /storage/gc`. Logs are held under `log.dir_maxsize`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use super::Daemon;
use crate::error::Refusal;
use crate::gc::{plan, used_percent, Trail};

/// (total, available) bytes of the file system holding `path`.
fn fs_space(path: &Path) -> (u64, u64) {
    nix::sys::statvfs::statvfs(path)
        .map(|s| {
            (
                s.blocks() * s.fragment_size(),
                s.blocks_available() * s.fragment_size(),
            )
        })
        .unwrap_or((0, 0))
}

/// Every revision on `storage` with its progress status and when that last
/// changed (the state's time for a revision without progress).
pub(super) fn trails(storage: &pvstate::layout::Pvroot) -> Vec<Trail> {
    storage
        .revisions()
        .into_iter()
        .map(|rev| {
            let status = storage
                .progress(&rev)
                .and_then(|p| p["status"].as_str().map(str::to_string));
            let when = fs::metadata(storage.progress_path(&rev))
                .or_else(|_| fs::metadata(storage.state_path(&rev)))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            Trail { rev, status, when }
        })
        .collect()
}

/// Bytes under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => total += du(&e.path()),
            Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => {}
        }
    }
    total
}

impl Daemon {
    /// Storage's (total, free, reserved) bytes, the reserve being
    /// `storage.gc.reserved` percent of the total.
    fn space(&self) -> (u64, u64, u64) {
        let (total, free) = fs_space(self.rt.objects.dir());
        (total, free, total / 100 * self.rt.opts.gc_reserved_pct)
    }

    /// Storage as Pantavisor's device metadata `storage` reports it: total,
    /// free, the reserve and what is free beyond it.
    pub(super) fn storage_meta(&self) -> Value {
        let (total, free, reserved) = self.space();
        json!({
            "total": total,
            "free": free,
            "reserved": reserved,
            "real_free": free.saturating_sub(reserved),
        })
    }

    /// The revisions no collection may remove: running, committed, tried,
    /// and both ends of an update under way.
    fn pinned(&self) -> BTreeSet<String> {
        let mut p: BTreeSet<String> = [self.run.name.clone(), self.bootenv.rev.clone()]
            .into_iter()
            .chain(self.bootenv.try_rev.clone())
            .chain(self.bootenv.trying.clone())
            .collect();
        if let Some(u) = self.machine.current() {
            p.insert(u.rev.clone());
            p.insert(u.from.clone());
        }
        p
    }

    /// Remove one revision: its state first (from then on it is no
    /// revision), then the rest of its trail, its logs and its disks.
    fn remove_revision(&self, rev: &str) -> std::io::Result<()> {
        let storage = &self.rt.storage;
        let trail = storage.trail(rev);
        fs::remove_file(storage.state_path(rev))?;
        let _ = pvstate::store::sync_dir(&trail.join(".pvr"));
        fs::remove_dir_all(&trail)?;
        let root = storage.root();
        let mut dirs = vec![
            root.join("logs").join(rev),
            root.join("disks/rev").join(rev),
        ];
        for disk in fs::read_dir(root.join("pv/volume-disk"))
            .into_iter()
            .flatten()
            .flatten()
        {
            dirs.push(disk.path().join("rev").join(rev));
        }
        for d in dirs {
            if d.exists() {
                fs::remove_dir_all(&d)?;
            }
        }
        Ok(())
    }

    /// Collect: revisions, then objects. Never while an update is under
    /// way (its objects may not be in any trail yet).
    pub(super) fn collect(&mut self, why: &str) -> Result<Value, Refusal> {
        if self.machine.busy() {
            return Err(Refusal::Busy("an update is under way".into()));
        }
        let remove = plan(
            &trails(&self.rt.storage),
            &self.pinned(),
            self.rt.opts.gc_keep,
        );
        let mut removed = Vec::new();
        for rev in &remove {
            match self.remove_revision(rev) {
                Ok(()) => removed.push(rev.clone()),
                Err(e) => error!("gc: revision {rev}: {e}"),
            }
        }
        let _ = pvstate::store::sync_dir(&self.rt.storage.root().join("trails"));
        let r = pvstate::store::gc_storage(self.rt.storage.root())
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        if !removed.is_empty() || !r.removed.is_empty() {
            info!(
                "gc ({why}): removed revisions [{}] and {} object(s), {} bytes",
                removed.join(" "),
                r.removed.len(),
                r.freed_bytes
            );
        }
        self.bound_logs();
        Ok(json!({
            "revisions": removed,
            "removed": r.removed.len(),
            "reclaimed": r.freed_bytes,
        }))
    }

    /// Keep every log under `log.dir_maxsize`: the oldest revisions' logs
    /// go first (never the running one's), then rotated files.
    fn bound_logs(&mut self) {
        let logs = self.rt.storage.root().join("logs");
        let max = self.rt.opts.log_dir_max_bytes;
        let mut total = du(&logs);
        if total <= max {
            return;
        }
        let mut revs: Vec<(std::time::SystemTime, std::path::PathBuf)> = Vec::new();
        let mut add = |dir: &Path| {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                revs.push((t, e.path()));
            }
        };
        add(&logs);
        add(&logs.join("locals"));
        revs.retain(|(_, p)| {
            let rel = p
                .strip_prefix(&logs)
                .map(|r| r.to_string_lossy().into_owned());
            rel.is_ok_and(|r| r != self.run.name && r != "locals")
        });
        revs.sort();
        for (_, dir) in revs {
            if total <= max {
                break;
            }
            let size = du(&dir);
            if fs::remove_dir_all(&dir).is_ok() {
                info!(
                    "logs: removed {} ({size} bytes) to stay under log.dir_maxsize",
                    dir.display()
                );
                total = total.saturating_sub(size);
            }
        }
        // Then the running revision's rotated files.
        let mine = logs.join(&self.run.name);
        for c in fs::read_dir(&mine).into_iter().flatten().flatten() {
            for f in fs::read_dir(c.path()).into_iter().flatten().flatten() {
                if total > max && f.file_name().to_string_lossy().ends_with(".1") {
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    if fs::remove_file(f.path()).is_ok() {
                        total = total.saturating_sub(size);
                    }
                }
            }
        }
    }

    /// Make room for `length` more bytes, collecting if needed: free space
    /// less the reserve (`storage.gc.reserved` percent of storage) must hold
    /// them. Refused with what is needed and what there is.
    pub(super) fn ensure_space(&mut self, what: &str, length: u64) -> Result<(), Refusal> {
        let fits = |me: &Self| {
            let (_, free, reserved) = me.space();
            let have = free.saturating_sub(reserved);
            (have >= length, have)
        };
        if fits(self).0 {
            return Ok(());
        }
        if !self.machine.busy() {
            let _ = self.collect("an upload needs room");
        }
        match fits(self) {
            (true, _) => Ok(()),
            (false, have) => Err(Refusal::NoSpace(format!(
                "not enough space: {what} needs {length} bytes, {have} are free beyond the reserve ({}% of storage)",
                self.rt.opts.gc_reserved_pct
            ))),
        }
    }

    /// Every loop turn: past `storage.gc.threshold` percent used, collect
    /// (at most once per `storage.gc.threshold.defertime`).
    pub(super) fn storage_tick(&mut self) {
        let pct = self.rt.opts.gc_threshold_pct;
        if pct == 0 || self.machine.busy() {
            return;
        }
        let now = Instant::now();
        if self.gc_next.is_some_and(|t| now < t) {
            return;
        }
        self.gc_next = Some(now + std::time::Duration::from_secs(10));
        let (total, free) = fs_space(self.rt.storage.root());
        let used = used_percent(total, free);
        if used >= pct {
            self.gc_next = Some(now + self.rt.opts.gc_defer);
            let _ = self.collect(&format!("storage {used}% used, threshold {pct}%"));
        }
    }
}
