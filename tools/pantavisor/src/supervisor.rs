//! The daemon's event loop: one thread, one epoll over a signalfd (child
//! exits, SIGTERM/SIGINT), the control socket, its connections and the
//! containers' log pipes; timers are the epoll timeout.
//!
//! It brings the revision up group by group, restarts containers per their
//! `auto_recovery`, answers the control socket and stops everything in
//! reverse group order on SIGTERM.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use pvstate::model::{RestartPolicy, Role, StatusGoal};
use pvstate::{ObjectStore, State};
use serde_json::{json, Value};

use crate::bootenv::BootEnv;
use crate::conn::Conn;
use crate::container::{Ctr, Status};
use crate::error::{Error, Result};
use crate::http;
use crate::mounts;
use crate::recovery::{self, Decision};
use crate::storage::Storage;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub storage: PathBuf,
    pub ctrl_socket: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_parent: String,
    /// Rotate a container's log file past this size.
    pub log_max_bytes: u64,
    /// Time between SIGTERM and SIGKILL when stopping a container.
    pub stop_timeout: Duration,
    /// How long a new revision has to reach every status goal.
    pub goals_timeout: Duration,
    /// How long a new revision must then run without a container exiting.
    pub commit_delay: Duration,
    /// Re-hash every object of a revision before running it.
    pub verify_objects: bool,
    /// How strictly pvs@2 signatures are checked (trust store:
    /// `config/trust/*.pem` on storage).
    pub signatures: pvstate::sig::Mode,
    /// Serve the control API on this TCP address too (off by default)...
    pub remote_listen: Option<std::net::SocketAddr>,
    /// ...to callers presenting this bearer token (required with it).
    pub remote_token: Option<String>,
    /// Where the boot handshake lives (see [`crate::bootenv::store_from_spec`]).
    pub bootloader: String,
    /// Embedded mode: reboot transitions, REBOOT_DEVICE and a crashed
    /// `system` container really reboot (run() returns [`Stop::Reboot`]);
    /// appengine mode brings the new revision up in place instead.
    pub real_reboot: bool,
}

/// Why [`Daemon::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM/SIGINT: every container stopped.
    Halt,
    /// Every container stopped for a reboot; `arg` for reboot(2)'s RESTART2
    /// (the Raspberry Pi firmware's `0 tryboot`), if the bootloader wants one.
    Reboot { why: String, arg: Option<String> },
}

pub(crate) struct GroupRt {
    pub(crate) name: String,
    pub(crate) timeout: Duration,
    pub(crate) members: Vec<usize>,
    pub(crate) launched: bool,
    pub(crate) deadline: Option<Instant>,
}

pub(crate) struct Client {
    pub(crate) stream: Conn,
    /// Came over TCP: every request must carry the bearer token.
    pub(crate) remote: bool,
    pub(crate) buf: Vec<u8>,
    /// The container the caller runs in; None for the host side.
    pub(crate) caller: Option<usize>,
    /// An object upload being streamed to storage.
    pub(crate) upload: Option<crate::update::Upload>,
}

const TOKEN_SIGNALS: u64 = 1;
const TOKEN_LISTENER: u64 = 2;
const TOKEN_TCP: u64 = 3;
const TOKEN_LOG_BASE: u64 = 1_000;
const TOKEN_CLIENT_BASE: u64 = 1_000_000;

/// The containers' environment, borrowed field by field so that a container
/// of `$d.ctrs` can be borrowed mutably beside it.
macro_rules! ctr_env {
    ($d:expr) => {
        $crate::container::Env {
            storage: &$d.storage,
            objects: &$d.objects,
            state: &$d.state,
            rev: &$d.rev,
            run_dir: &$d.opts.run_dir,
            ctrl_socket: &$d.opts.ctrl_socket,
            cgroup_parent: &$d.opts.cgroup_parent,
        }
    };
}
pub(crate) use ctr_env;

pub struct Daemon {
    pub(crate) opts: Options,
    pub(crate) storage: Storage,
    pub(crate) objects: ObjectStore,
    pub(crate) state: State,
    pub(crate) rev: String,
    pub(crate) ctrs: Vec<Ctr>,
    pub(crate) groups: Vec<GroupRt>,
    pub(crate) next_group: usize,
    pub(crate) epoll: Epoll,
    pub(crate) signals: SignalFd,
    pub(crate) listener: UnixListener,
    /// The remote API (disabled unless remote.listen is set).
    pub(crate) tcp: Option<TcpListener>,
    pub(crate) clients: HashMap<u64, Client>,
    pub(crate) next_client: u64,
    /// Why the system should reboot; appengine mode reports it instead.
    pub(crate) reboot_requested: Option<String>,
    /// Set when the daemon stops in order to reboot (embedded mode).
    pub(crate) reboot_now: Option<Stop>,
    /// Index of the group being stopped during shutdown.
    pub(crate) shutdown_group: Option<usize>,
    pub(crate) log_sizes: HashMap<PathBuf, u64>,
    pub(crate) bootenv: BootEnv,
    /// The update under way, if any.
    pub(crate) update: Option<crate::update::Update>,
    pub(crate) next_uid: u64,
    /// The socket file we made, to remove only that one at the end.
    pub(crate) socket_inode: u64,
}

