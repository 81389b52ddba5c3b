//! The daemon's event loop: one thread, one epoll over a signalfd (child
//! exits, SIGTERM/SIGINT), the control API (its own epoll, one fd here) and
//! the containers' log pipes; timers are the epoll timeout.
//!
//! - [`lifecycle`]: bring-up in group order, exits and recovery, shutdown;
//! - [`logs`]: the containers' output to storage;
//! - [`updates`]: carrying out the update machine's actions, installs, GC;
//! - [`control`]: the control API's calls, answered.

mod control;
mod lifecycle;
mod logs;
mod storage;
mod updates;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::api;
use crate::boot::{self, Choice};
use crate::bootenv::{BootEnv, Firmware};
use crate::config::Options;
use crate::error::{Error, Result};
use crate::revision::{Ids, Revision};
use crate::runtime::Runtime;
use crate::update::machine::{Machine, Snapshot};

/// Why [`Daemon::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM/SIGINT: every container stopped.
    Halt,
    /// Every container stopped for a reboot; `arg` for reboot(2)'s RESTART2
    /// (the Raspberry Pi firmware's `0 tryboot`), if the bootloader wants one.
    Reboot { why: String, arg: Option<String> },
}

const TOKEN_SIGNALS: u64 = 1;
const TOKEN_API: u64 = 2;
const TOKEN_XCONNECT: u64 = 3;
const TOKEN_LOG_BASE: u64 = 1_000;

pub struct Daemon {
    rt: Runtime,
    run: Revision,
    ids: Ids,
    machine: Machine,
    bootenv: BootEnv,
    epoll: Epoll,
    signals: SignalFd,
    /// Taken out while it serves (it calls back into the daemon).
    api: Option<api::Server>,
    /// Why the system should reboot; appengine mode reports it instead.
    reboot_requested: Option<String>,
    /// Set when the daemon stops in order to reboot (embedded mode).
    reboot_now: Option<Stop>,
    /// Index of the group being stopped during shutdown.
    shutdown_group: Option<usize>,
    log_sizes: HashMap<PathBuf, u64>,
    /// When storage's fill level is looked at next (`storage.gc.threshold`).
    gc_next: Option<Instant>,
    /// The hardware watchdog while it is armed (`watchdog.mode`).
    watchdog: Option<crate::watchdog::Watchdog>,
    /// The xconnect service mesh's listeners and connections.
    mesh: crate::xconnect::proxy::Mesh,
}

/// A pending try of `rev` that the bootloader or firmware gave up before
/// the daemon ran: ERROR with `why`, and nothing pending any more.
fn try_never_ran(rt: &Runtime, bootenv: &mut BootEnv, rev: &str, why: &str) -> Result<()> {
    error!("revision {rev}: {why}; rolled back");
    let _ = rt
        .storage
        .set_progress(rev, "ERROR", &format!("Rolled back: {why}"), 0);
    bootenv.clear_try()
}

