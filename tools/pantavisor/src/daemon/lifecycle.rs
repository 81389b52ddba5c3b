//! Containers' lives: bring-up in group order, exits and their recovery
//! policy, stops with a SIGKILL deadline, and the shutdown in reverse group
//! order.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use pvstate::model::StatusGoal;

use super::{Daemon, Stop};
use crate::config::Mode;
use crate::container::Status;
use crate::recovery::{self, Decision};
use crate::revision::{goal_reached, Advance};
use crate::xconnect;

impl Daemon {
    pub(super) fn advance_groups(&mut self) {
        if self.shutdown_group.is_some() {
            return;
        }
        while let Advance::Launch(members) = self.run.advance(Instant::now()) {
            for i in members {
                self.bring_up(i);
            }
        }
    }

    fn bring_up(&mut self, i: usize) {
        // Kept across a non-reboot transition: already where it should be.
        let c = &self.run.ctrs[i];
        if c.is_running()
            || (c.eff.status_goal == StatusGoal::Mounted && c.status == Status::Mounted)
        {
            return;
        }
        let links: Vec<xconnect::Link> = xconnect::links(&self.run.state)
            .into_iter()
            .filter(|l| l.consumer == c.name)
            .collect();
        if c.eff.status_goal != StatusGoal::Mounted && !self.xconnect_ready(i, &links) {
            return;
        }
        let env = self.rt.env(&self.run.state, &self.run.name);
        let c = &mut self.run.ctrs[i];
        let mesh = &mut self.mesh;
        let result = if c.eff.status_goal == StatusGoal::Mounted {
            c.mount(&env).map(|_| None)
        } else {
            // Each required service's socket is in place before the
            // consumer's program runs.
            c.start(&env, &mut |pid| {
                for l in &links {
                    let fd = xconnect::proxy::listen_in(pid, &l.target).map_err(|e| {
                        format!("xconnect: service \"{}\" at {}: {e}", l.name, l.target)
                    })?;
                    mesh.add(l.clone(), fd)
                        .map_err(|e| format!("xconnect: service \"{}\": {e}", l.name))?;
                }
                Ok(())
            })
            .map(Some)
        };
        match result {
            Ok(Some(pid)) => {
                let name = self.run.ctrs[i].name.clone();
                info!("{name}: started, pid {pid}");
                for l in &links {
                    info!(
                        "{name}: xconnect {} service \"{}\" of {} at {}",
                        l.kind.as_str(),
                        l.name,
                        l.provider,
                        l.target
                    );
                }
                self.mesh.set_pid(&name, Some(pid));
                self.watch_log(i);
            }
            Ok(None) => info!("{}: mounted", self.run.ctrs[i].name),
            Err(e) => {
                error!("{e}");
                self.run.ctrs[i].status = Status::Stopped;
                let name = self.run.ctrs[i].name.clone();
                self.mesh.drop_consumer(&name);
                if self.machine.container_exited(&name) {
                    return;
                }
                self.recover(i, Duration::ZERO, None);
            }
        }
    }

    /// Whether container `i` (consuming `links`) may start as far as
    /// xconnect goes: every required service's provider reached its status
    /// goal, or the wait (`xconnect.wait_timeout`) is over. While it waits
    /// the container is held, and /containers says why.
    fn xconnect_ready(&mut self, i: usize, links: &[xconnect::Link]) -> bool {
        let name = self.run.ctrs[i].name.clone();
        let waiting: Vec<String> = links
            .iter()
            .filter(|l| l.required)
            .filter_map(|l| {
                let p = self.run.index_of(&l.provider)?;
                let pc = &self.run.ctrs[p];
                (!goal_reached(pc)).then(|| {
                    format!(
                        "service \"{}\" of {} ({}, goal {})",
                        l.name,
                        l.provider,
                        pc.status.as_str(),
                        pc.eff.status_goal
                    )
                })
            })
            .collect();
        let now = Instant::now();
        let c = &mut self.run.ctrs[i];
        if waiting.is_empty() {
            if let Some((since, _)) = c.held.take() {
                info!(
                    "{name}: its required services are up after {:.1} s",
                    now.duration_since(since).as_secs_f64()
                );
            }
            return true;
        }
        let why = format!("waiting for {}", waiting.join(", "));
        match &c.held {
            None => {
                info!("{name}: held: {why}");
                c.held = Some((now, why));
                false
            }
            Some((since, _)) if now.duration_since(*since) >= self.rt.opts.xconnect_wait => {
                warn!(
                    "{name}: still {why} after {} s (xconnect.wait_timeout); starting it anyway",
                    self.rt.opts.xconnect_wait.as_secs()
                );
                c.held = None;
                true
            }
            Some((since, _)) => {
                let since = *since;
                c.held = Some((since, why));
                false
            }
        }
    }

