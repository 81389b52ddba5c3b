//! One container of the running revision: its mounts, its OCI bundle, and
//! starting and stopping it with libcontainer.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container as LcContainer, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use pvstate::model::{ContainerType, Persistence, RunManifest};
use pvstate::{Effective, Entry, ObjectStore, State};
use serde_json::Value;

use crate::bundle::{self, BundleInput};
use crate::error::{Error, Result};
use crate::{lxc, mounts};
use pvstate::layout::Pvroot as Storage;

/// Runs in the container's init just before its program: the daemon blocks
/// SIGTERM, SIGINT and SIGCHLD (they come through its signalfd) and Rust
/// ignores SIGPIPE; both would be inherited across exec, leaving the
/// container's program deaf to SIGTERM. Give it a clean signal state.
#[derive(Clone)]
struct CleanSignals;

impl Executor for CleanSignals {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> std::result::Result<(), ExecutorError> {
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&nix::sys::signal::SigSet::empty()),
            None,
        );
        crate::sys::default_sigpipe();
        DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> std::result::Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Where a container is in its life, as the control socket reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Installed,
    Mounted,
    Starting,
    Started,
    Ready,
    Stopping,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Installed => "INSTALLED",
            Status::Mounted => "MOUNTED",
            Status::Starting => "STARTING",
            Status::Started => "STARTED",
            Status::Ready => "READY",
            Status::Stopping => "STOPPING",
            Status::Stopped => "STOPPED",
        }
    }
}

/// Everything the daemon keeps about one container.
pub struct Ctr {
    pub name: String,
    /// Stable id while the daemon runs (tokens of its log pipe).
    pub uid: u64,
    pub run: RunManifest,
    pub eff: Effective,
    /// The OCI config to run, or why there is none.
    pub config: std::result::Result<Value, String>,
    pub status: Status,
    pub pid: Option<i32>,
    /// When the current run began (for reset_window).
    pub started_at: Option<Instant>,
    /// Restarts since the last reset.
    pub retries: u32,
    /// Total restarts, for reporting.
    pub restarts: u32,
    /// A restart (or a backoff end) is due at this time.
    pub restart_at: Option<Instant>,
    /// Stopped on request: no automatic restart.
    pub stopped_by_user: bool,
    /// Last exit status, for reporting.
    pub last_exit: Option<i32>,
    /// SIGKILL is due at this time (a stop that SIGTERM did not finish).
    pub kill_at: Option<Instant>,
    /// Start again as soon as the current run has ended (restart action).
    pub restart_after_stop: bool,
    /// Read end of the container's stdout/stderr pipe.
    pub log_pipe: Option<OwnedFd>,
    /// Not started yet, since then, because (a required xconnect service
    /// is not up).
    pub held: Option<(Instant, String)>,
    lc: Option<LcContainer>,
    mounted: bool,
}

/// Paths the container runtime works in.
pub struct Env<'a> {
    pub storage: &'a Storage,
    pub objects: &'a ObjectStore,
    pub state: &'a State,
    pub rev: &'a str,
    /// Runtime directory (tmpfs-like; mounts and bundles).
    pub run_dir: &'a Path,
    pub ctrl_socket: &'a Path,
    /// cgroup parent, e.g. "pantavisor".
    pub cgroup_parent: &'a str,
}