impl Daemon {
    pub fn new(opts: Options) -> Result<Self> {
        let mut rt = Runtime::new(opts)?;
        let mut bootenv = BootEnv::open(&rt.opts.bootloader, rt.storage.root())?;
        // Raspberry Pi tryboot: did the firmware boot the partition a
        // pending try's BSP went to?
        if bootenv.stages_bsp() && rt.opts.mode == crate::config::Mode::Embedded {
            match bootenv.firmware_check(crate::rpi::running_partition())? {
                Firmware::TryFailed { rev, why } => try_never_ran(&rt, &mut bootenv, &rev, &why)?,
                Firmware::CommitFinished(rev) => {
                    info!("revision {rev}: its commit was cut by a power loss after autoboot.txt; finished");
                    let _ = rt.storage.set_progress(
                        &rev,
                        "DONE",
                        "Update finished, revision set as rollback point",
                        100,
                    );
                }
                Firmware::Fine => {}
            }
        }
        let choose = |b: &BootEnv| boot::choose(&b.rev, b.try_rev.as_deref(), b.trying.as_deref());
        let mut choice = choose(&bootenv);
        // A bootloader that says whose kernel it booted (our U-Boot script):
        // a try it gave up before we ran is rolled back here.
        if rt.opts.mode == crate::config::Mode::Embedded {
            let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
            if let Some(why) = boot::try_not_booted(&choice, boot::bootloader_rev(&cmdline)) {
                try_never_ran(&rt, &mut bootenv, choice.rev(), &why)?;
                choice = choose(&bootenv);
            }
        }
        let mut trying = None;
        match &choice {
            Choice::TriedBefore { failed, .. } => {
                let _ = rt.storage.set_progress(
                    failed,
                    "ERROR",
                    "Revision was tried and not committed; rolled back",
                    0,
                );
                bootenv.clear_try()?;
            }
            Choice::Try { rev, .. } => {
                // The latch, before anything of it runs.
                bootenv.set_try(rev, true)?;
                trying = Some(rev.clone());
            }
            Choice::Committed(_) => {}
        }
        // The revision about to boot is checked (signatures, objects, their
        // hashes with boot.verify_objects); one that fails is marked ERROR
        // and the next candidate boots: the committed revision, then the
        // newest that reached DONE, then factory revision 0.
        let mut chosen = None;
        for rev in boot::candidates(&choice, || done_newest_first(&rt)) {
            match updates::check(&rt, &rev, rt.opts.boot_verify_objects) {
                Ok(state) => {
                    chosen = Some((rev, state));
                    break;
                }
                Err(why) => {
                    let msg = format!("Refused at boot: {why}");
                    error!("revision {rev}: {msg}");
                    let _ = rt.storage.set_progress(&rev, "ERROR", &msg, 0);
                    if trying.as_deref() == Some(rev.as_str()) {
                        bootenv.clear_try()?;
                        trying = None;
                    }
                }
            }
        }
        let Some((rev, state)) = chosen else {
            return Err(Error::Other(
                "no revision on storage passes its check at boot".into(),
            ));
        };
        if rev != bootenv.rev && trying.is_none() {
            warn!("revision {}: refused; running {rev} instead", bootenv.rev);
        }
        // A revision installed before boot links were made gets them now.
        if let Err(e) = rt.storage.write_boot_links(&rev, &state) {
            warn!("revision {rev}: boot links: {e}");
        }
        crate::log::to_file(
            &rt.storage
                .log_dir(&rev, "pantavisor")
                .join("pantavisor.log"),
            rt.opts.log_max_bytes,
        );
        info!(
            "revision {rev}: {} containers ({} mode)",
            state.containers().len(),
            rt.opts.mode.as_str()
        );
        // The OEM configuration level, from the revision that runs.
        if let Some((key, text)) = oem_config(&rt, &state) {
            match rt.opts.with_oem(&text) {
                Ok(o) => {
                    info!("revision {rev}: OEM configuration {key} applied");
                    rt.opts = o;
                }
                Err(e) => error!("revision {rev}: OEM configuration {key}: {e}; not applied"),
            }
        }
        for r in &rt.opts.settings.reports {
            warn!(
                "config: {} ({}): {}; not used",
                r.key,
                r.level.as_str(),
                r.why
            );
        }
        // Booted as it is (there may be nothing better to run), but nothing
        // it asks for goes unsaid: an update with these members is WONTGO.
        for what in crate::support::unsupported(&state) {
            error!("revision {rev}: not supported by this daemon, not acted on: {what}");
        }
        let mut ids = Ids::default();
        let run = Revision::layout(&rev, state, &rt.objects, &mut Vec::new(), &mut ids)?;
        // SIGCHLD, SIGTERM and SIGINT arrive through the signalfd only.
        let mut mask = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| Error::sys("block signals", e))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::sys("signalfd", e))?;
        crate::sys::become_subreaper();
        std::fs::create_dir_all(&rt.opts.run_dir).map_err(|e| Error::io(&rt.opts.run_dir, e))?;
        let api = api::Server::bind(&rt.opts)?;
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::sys("epoll", e))?;
        let mesh =
            crate::xconnect::proxy::Mesh::new().map_err(|e| Error::io("xconnect epoll", e))?;
        for (fd, token) in [
            (signals.as_fd(), TOKEN_SIGNALS),
            (api.as_fd(), TOKEN_API),
            (mesh.as_fd(), TOKEN_XCONNECT),
        ] {
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .map_err(|e| Error::sys("epoll add", e))?;
        }
        let mut machine = Machine::new(rt.opts.mode, rt.opts.goals_timeout, rt.opts.commit_delay);
        if let Some(t) = &trying {
            machine.after_boot(t, &bootenv.rev, Instant::now());
        }
        let mut daemon = Daemon {
            rt,
            run,
            ids,
            machine,
            bootenv,
            epoll,
            signals,
            api: Some(api),
            reboot_requested: None,
            reboot_now: None,
            shutdown_group: None,
            log_sizes: HashMap::new(),
            gc_next: None,
            watchdog: None,
            mesh,
        };
        // The committed revision sets the anti-rollback floor at least.
        let committed = daemon.bootenv.rev.clone();
        daemon.raise_floor(&committed);
        Ok(daemon)
    }

    /// Open the watchdog (`watchdog.device`, `watchdog.timeout`); one that
    /// cannot be opened is reported and the daemon goes on without it.
    fn arm_watchdog(&mut self) {
        let o = &self.rt.opts;
        match crate::watchdog::Watchdog::open(&o.watchdog_device, o.watchdog_timeout) {
            Ok(w) => {
                info!(
                    "watchdog: {} armed, {} s",
                    o.watchdog_device.display(),
                    w.timeout
                );
                self.watchdog = Some(w);
            }
            Err(e) => error!("watchdog: {e}; running without it"),
        }
    }

    /// The revision chosen to run (it passed its check at boot) and its state.
    pub fn revision(&self) -> (&str, &pvstate::State) {
        (&self.run.name, &self.run.state)
    }

    /// Run until stopped by SIGTERM/SIGINT, or (embedded mode) until every
    /// container stopped for a reboot.
    pub fn run(mut self) -> Result<Stop> {
        use crate::watchdog::Mode as Wdt;
        if matches!(self.rt.opts.watchdog, Wdt::Always | Wdt::Startup) {
            self.arm_watchdog();
        }
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
                    TOKEN_XCONNECT => self.mesh.poll(),
                    TOKEN_API => {
                        if let Some(mut api) = self.api.take() {
                            api.poll(&mut self);
                            self.api = Some(api);
                        }
                    }
                    t => {
                        if let Some(i) = self.run.by_uid(t - TOKEN_LOG_BASE) {
                            self.on_log(i)
                        }
                    }
                }
            }
            self.on_timers();
            if self.shutdown_group.is_none() {
                let was_busy = self.machine.busy();
                self.advance_update();
                if was_busy && !self.machine.busy() {
                    // An update ended (committed or rolled back): what it
                    // left behind goes.
                    let _ = self.collect("update finished");
                }
                self.storage_tick();
            }
            if let Some(w) = self.watchdog.as_mut() {
                w.ping();
            }
            if self.rt.opts.watchdog == Wdt::Startup
                && self.run.all_up()
                && self.shutdown_group.is_none()
            {
                if let Some(w) = self.watchdog.take() {
                    info!("watchdog: the revision is up; stopped (watchdog.mode=startup)");
                    w.stop();
                }
            }
            if self.rt.opts.watchdog == Wdt::Shutdown
                && self.shutdown_group.is_some()
                && self.watchdog.is_none()
            {
                self.arm_watchdog();
            }
            if self.shutdown_group.is_some() && self.advance_shutdown() {
                self.finish_shutdown();
                let stop = self.reboot_now.take().unwrap_or(Stop::Halt);
                // A clean power-off stops the watchdog; a reboot leaves it
                // running until the reset.
                if stop == Stop::Halt {
                    if let Some(w) = self.watchdog.take() {
                        info!("watchdog: stopped for the power-off");
                        w.stop();
                    }
                }
                return Ok(stop);
            }
        }
    }

    fn next_timeout(&self) -> u16 {
        let now = Instant::now();
        let next = self
            .run
            .ctrs
            .iter()
            .flat_map(|c| [c.restart_at, c.kill_at])
            .chain([self.run.deadline(), self.machine.deadline(now)])
            .flatten()
            .min();
        match next {
            None => 1000,
            Some(t) => t.saturating_duration_since(now).as_millis().min(1000) as u16,
        }
    }

    /// What the update machine sees of the running revision.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            running: self.run.running(),
            all_up: self.run.all_up(),
            stable: self.run.stable(),
            late: self.run.late(),
        }
    }

    /// Move the update on; called every loop turn.
    fn advance_update(&mut self) {
        if !self.machine.busy() {
            return;
        }
        let actions = self.machine.poll(Instant::now(), &self.snapshot());
        if let Err(e) = self.apply(actions) {
            error!("update: {e}");
        }
    }

    fn log_token(uid: u64) -> u64 {
        TOKEN_LOG_BASE + uid
    }
}