pub(crate) fn goal_reached(c: &Ctr) -> bool {
    match c.eff.status_goal {
        StatusGoal::Mounted => c.status >= Status::Mounted && c.status != Status::Stopped,
        StatusGoal::Started => matches!(c.status, Status::Started | Status::Ready),
        StatusGoal::Ready => c.status == Status::Ready,
    }
}

/// The containers and groups of `state`, in start order. Containers of
/// `keep` with a name in the state are reused as they are (still running);
/// the others get a new entry.
pub(crate) fn layout(
    state: &State,
    objects: &ObjectStore,
    mut keep: Vec<Ctr>,
    next_uid: &mut u64,
) -> Result<(Vec<Ctr>, Vec<GroupRt>)> {
    let (groups_def, _) = state.groups();
    let assignment = state.group_assignment();
    let mut ctrs = Vec::new();
    let mut groups: Vec<GroupRt> = groups_def
        .iter()
        .map(|g| GroupRt {
            name: g.name.clone(),
            timeout: Duration::from_secs(g.timeout.unwrap_or(30)),
            members: Vec::new(),
            launched: false,
            deadline: None,
        })
        .collect();
    for name in state.containers().keys() {
        let ctr = match keep.iter().position(|c| c.name == *name) {
            Some(k) => keep.swap_remove(k),
            None => {
                let mut c = Ctr::new(name, state, objects)?;
                c.uid = *next_uid;
                *next_uid += 1;
                c
            }
        };
        let gi = groups
            .iter()
            .position(|g| Some(&g.name) == assignment.get(*name))
            .ok_or_else(|| Error::container(name, "its group does not exist"))?;
        groups[gi].members.push(ctrs.len());
        ctrs.push(ctr);
    }
    Ok((ctrs, groups))
}