impl Ctr {
    pub fn new(name: &str, state: &State, objects: &ObjectStore) -> Result<Self> {
        let run = state
            .containers()
            .get(name)
            .map(|r| (*r).clone())
            .ok_or_else(|| Error::container(name, "not in the state"))?;
        let eff = state
            .effective(name)
            .ok_or_else(|| Error::container(name, "no group"))?;
        let entry = run
            .config
            .as_deref()
            .and_then(|c| state.get(&format!("{name}/{c}")));
        // A config that cannot be used fails this container when it starts,
        // not the revision.
        let config = match (run.kind, entry) {
            (_, None) if eff.status_goal == pvstate::model::StatusGoal::Mounted => Ok(Value::Null),
            (_, None) => Err("run.json names no config the state holds".to_string()),
            (ContainerType::Oci, Some(Entry::Json(v))) => Ok(v.clone()),
            (ContainerType::Oci, Some(_)) => {
                Err("an oci container's config must be an inline config.json".to_string())
            }
            (ContainerType::Lxc, Some(Entry::Object(id))) => {
                let path = objects.path(id);
                fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|text| {
                        lxc::translate(name, &text).map_err(|e| format!("LXC config: {e}"))
                    })
            }
            (ContainerType::Lxc, Some(_)) => {
                Err("an lxc container's config must be an object (lxc.container.conf)".to_string())
            }
        };
        Ok(Ctr {
            name: name.to_string(),
            uid: 0,
            run,
            eff,
            config,
            status: Status::Installed,
            pid: None,
            started_at: None,
            retries: 0,
            restarts: 0,
            restart_at: None,
            stopped_by_user: false,
            last_exit: None,
            kill_at: None,
            restart_after_stop: false,
            log_pipe: None,
            held: None,
            lc: None,
            mounted: false,
        })
    }

    fn dir(&self, env: &Env) -> PathBuf {
        env.run_dir.join("containers").join(&self.name)
    }

    pub fn cgroup(&self, env: &Env) -> String {
        format!("/{}/{}", env.cgroup_parent, self.name)
    }

    /// Mount image `spec` (a file of the container, `dm:FILE` for one
    /// checked by dm-verity) read-only at `target`.
    fn mount_image(&self, env: &Env, spec: &str, target: &Path) -> Result<()> {
        let object = |file: &str| {
            let key = format!("{}/{file}", self.name);
            env.state
                .get(&key)
                .and_then(Entry::object_id)
                .map(|id| env.objects.path(id))
                .ok_or_else(|| Error::container(&self.name, format!("{key} is not an object")))
        };
        let Some(volume) = spec.strip_prefix("dm:") else {
            return mounts::mount_squashfs(&object(spec)?, target);
        };
        // dm-verity: only ever through the verity device.
        let key = pvstate::verity::manifest_key(&self.name, volume);
        let manifest = env
            .state
            .get(&key)
            .ok_or_else(|| Error::container(&self.name, format!("no {key}")))
            .and_then(|e| {
                pvstate::verity::Manifest::parse(&e.to_value())
                    .map_err(|why| Error::container(&self.name, format!("{key}: {why}")))
            })?;
        let dm_name = crate::dm::verity_name(&self.name, volume);
        mounts::mount_verity(
            &dm_name,
            &object(volume)?,
            &object(&manifest.hash_device)?,
            &manifest,
            target,
            &env.run_dir.join("dm"),
        )
        .map_err(|e| Error::container(&self.name, e.to_string()))?;
        info!(
            "{}: volume dm:{volume} mounted through dm-verity ({dm_name})",
            self.name
        );
        Ok(())
    }

    /// The run.json `volumes` as mounted: (name, directory).
    fn images(&self, env: &Env) -> Vec<(String, PathBuf)> {
        self.run
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                let name = v.strip_prefix("dm:").unwrap_or(v).to_string();
                let dir = self.dir(env).join("images").join(&name);
                (name, dir)
            })
            .collect()
    }

    /// Mount the root squashfs, the config overlay and the writable layer.
    pub fn mount(&mut self, env: &Env) -> Result<()> {
        if self.mounted {
            return Ok(());
        }
        let dir = self.dir(env);
        // `boot` volumes on a disk start empty, as their tmpfs would.
        for key in self.run.storage.keys() {
            if let (Persistence::Boot | Persistence::BuiltIn, Some(d)) = self.on_disk(env, key) {
                let _ = fs::remove_dir_all(&d);
            }
        }
        self.mount_image(env, &self.run.root_volume, &dir.join("root"))?;
        for (image, (_, target)) in self.run.volumes.iter().flatten().zip(self.images(env)) {
            self.mount_image(env, image, &target)?;
        }
        self.mounted = true;
        // The _config overlay, written out as files.
        let config_dir = dir.join("config");
        let prefix = format!("_config/{}/", self.name);
        fs::create_dir_all(&config_dir).map_err(|e| Error::io(&config_dir, e))?;
        for (key, entry) in env.state.entries().range(prefix.clone()..) {
            let Some(rel) = key.strip_prefix(&prefix) else {
                break;
            };
            let dest = config_dir.join(rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            match entry {
                Entry::Object(id) => fs::copy(env.objects.path(id), &dest).map(|_| ()),
                other => fs::write(&dest, pvstate::canonical::to_vec(&other.to_value())),
            }
            .map_err(|e| Error::io(&dest, e))?;
        }
        // The writable layer follows lxc-overlay's persistence (and disk).
        let layer = match self.volume_dir(env, "lxc-overlay")? {
            Some(d) => d,
            None => {
                let t = dir.join("overlay-tmpfs");
                mounts::mount_tmpfs(&t, "mode=755")?;
                t
            }
        };
        mounts::mount_overlay(
            &[config_dir, dir.join("root")],
            &layer.join("upper"),
            &layer.join("work"),
            &dir.join("rootfs"),
        )?;
        // The control socket at /pantavisor/pv-ctrl, bound here rather than by
        // a spec mount: libcontainer 0.5 makes a directory for a bind mount
        // whose source is no regular file, a socket included. A tmpfs keeps
        // the mount point out of the writable layer; the rootfs's recursive
        // bind carries both into the container.
        let pv = dir.join("rootfs").join("pantavisor");
        mounts::mount_tmpfs(&pv, "mode=755,size=64k")?;
        let target = pv.join("pv-ctrl");
        fs::write(&target, b"").map_err(|e| Error::io(&target, e))?;
        mounts::bind(env.ctrl_socket, &target)?;
        self.status = Status::Mounted;
        Ok(())
    }

    /// Where storage entry `key` lives: on a device.json directory disk
    /// (its `disk`, or the default disk), else on storage by persistence;
    /// `None` for a tmpfs. (A `boot` volume on a disk is emptied by mount.)
    fn volume_dir(&self, env: &Env, key: &str) -> Result<Option<PathBuf>> {
        match self.on_disk(env, key) {
            (_, Some(d)) => {
                fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                Ok(Some(d))
            }
            (p, None) => Ok(env.storage.volume_dir(env.rev, &self.name, key, p)),
        }
    }

    /// Storage entry `key`'s persistence, and its directory when it lives
    /// on a device.json directory disk (its `disk`, or the default disk).
    fn on_disk(&self, env: &Env, key: &str) -> (Persistence, Option<PathBuf>) {
        let entry = self.run.storage.get(key);
        let p = entry
            .and_then(|e| e.persistence)
            .unwrap_or(Persistence::Boot);
        let disk = entry.and_then(|e| e.disk.as_deref());
        let dir = crate::support::disk_volume_dir(
            env.storage.root(),
            env.state,
            env.rev,
            &self.name,
            key,
            disk,
            p,
        );
        (p, dir)
    }

    /// Directories of the container's volumes (all storage entries but the
    /// writable layer).
    fn volumes(&self, env: &Env) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for key in self.run.storage.keys() {
            if key == "lxc-overlay" {
                continue;
            }
            let dir = match self.volume_dir(env, key)? {
                Some(d) => d,
                None => {
                    let d = self.dir(env).join("volumes").join(key);
                    if !d.exists() {
                        mounts::mount_tmpfs(&d, "mode=755")?;
                    }
                    d
                }
            };
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            out.push((key.clone(), dir));
        }
        Ok(out)
    }

    /// Create and start the container's init; returns its pid.
    /// `before_exec` runs with the init's pid once its namespaces and root
    /// exist and before its program runs (xconnect plants its sockets).
    pub fn start(
        &mut self,
        env: &Env,
        before_exec: &mut dyn FnMut(i32) -> std::result::Result<(), String>,
    ) -> Result<i32> {
        let config = self
            .config
            .clone()
            .map_err(|e| Error::container(&self.name, e))?;
        self.mount(env)?;
        let dir = self.dir(env);
        let bundle_dir = dir.join("bundle");
        fs::create_dir_all(&bundle_dir).map_err(|e| Error::io(&bundle_dir, e))?;
        let volumes = self.volumes(env)?;
        let rootfs = dir.join("rootfs");
        let cgroup = self.cgroup(env);
        let spec = bundle::spec(&BundleInput {
            name: &self.name,
            config: &config,
            rootfs: &rootfs,
            volumes: &volumes,
            images: &self.images(env),
            cgroup: &cgroup,
        })?;
        let spec_path = bundle_dir.join("config.json");
        fs::write(
            &spec_path,
            serde_json::to_vec_pretty(&spec).unwrap_or_default(),
        )
        .map_err(|e| Error::io(&spec_path, e))?;
        let lc_root = env.run_dir.join("youki");
        fs::create_dir_all(&lc_root).map_err(|e| Error::io(&lc_root, e))?;
        // A state directory left by a failed or killed earlier run blocks create.
        let stale = lc_root.join(&self.name);
        if stale.exists() {
            if let Ok(mut old) = LcContainer::load(stale.clone()) {
                let _ = old.delete(true);
            }
            let _ = fs::remove_dir_all(&stale);
        }
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
        let wr2 = wr.try_clone().map_err(|e| Error::io("pipe", e))?;
        let devnull = fs::File::open("/dev/null").map_err(|e| Error::io("/dev/null", e))?;
        let mut lc = ContainerBuilder::new(self.name.clone(), SyscallType::Linux)
            .with_root_path(lc_root)
            .map_err(|e| Error::container(&self.name, format!("runtime root: {e}")))?
            .with_executor(CleanSignals)
            .with_stdin(OwnedFd::from(devnull))
            .with_stdout(wr)
            .with_stderr(wr2)
            .as_init(&bundle_dir)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| Error::container(&self.name, format!("create: {e} ({e:?})")))?;
        let created = lc.pid().map(|p| p.as_raw());
        if let Some(pid) = created {
            if let Err(why) = before_exec(pid) {
                let _ = lc.kill(Signal::SIGKILL, true);
                let _ = lc.delete(true);
                return Err(Error::container(&self.name, why));
            }
        }
        lc.start()
            .map_err(|e| Error::container(&self.name, format!("start: {e}")))?;
        let pid = lc
            .pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| Error::container(&self.name, "started but has no pid"))?;
        self.lc = Some(lc);
        self.pid = Some(pid);
        self.log_pipe = Some(rd);
        self.started_at = Some(Instant::now());
        self.status = Status::Started;
        Ok(pid)
    }

    /// Send `sig` to the container's init (SIGTERM to ask it to stop; its
    /// namespace ends with it, taking every other process along).
    pub fn signal(&mut self, sig: Signal) {
        if let Some(lc) = self.lc.as_mut() {
            if lc.kill(sig, false).is_err() {
                if let Some(pid) = self.pid {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                }
            }
        }
    }

    /// The init was reaped: forget it and release the runtime's state (its
    /// cgroup and state directory).
    pub fn exited(&mut self, status: i32) {
        self.pid = None;
        self.last_exit = Some(status);
        if let Some(mut lc) = self.lc.take() {
            // Mark it stopped first: delete() looks the pid up in /proc, and
            // the number may already belong to another process.
            lc.set_status(ContainerStatus::Stopped);
            let _ = lc.save();
            let _ = lc.delete(true);
        }
        self.status = Status::Stopped;
    }

    /// Unmount everything of this container.
    pub fn unmount(&mut self, env: &Env) {
        let dir = self.dir(env);
        mounts::umount_all_below(&dir);
        // Only remove the directory once nothing is mounted below it: a
        // recursive delete through a live overlay would wipe persistent data.
        if mounts::mounts_below(&dir).is_empty() {
            let _ = fs::remove_dir_all(&dir);
        } else {
            crate::warn!("{}: mounts remain below {}", self.name, dir.display());
        }
        self.mounted = false;
        if self.status == Status::Mounted {
            self.status = Status::Installed;
        }
    }

    pub fn is_running(&self) -> bool {
        self.pid.is_some()
    }
}