/// The revisions that reached DONE, newest first (by their progress file).
fn done_newest_first(rt: &Runtime) -> Vec<String> {
    let mut done: Vec<(std::time::SystemTime, String)> = storage::trails(&rt.storage)
        .into_iter()
        .filter(|t| t.status.as_deref() == Some("DONE"))
        .map(|t| (t.when, t.rev))
        .collect();
    done.sort_by(|a, b| b.cmp(a));
    done.into_iter().map(|(_, r)| r).collect()
}

/// The revision's OEM configuration (`<oem.name>/<policy or default>.config`,
/// Pantavisor's OEM level), when `oem.name` is set: its key and text.
fn oem_config(rt: &Runtime, state: &pvstate::State) -> Option<(String, String)> {
    let oem = rt.opts.settings.get("oem.name");
    if oem.is_empty() {
        return None;
    }
    let policy = match rt.opts.settings.get("policy") {
        "" => "default",
        p => p,
    };
    let key = format!("{oem}/{policy}.config");
    let Some(id) = state.get(&key).and_then(pvstate::Entry::object_id) else {
        info!("no OEM configuration {key} in this revision");
        return None;
    };
    match std::fs::read_to_string(rt.objects.path(id)) {
        Ok(text) => Some((key, text)),
        Err(e) => {
            error!("OEM configuration {key}: {e}");
            None
        }
    }
}