    pub(super) fn on_signals(&mut self) {
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
        let Some(i) = self.run.ctrs.iter().position(|c| c.pid == Some(pid)) else {
            return; // an intermediate process of the runtime, or an orphan
        };
        self.on_log(i);
        let ran_for = self.run.ctrs[i]
            .started_at
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let c = &mut self.run.ctrs[i];
        c.exited(code);
        c.kill_at = None;
        self.mesh.set_pid(&c.name, None);
        self.mesh.drop_consumer(&c.name);
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
        if self.machine.container_exited(&name) {
            return;
        }
        self.recover(i, ran_for, Some(code));
    }

    /// Apply the container's recovery policy after it stopped (`exit`) or
    /// failed to start (None).
    fn recover(&mut self, i: usize, ran_for: Duration, exit: Option<i32>) {
        let c = &mut self.run.ctrs[i];
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

    pub(super) fn request_reboot(&mut self, why: String) {
        if self.rt.opts.mode == Mode::Embedded {
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

    pub(super) fn restart_now(&mut self, i: usize) {
        self.run.ctrs[i].restart_at = None;
        self.run.ctrs[i].restarts += 1;
        self.bring_up(i);
        self.advance_groups();
    }

    pub(super) fn on_timers(&mut self) {
        let now = Instant::now();
        for i in 0..self.run.ctrs.len() {
            let c = &mut self.run.ctrs[i];
            if c.kill_at.is_some_and(|t| now >= t) {
                c.kill_at = None;
                warn!("{}: did not stop in time, killing it", c.name);
                c.signal(Signal::SIGKILL);
            }
            if c.restart_at.is_some_and(|t| now >= t) && !c.is_running() {
                self.restart_now(i);
            } else if c.held.is_some()
                && !c.is_running()
                && !c.stopped_by_user
                && self.shutdown_group.is_none()
            {
                self.bring_up(i);
            }
        }
        self.advance_groups();
    }

    pub(super) fn stop_container(&mut self, i: usize) {
        let timeout = self.rt.opts.stop_timeout;
        let c = &mut self.run.ctrs[i];
        c.restart_at = None;
        c.held = None;
        if c.is_running() {
            c.status = Status::Stopping;
            c.signal(Signal::SIGTERM);
            c.kill_at = Some(Instant::now() + timeout);
        }
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.shutdown_group.is_none() {
            info!("stopping: containers in reverse group order");
            self.shutdown_group = Some(self.run.groups.len());
        }
    }

    /// Stop the groups from the last; true when every container is down.
    pub(super) fn advance_shutdown(&mut self) -> bool {
        loop {
            let Some(g) = self.shutdown_group else {
                return true;
            };
            if g < self.run.groups.len()
                && self.run.groups[g]
                    .members
                    .iter()
                    .any(|&i| self.run.ctrs[i].is_running())
            {
                return false;
            }
            if g == 0 {
                return true;
            }
            let next = g - 1;
            self.shutdown_group = Some(next);
            for i in self.run.groups[next].members.clone() {
                let c = &self.run.ctrs[i];
                if c.is_running() && c.status != Status::Stopping {
                    self.stop_container(i);
                }
            }
        }
    }

    pub(super) fn finish_shutdown(&mut self) {
        let env = self.rt.env(&self.run.state, &self.run.name);
        for c in self.run.ctrs.iter_mut() {
            c.unmount(&env);
        }
        crate::mounts::umount_all_below(&self.rt.opts.run_dir);
        remove_cgroup_parent(&self.rt.opts.cgroup_parent);
        if let Some(api) = &self.api {
            api.close();
        }
        info!("stopped");
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