impl Daemon {
    pub fn new(opts: Options) -> Result<Self> {
        let storage = Storage::open(&opts.storage)?;
        let objects = storage.objects()?;
        let mut bootenv = BootEnv::load_from(crate::bootenv::store_from_spec(
            &opts.bootloader,
            storage.root(),
        )?)?;
        let mut trying = None;
        let rev = match bootenv.try_rev.clone() {
            Some(t) if bootenv.trying.as_deref() == Some(t.as_str()) => {
                // Its try began before and never committed: never twice.
                let _ = storage.set_progress(
                    &t,
                    "ERROR",
                    "Revision was tried and not committed; rolled back",
                    0,
                );
                bootenv.try_rev = None;
                bootenv.trying = None;
                bootenv.save()?;
                bootenv.rev.clone()
            }
            Some(t) => {
                bootenv.trying = Some(t.clone());
                bootenv.save()?;
                trying = Some(t.clone());
                t
            }
            None => bootenv.rev.clone(),
        };
        // A revision being tried must also pass the signature check: the
        // device refuses to boot into one that does not.
        let checked = storage.state(&rev).and_then(|s| {
            match crate::update::signature_problem(storage.root(), opts.signatures, &s) {
                Some(why) if trying.is_some() => Err(Error::Other(format!("WONTGO: {why}"))),
                _ => Ok(s),
            }
        });
        let state = match checked {
            Ok(s) => s,
            Err(e) if trying.is_some() => {
                error!("revision {rev}: {e}; back to {}", bootenv.rev);
                let _ = storage.set_progress(&rev, "ERROR", &e.to_string(), 0);
                bootenv.try_rev = None;
                bootenv.trying = None;
                bootenv.save()?;
                trying = None;
                storage.state(&bootenv.rev)?
            }
            Err(e) => return Err(e),
        };
        let rev = if trying.is_some() {
            rev
        } else {
            bootenv.rev.clone()
        };
        crate::log::to_file(&storage.log_dir(&rev, "pantavisor").join("pantavisor.log"));
        info!("revision {rev}: {} containers", state.containers().len());
        let mut next_uid = 0;
        let (ctrs, groups) = layout(&state, &objects, Vec::new(), &mut next_uid)?;
        // SIGCHLD, SIGTERM and SIGINT arrive through the signalfd only.
        let mut mask = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| Error::sys("block signals", e))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::sys("signalfd", e))?;
        // Orphaned container inits (their parent, the runtime's intermediate
        // process, exits) come back to us to be reaped.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        fs::create_dir_all(&opts.run_dir).map_err(|e| Error::io(&opts.run_dir, e))?;
        if let Some(parent) = opts.ctrl_socket.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let _ = fs::remove_file(&opts.ctrl_socket);
        let listener =
            UnixListener::bind(&opts.ctrl_socket).map_err(|e| Error::io(&opts.ctrl_socket, e))?;
        use std::os::unix::fs::MetadataExt;
        let socket_inode = fs::metadata(&opts.ctrl_socket)
            .map(|m| m.ino())
            .unwrap_or(0);
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(&opts.ctrl_socket, e))?;
        // Containers of any user may talk to the socket.
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&opts.ctrl_socket, fs::Permissions::from_mode(0o666));
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::sys("epoll", e))?;
        epoll
            .add(
                signals.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNALS),
            )
            .map_err(|e| Error::sys("epoll add", e))?;
        epoll
            .add(
                listener.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER),
            )
            .map_err(|e| Error::sys("epoll add", e))?;
        let update = trying
            .map(|t| crate::update::Update::after_boot(t, bootenv.rev.clone(), opts.goals_timeout));
        let tcp = match (&opts.remote_listen, &opts.remote_token) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::Other(
                    "remote.listen needs remote.token: no token, no remote access".into(),
                ))
            }
            (Some(addr), Some(_)) => {
                let l = TcpListener::bind(addr)
                    .map_err(|e| Error::Other(format!("remote.listen {addr}: {e}")))?;
                l.set_nonblocking(true)
                    .map_err(|e| Error::Other(format!("remote.listen {addr}: {e}")))?;
                epoll
                    .add(l.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TCP))
                    .map_err(|e| Error::sys("epoll add", e))?;
                info!("remote API on {addr} (bearer token required)");
                Some(l)
            }
        };
        Ok(Daemon {
            tcp,
            opts,
            storage,
            objects,
            state,
            rev,
            ctrs,
            groups,
            bootenv,
            update,
            next_uid,
            next_group: 0,
            epoll,
            signals,
            listener,
            clients: HashMap::new(),
            next_client: 0,
            reboot_requested: None,
            reboot_now: None,
            shutdown_group: None,
            log_sizes: HashMap::new(),
            socket_inode,
        })
    }

    /// Run until stopped by SIGTERM/SIGINT, or (embedded mode) until every
    /// container stopped for a reboot.
    pub fn run(mut self) -> Result<Stop> {
        self.advance_groups();
        self.install_factory_packages();
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let timeout = self.next_timeout();
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => 0,
                Err(e) => return Err(Error::sys("epoll wait", e)),
            };
            for ev in events.iter().take(n) {
                match ev.data() {
                    TOKEN_SIGNALS => self.on_signals(),
                    TOKEN_LISTENER => self.on_accept(),
                    TOKEN_TCP => self.on_accept_tcp(),
                    t if (TOKEN_LOG_BASE..TOKEN_CLIENT_BASE).contains(&t) => {
                        let uid = t - TOKEN_LOG_BASE;
                        if let Some(i) = self.ctrs.iter().position(|c| c.uid == uid) {
                            self.on_log(i)
                        }
                    }
                    t => self.on_client(t),
                }
            }
            self.on_timers();
            if self.shutdown_group.is_none() {
                self.advance_update();
            }
            if self.shutdown_group.is_some() && self.advance_shutdown() {
                self.finish_shutdown();
                return Ok(self.reboot_now.take().unwrap_or(Stop::Halt));
            }
        }
    }

    fn next_timeout(&self) -> u16 {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for c in &self.ctrs {
            consider(c.restart_at);
            consider(c.kill_at);
        }
        if let Some(g) = self.groups.get(self.next_group) {
            consider(g.deadline);
        }
        if let Some(u) = &self.update {
            match &u.phase {
                crate::update::Phase::Testing {
                    deadline,
                    commit_at,
                } => {
                    consider(Some(*deadline));
                    consider(*commit_at);
                }
                crate::update::Phase::Stopping { .. } => {
                    consider(Some(now + Duration::from_millis(50)))
                }
            }
        }
        match next {
            None => 1000,
            Some(t) => t.saturating_duration_since(now).as_millis().min(1000) as u16,
        }
    }

    // ---- group bring-up ----

    pub(crate) fn advance_groups(&mut self) {
        if self.shutdown_group.is_some() {
            return;
        }
        while self.next_group < self.groups.len() {
            let gi = self.next_group;
            if !self.groups[gi].launched {
                let g = &mut self.groups[gi];
                g.launched = true;
                g.deadline = Some(Instant::now() + g.timeout);
                info!(
                    "group {}: starting {} container(s)",
                    g.name,
                    g.members.len()
                );
                for i in self.groups[gi].members.clone() {
                    self.bring_up(i);
                }
            }
            let g = &self.groups[gi];
            let all = g.members.iter().all(|&i| goal_reached(&self.ctrs[i]));
            let timed_out = g.deadline.is_some_and(|d| Instant::now() >= d);
            if !(all || timed_out) {
                return;
            }
            if !all {
                let late: Vec<&str> = g
                    .members
                    .iter()
                    .filter(|&&i| !goal_reached(&self.ctrs[i]))
                    .map(|&i| self.ctrs[i].name.as_str())
                    .collect();
                warn!(
                    "group {}: timeout after {:?}; not at their goal: {}",
                    g.name,
                    g.timeout,
                    late.join(", ")
                );
            } else {
                info!("group {}: every container reached its goal", g.name);
            }
            self.next_group += 1;
        }
    }

    fn bring_up(&mut self, i: usize) {
        // Kept across a non-reboot transition: already where it should be.
        let c = &self.ctrs[i];
        if c.is_running()
            || (c.eff.status_goal == StatusGoal::Mounted && c.status == Status::Mounted)
        {
            return;
        }
        let env_result = {
            let env = ctr_env!(self);
            let c = &mut self.ctrs[i];
            if c.eff.status_goal == StatusGoal::Mounted {
                c.mount(&env).map(|_| None)
            } else {
                c.start(&env).map(Some)
            }
        };
        match env_result {
            Ok(Some(pid)) => {
                info!("{}: started, pid {pid}", self.ctrs[i].name);
                self.watch_log(i);
            }
            Ok(None) => info!("{}: mounted", self.ctrs[i].name),
            Err(e) => {
                error!("{e}");
                self.ctrs[i].status = Status::Stopped;
                let name = self.ctrs[i].name.clone();
                if self.exit_during_update(&name) {
                    return;
                }
                self.recover(i, Duration::ZERO, None);
            }
        }
    }

    // ---- exits and recovery ----

    fn on_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => self.begin_shutdown(),
                _ => {}
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_exit(pid.as_raw(), 128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }

    fn on_exit(&mut self, pid: i32, code: i32) {
        let Some(i) = self.ctrs.iter().position(|c| c.pid == Some(pid)) else {
            return; // an intermediate process of the runtime, or an orphan
        };
        self.drain_log(i);
        let ran_for = self.ctrs[i]
            .started_at
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let c = &mut self.ctrs[i];
        c.exited(code);
        c.kill_at = None;
        info!(
            "{}: exited with status {code} after {:.1} s",
            c.name,
            ran_for.as_secs_f64()
        );
        if self.shutdown_group.is_some() {
            return;
        }
        if c.restart_after_stop {
            c.restart_after_stop = false;
            c.stopped_by_user = false;
            self.restart_now(i);
            return;
        }
        if c.stopped_by_user {
            return;
        }
        let name = c.name.clone();
        if self.exit_during_update(&name) {
            return;
        }
        self.recover(i, ran_for, Some(code));
    }

    /// Apply the container's recovery policy after it stopped (`exit`) or
    /// failed to start (None).
    fn recover(&mut self, i: usize, ran_for: Duration, exit: Option<i32>) {
        let c = &mut self.ctrs[i];
        let (decision, retries) = recovery::decide(
            c.eff.auto_recovery.as_ref(),
            c.eff.restart_policy,
            c.retries,
            ran_for,
            exit,
        );
        c.retries = retries;
        match decision {
            Decision::Restart { after } => {
                c.restart_at = Some(Instant::now() + after);
                info!(
                    "{}: restart {} in {:.1} s",
                    c.name,
                    c.retries,
                    after.as_secs_f64()
                );
            }
            Decision::LeaveStopped(why) => info!("{}: {why}, left stopped", c.name),
            Decision::Reboot(why) => {
                let why = format!("container {}: {why}", c.name);
                self.request_reboot(why);
            }
        }
    }

    pub(crate) fn request_reboot(&mut self, why: String) {
        if self.opts.real_reboot {
            info!("rebooting: {why}");
            self.reboot_requested = Some(why.clone());
            self.reboot_now = Some(Stop::Reboot {
                why,
                arg: self.bootenv.reboot_arg(),
            });
            self.begin_shutdown();
            return;
        }
        warn!("reboot requested: {why} (appengine mode: the host is not rebooted)");
        self.reboot_requested = Some(why);
    }

    fn restart_now(&mut self, i: usize) {
        self.ctrs[i].restart_at = None;
        self.ctrs[i].restarts += 1;
        self.bring_up(i);
        self.advance_groups();
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        for i in 0..self.ctrs.len() {
            if self.ctrs[i].kill_at.is_some_and(|t| now >= t) {
                self.ctrs[i].kill_at = None;
                warn!("{}: did not stop in time, killing it", self.ctrs[i].name);
                self.ctrs[i].signal(Signal::SIGKILL);
            }
            if self.ctrs[i].restart_at.is_some_and(|t| now >= t) && !self.ctrs[i].is_running() {
                self.restart_now(i);
            }
        }
        self.advance_groups();
    }

    pub(crate) fn stop_container(&mut self, i: usize) {
        let c = &mut self.ctrs[i];
        c.restart_at = None;
        if c.is_running() {
            c.status = Status::Stopping;
            c.signal(Signal::SIGTERM);
            c.kill_at = Some(Instant::now() + self.opts.stop_timeout);
        }
    }

    // ---- shutdown ----

    fn begin_shutdown(&mut self) {
        if self.shutdown_group.is_none() {
            info!("stopping: containers in reverse group order");
            self.shutdown_group = Some(self.groups.len());
        }
    }

    /// Stop the groups from the last; true when every container is down.
    fn advance_shutdown(&mut self) -> bool {
        loop {
            let Some(g) = self.shutdown_group else {
                return true;
            };
            if g < self.groups.len() {
                let members = self.groups[g].members.clone();
                if members.iter().any(|&i| self.ctrs[i].is_running()) {
                    return false;
                }
            }
            if g == 0 {
                return true;
            }
            let next = g - 1;
            self.shutdown_group = Some(next);
            for i in self.groups[next].members.clone() {
                if self.ctrs[i].is_running() && self.ctrs[i].status != Status::Stopping {
                    self.stop_container(i);
                }
            }
        }
    }

    fn finish_shutdown(&mut self) {
        let env = ctr_env!(self);
        for c in self.ctrs.iter_mut() {
            c.unmount(&env);
        }
        mounts::umount_all_below(&self.opts.run_dir);
        remove_cgroup_parent(&self.opts.cgroup_parent);
        use std::os::unix::fs::MetadataExt;
        if fs::metadata(&self.opts.ctrl_socket).map(|m| m.ino()).ok() == Some(self.socket_inode) {
            let _ = fs::remove_file(&self.opts.ctrl_socket);
        }
        info!("stopped");
    }

    // ---- logs ----

    fn watch_log(&mut self, i: usize) {
        if let Some(fd) = self.ctrs[i].log_pipe.as_ref() {
            let _ = nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            let _ = self.epoll.add(
                fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LOG_BASE + self.ctrs[i].uid),
            );
        }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.storage
            .log_dir(&self.rev, &self.ctrs[i].name)
            .join("stdout.log")
    }

    fn on_log(&mut self, i: usize) {
        let mut buf = [0u8; 16384];
        loop {
            let Some(fd) = self.ctrs[i].log_pipe.as_ref() else {
                return;
            };
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    // Every writer is gone.
                    if let Some(fd) = self.ctrs[i].log_pipe.take() {
                        let _ = self.epoll.delete(fd.as_fd());
                    }
                    return;
                }
                Ok(n) => self.append_log(i, &buf[..n]),
                Err(_) => return,
            }
        }
    }

    fn drain_log(&mut self, i: usize) {
        self.on_log(i);
    }

    fn append_log(&mut self, i: usize, data: &[u8]) {
        let path = self.log_path(i);
        let size = self
            .log_sizes
            .entry(path.clone())
            .or_insert_with(|| fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
        if *size + data.len() as u64 > self.opts.log_max_bytes {
            let _ = fs::rename(&path, path.with_extension("log.1"));
            *size = 0;
        }
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&path) {
            if f.write_all(data).is_ok() {
                *size += data.len() as u64;
            }
        }
    }

    // ---- control socket ----

    fn on_accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let caller = getsockopt(&stream, PeerCredentials)
                        .ok()
                        .and_then(|cred| self.container_of(cred.pid()));
                    self.add_client(Conn::Unix(stream), false, caller);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("control socket: {e}");
                    return;
                }
            }
        }
    }

    fn on_accept_tcp(&mut self) {
        loop {
            let Some(l) = self.tcp.as_ref() else { return };
            match l.accept() {
                Ok((stream, _)) => self.add_client(Conn::Tcp(stream), true, None),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("remote API: {e}");
                    return;
                }
            }
        }
    }

    /// Watch a new connection until its request is answered.
    fn add_client(&mut self, stream: Conn, remote: bool, caller: Option<usize>) {
        let _ = stream.set_nonblocking(true);
        let token = TOKEN_CLIENT_BASE + self.next_client;
        self.next_client += 1;
        if self
            .epoll
            .add(stream.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
            .is_ok()
        {
            let client = Client {
                stream,
                remote,
                buf: Vec::new(),
                caller,
                upload: None,
            };
            self.clients.insert(token, client);
        }
    }

    /// The container whose cgroup holds `pid`.
    fn container_of(&self, pid: i32) -> Option<usize> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let prefix = format!("/{}/", self.opts.cgroup_parent);
        let name = text.lines().find_map(|l| {
            let path = l.splitn(3, ':').nth(2)?;
            let rest = path.split(&prefix).nth(1)?;
            Some(rest.split('/').next()?.to_string())
        })?;
        self.ctrs.iter().position(|c| c.name == name)
    }

    fn on_client(&mut self, token: u64) {
        let Some(mut client) = self.clients.remove(&token) else {
            return;
        };
        let mut chunk = vec![0u8; 65536];
        let mut closed = false;
        let mut reply: Option<Vec<u8>> = None;
        loop {
            let n = match client.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            };
            if let Some(mut up) = client.upload.take() {
                if let Some((code, body)) = self.feed_upload(&mut up, &chunk[..n]) {
                    reply = Some(http::response(code, &body));
                    break;
                }
                client.upload = Some(up);
                continue;
            }
            client.buf.extend_from_slice(&chunk[..n]);
            if client.remote {
                if let Ok(Some(head)) = http::parse_head(&client.buf) {
                    let token = self.opts.remote_token.as_deref().unwrap_or("");
                    if !http::bearer_ok(&head, token) {
                        let why = if head.authorization.is_some() {
                            "wrong token"
                        } else {
                            "a bearer token is required"
                        };
                        reply = Some(http::response(401, &json!({ "Error": why })));
                        break;
                    }
                }
            }
            // An object upload is streamed to storage, not held in memory.
            match http::parse_head(&client.buf) {
                Ok(Some(head)) if head.method == "PUT" && head.path.starts_with("/objects/") => {
                    if let Some((code, body)) = self.denied(client.caller) {
                        reply = Some(http::response(code, &body));
                        break;
                    }
                    match self.begin_upload(&head.path["/objects/".len()..], head.length) {
                        Ok(mut up) => {
                            let body = client.buf.split_off(head.header_len);
                            client.buf.clear();
                            if let Some((code, b)) = self.feed_upload(&mut up, &body) {
                                reply = Some(http::response(code, &b));
                                break;
                            }
                            client.upload = Some(up);
                        }
                        Err((code, body)) => {
                            reply = Some(http::response(code, &body));
                            break;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    reply = Some(http::response(400, &json!({ "Error": e })));
                    break;
                }
            }
            if client.upload.is_none() && client.buf.len() > http::MAX_REQUEST {
                reply = Some(http::response(413, &json!({"Error": "request too large"})));
                break;
            }
        }
        if reply.is_none() && client.upload.is_none() {
            match http::parse(&client.buf) {
                Ok(Some(req)) => reply = Some(self.respond(client.caller, &req)),
                Ok(None) => {}
                Err(e) => reply = Some(http::response(400, &json!({ "Error": e }))),
            }
        }
        if reply.is_none() && !closed {
            self.clients.insert(token, client);
            return;
        }
        let _ = self.epoll.delete(client.stream.as_fd());
        if let Some(up) = client.upload.take() {
            // The peer went away mid-upload: nothing half-written remains.
            let _ = fs::remove_file(&up.tmp);
        }
        if let Some(bytes) = reply {
            let _ = client.stream.set_nonblocking(false);
            let _ = client
                .stream
                .set_write_timeout(Some(Duration::from_secs(30)));
            let _ = client.stream.write_all(&bytes);
        }
    }

    /// Non-mgmt containers may only send signals.
    fn denied(&self, caller: Option<usize>) -> Option<(u16, Value)> {
        let i = caller?;
        let mgmt = self
            .ctrs
            .get(i)?
            .run
            .roles
            .as_ref()
            .is_some_and(|r| r.contains(&Role::Mgmt));
        (!mgmt).then(|| {
            (403, json!({"Error": format!("container {} has no mgmt role: only /signal is allowed", self.ctrs[i].name)}))
        })
    }

    /// The full HTTP answer to a request.
    fn respond(&mut self, caller: Option<usize>, req: &http::Request) -> Vec<u8> {
        if req.method == "GET" {
            if let Some(sha) = req.path.strip_prefix("/objects/") {
                if self.denied(caller).is_none() {
                    if let Ok(id) = sha.parse::<pvstate::ObjectId>() {
                        return match fs::read(self.objects.path(&id)) {
                            Ok(bytes) => http::raw_response(200, "application/octet-stream", bytes),
                            Err(_) => {
                                http::response(404, &json!({"Error": format!("no object {id}")}))
                            }
                        };
                    }
                }
            }
        }
        let (code, body) = self.handle(caller, req);
        http::response(code, &body)
    }

    fn handle(&mut self, caller: Option<usize>, req: &http::Request) -> (u16, Value) {
        let path = req
            .path
            .split('?')
            .next()
            .unwrap_or("/")
            .trim_end_matches('/');
        let method = req.method.as_str();
        if path == "/signal" {
            return self.signal_endpoint(caller, &req.body);
        }
        if let Some(denied) = self.denied(caller) {
            return denied;
        }
        match (method, path) {
            ("GET", "/containers") => (
                200,
                Value::Array(self.ctrs.iter().map(|c| self.describe(c)).collect()),
            ),
            ("PUT", p) if p.starts_with("/containers/") => {
                self.container_action(&p["/containers/".len()..], &req.body)
            }
            ("GET", "/groups") => (200, self.describe_groups()),
            ("GET", "/buildinfo") => (
                200,
                json!({"name": "pantavisor-rs", "version": env!("CARGO_PKG_VERSION"), "mode": "appengine"}),
            ),
            ("GET", "/device-meta") => (200, self.device_meta()),
            ("GET", "/user-meta") => (200, self.user_meta_all()),
            ("GET", "/objects") => match self.objects.list() {
                Ok(ids) => (
                    200,
                    json!(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()),
                ),
                Err(e) => (500, json!({"Error": e.to_string()})),
            },
            ("GET", "/steps") => (200, self.steps()),
            (m, p) if p.starts_with("/steps/") => {
                self.steps_endpoint(m, &p["/steps/".len()..], &req.body)
            }
            ("POST", "/commands") => self.command(&req.body),
            ("POST", "/storage/gc") => self.gc(),
            (m, p) if p.starts_with("/user-meta/") => {
                self.user_meta_key(m, &p["/user-meta/".len()..], &req.body)
            }
            (_, "/containers" | "/groups" | "/buildinfo" | "/device-meta" | "/user-meta") => (
                405,
                json!({"Error": format!("{method} not allowed on {path}")}),
            ),
            _ => (404, json!({"Error": format!("no endpoint {path}")})),
        }
    }

    fn steps_endpoint(&mut self, method: &str, rest: &str, body: &[u8]) -> (u16, Value) {
        if let Some(rev) = rest.strip_suffix("/progress") {
            return match self.storage.progress(rev) {
                Some(p) => (200, p),
                None if self.storage.revisions().iter().any(|r| r == rev) => (
                    200,
                    json!({"status": "NEW", "status-msg": "", "progress": 0}),
                ),
                None => (404, json!({"Error": format!("no revision {rev}")})),
            };
        }
        if let Some(rev) = rest.strip_suffix("/commitmsg") {
            if method != "PUT" {
                return (405, json!({"Error": "PUT a commit message"}));
            }
            let dir = self.storage.trail(rev).join(".pv");
            if !self.storage.trail(rev).join(".pvr/json").is_file() {
                return (404, json!({"Error": format!("no revision {rev}")}));
            }
            let _ = fs::create_dir_all(&dir);
            return match pvstate::store::write_atomic(&dir.join("commitmsg"), body) {
                Ok(()) => (200, json!({})),
                Err(e) => (500, json!({"Error": e.to_string()})),
            };
        }
        match method {
            "PUT" => match rest.strip_prefix("locals/") {
                Some(name) => self.install_step(name, body),
                None => (
                    400,
                    json!({"Error": "only locals/NAME revisions can be installed here"}),
                ),
            },
            "GET" => match self.storage.state(rest) {
                Ok(state) => (200, state.to_value()),
                Err(_) => (404, json!({"Error": format!("no revision {rest}")})),
            },
            _ => (
                405,
                json!({"Error": format!("{method} not allowed on /steps/{rest}")}),
            ),
        }
    }

    fn describe(&self, c: &Ctr) -> Value {
        json!({
            "name": c.name,
            "group": c.eff.group,
            "status": c.status.as_str(),
            "status_goal": c.eff.status_goal.to_string(),
            "restart_policy": c.eff.restart_policy.to_string(),
            "roles": c.run.roles.clone().unwrap_or_default(),
            "pid": c.pid,
            "restarts": c.restarts,
            "last_exit": c.last_exit,
        })
    }

    fn describe_groups(&self) -> Value {
        Value::Array(
            self.groups
                .iter()
                .enumerate()
                .map(|(gi, g)| {
                    let status = if gi < self.next_group {
                        "READY"
                    } else if g.launched {
                        "STARTING"
                    } else {
                        "WAITING"
                    };
                    json!({
                        "name": g.name,
                        "timeout": g.timeout.as_secs(),
                        "status": status,
                        "containers": g.members.iter().map(|&i| self.ctrs[i].name.clone()).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }

    fn signal_endpoint(&mut self, caller: Option<usize>, body: &[u8]) -> (u16, Value) {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return (400, json!({"Error": format!("body is not JSON: {e}")})),
        };
        let Some(i) = caller else {
            return (
                400,
                json!({"Error": "signals come from containers; this caller is not in one"}),
            );
        };
        match v.get("type").and_then(Value::as_str) {
            Some("ready") => {
                let c = &mut self.ctrs[i];
                if c.is_running() {
                    c.status = Status::Ready;
                    info!("{}: READY", c.name);
                }
                self.advance_groups();
                (200, json!({}))
            }
            Some(other) => (
                400,
                json!({"Error": format!("unknown signal type \"{other}\"")}),
            ),
            None => (400, json!({"Error": "missing \"type\""})),
        }
    }

    fn container_action(&mut self, name: &str, body: &[u8]) -> (u16, Value) {
        let Some(i) = self.ctrs.iter().position(|c| c.name == name) else {
            return (404, json!({"Error": format!("no container {name}")}));
        };
        if self.ctrs[i].eff.restart_policy == RestartPolicy::System {
            return (
                403,
                json!({"Error": format!("{name} has restart_policy system: it cannot be stopped or restarted alone")}),
            );
        }
        let action = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_string));
        match action.as_deref() {
            Some("stop") => {
                self.ctrs[i].stopped_by_user = true;
                self.stop_container(i);
            }
            Some("start") => {
                self.ctrs[i].stopped_by_user = false;
                if !self.ctrs[i].is_running() {
                    self.ctrs[i].retries = 0;
                    self.restart_now(i);
                }
            }
            Some("restart") => {
                if self.ctrs[i].is_running() {
                    self.ctrs[i].restart_after_stop = true;
                    self.stop_container(i);
                } else {
                    self.ctrs[i].stopped_by_user = false;
                    self.restart_now(i);
                }
            }
            Some("kill") => {
                // A signal to the container's init, as a crash would end it:
                // what follows is its auto_recovery's business (docker kill).
                let sig = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("signal").and_then(Value::as_i64))
                    .unwrap_or(9);
                let Ok(signal) = Signal::try_from(sig as i32) else {
                    return (400, json!({"Error": format!("signal {sig}: not a signal")}));
                };
                let Some(pid) = self.ctrs[i].pid else {
                    return (409, json!({"Error": format!("{name} is not running")}));
                };
                if let Err(e) = nix::sys::signal::kill(Pid::from_raw(pid), signal) {
                    return (500, json!({"Error": format!("kill {name}: {e}")}));
                }
                info!("{name}: sent {signal} on request");
            }
            _ => {
                return (
                    400,
                    json!({"Error": "body must be {\"action\": \"stop\" | \"start\" | \"restart\" | \"kill\"}"}),
                )
            }
        }
        (200, self.describe(&self.ctrs[i]))
    }

    fn device_meta(&self) -> Value {
        // The daemon's resident memory (VmRSS of /proc/self/status), in kB.
        let rss_kb = fs::read_to_string("/proc/self/status").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        json!({
            "pantavisor.version": env!("CARGO_PKG_VERSION"),
            "pantavisor.mode": if self.opts.real_reboot { "embedded" } else { "appengine" },
            "pantavisor.revision": self.rev,
            "pantavisor.reboot-requested": self.reboot_requested,
            "pantavisor.rss_kb": rss_kb,
        })
    }

    fn user_meta_all(&self) -> Value {
        let mut map = serde_json::Map::new();
        if let Ok(entries) = fs::read_dir(self.storage.user_meta_dir()) {
            for e in entries.flatten() {
                if let (Some(k), Ok(v)) = (
                    e.file_name().to_str().map(str::to_string),
                    fs::read_to_string(e.path()),
                ) {
                    if !k.starts_with('.') {
                        map.insert(k, json!(v));
                    }
                }
            }
        }
        Value::Object(map)
    }

    fn user_meta_key(&mut self, method: &str, key: &str, body: &[u8]) -> (u16, Value) {
        if key.is_empty() || key.contains('/') || key.starts_with('.') || key.len() > 255 {
            return (
                400,
                json!({"Error": format!("\"{key}\" is not a metadata key")}),
            );
        }
        let dir = self.storage.user_meta_dir();
        let path = dir.join(key);
        match method {
            "GET" => match fs::read_to_string(&path) {
                Ok(v) => (200, json!(v)),
                Err(_) => (404, json!({"Error": format!("no user-meta {key}")})),
            },
            "PUT" => {
                let Ok(value) = std::str::from_utf8(body) else {
                    return (400, json!({"Error": "value is not UTF-8"}));
                };
                let _ = fs::create_dir_all(&dir);
                match pvstate::store::write_atomic(&path, value.as_bytes()) {
                    Ok(()) => (200, json!({})),
                    Err(e) => (500, json!({"Error": e.to_string()})),
                }
            }
            "DELETE" => match fs::remove_file(&path) {
                Ok(()) => (200, json!({})),
                Err(_) => (404, json!({"Error": format!("no user-meta {key}")})),
            },
            _ => (
                405,
                json!({"Error": format!("{method} not allowed on /user-meta/{key}")}),
            ),
        }
    }
}

/// Remove our cgroup parent directory in every hierarchy.
fn remove_cgroup_parent(parent: &str) {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = vec![Path::new("/sys/fs/cgroup").join(parent)];
    for e in entries.flatten() {
        dirs.push(e.path().join(parent));
    }
    for d in dirs {
        if d.is_dir() {
            // Children first (libcontainer removes the containers' own).
            if let Ok(children) = fs::read_dir(&d) {
                for c in children.flatten() {
                    if c.path().is_dir() {
                        let _ = fs::remove_dir(c.path());
                    }
                }
            }
            let _ = fs::remove_dir(&d);
        }
    }
}
