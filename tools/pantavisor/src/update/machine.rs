//! The update state machine, pure: it is told what happens (a run is
//! requested, the running revision's snapshot, a container exited) and
//! answers with [`Action`]s for the daemon to carry out, in order. No I/O,
//! no clock of its own: tested without root, like `recovery.rs`.
//!
//! ```text
//! begin ──> Stopping ──(all stopped)──> Switch ──> Testing ──(goals + commit delay)──> commit
//!              │                                     │
//!              └─(embedded reboot)─> Reboot          └─(timeout, exit)──> ERROR ──> rollback
//! ```
//! The boot handshake is written first (the latch), so a daemon killed at
//! any moment comes back on a complete revision and never tries one twice.

use std::time::{Duration, Instant};

use pvstate::State;

use crate::config::Mode;

/// How a revision replaces the running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only the changed containers stop and start.
    NonReboot,
    /// Everything stops; embedded mode reboots, appengine mode brings the
    /// revision up from its first group.
    Reboot,
}

/// Why the transition happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// LOCAL_RUN: tested, then committed (the new rollback point).
    Run,
    /// TRY_ONCE: tested, never committed; the latch stays.
    TryOnce,
    /// Back to the revision a failed one replaced: not tested.
    Rollback,
    /// REBOOT_DEVICE: the running revision again, from scratch.
    Restart,
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write the boot handshake: `pv_try = rev`, `pv_trying = rev` when
    /// `latch` (the try has begun), else empty (a reboot begins it).
    Latch { rev: String, latch: bool },
    /// `pv_rev = rev`, `pv_try`/`pv_trying` cleared: the rollback point moves.
    Commit { rev: String },
    /// `pv_try`/`pv_trying` cleared: the committed revision is what boots.
    Settle,
    /// Record a revision's progress.
    Progress {
        rev: String,
        status: &'static str,
        msg: String,
        pct: u32,
    },
    /// Stop these containers (no automatic restart).
    Stop(Vec<String>),
    /// Every container to stop has stopped: put `next` in place of the
    /// running revision (keep the others running) and bring it up.
    Switch {
        rev: String,
        next: Box<State>,
        stop: Vec<String>,
    },
    /// Reboot the device (embedded mode).
    Reboot { why: String },
    /// Go back to `to` (load its state and [`Machine::begin`] a rollback).
    RollBack { to: String, failed: String },
}

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
    pub kind: Kind,
    pub purpose: Purpose,
    pub phase: Phase,
    /// Why testing failed, noticed between polls.
    pub failed: Option<String>,
    pub started: Instant,
}

/// What the machine sees of the running revision at a poll.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Containers still running.
    pub running: Vec<String>,
    /// Every group through and every container at its goal.
    pub all_up: bool,
    /// Every container ran its auto_recovery's stable_timeout.
    pub stable: bool,
    /// Containers not at their goal.
    pub late: Vec<String>,
}

/// A transition request: the planned change from the running revision.
#[derive(Debug)]
pub struct Request {
    pub rev: String,
    pub from: String,
    pub kind: Kind,
    pub purpose: Purpose,
    pub next: State,
    /// The containers to stop (all for a reboot; the removed and changed ones else).
    pub stop: Vec<String>,
}

/// The machine refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy;

pub struct Machine {
    pub mode: Mode,
    pub goals_timeout: Duration,
    pub commit_delay: Duration,
    update: Option<Update>,
}

impl Machine {
    pub fn new(mode: Mode, goals_timeout: Duration, commit_delay: Duration) -> Self {
        Machine {
            mode,
            goals_timeout,
            commit_delay,
            update: None,
        }
    }

    pub fn current(&self) -> Option<&Update> {
        self.update.as_ref()
    }

    pub fn busy(&self) -> bool {
        self.update.is_some()
    }

    /// The daemon came up on `rev` as a try (the boot choice said so): test it.
    pub fn after_boot(&mut self, rev: &str, from: &str, now: Instant) {
        self.update = Some(Update {
            rev: rev.into(),
            from: from.into(),
            kind: Kind::Reboot,
            purpose: Purpose::Run,
            phase: Phase::Testing {
                deadline: now + self.goals_timeout,
                commit_at: None,
            },
            failed: None,
            started: now,
        });
    }

    /// Begin a transition.
    pub fn begin(&mut self, req: Request, now: Instant) -> Result<Vec<Action>, Busy> {
        if self.update.is_some() {
            return Err(Busy);
        }
        let mut out = Vec::new();
        match req.purpose {
            Purpose::Run | Purpose::TryOnce => {
                // The latch first. A real reboot leaves the try pending: the
                // next boot begins it.
                let reboots = req.kind == Kind::Reboot && self.mode == Mode::Embedded;
                out.push(Action::Latch {
                    rev: req.rev.clone(),
                    latch: !reboots,
                });
                out.push(Action::Progress {
                    rev: req.rev.clone(),
                    status: "INPROGRESS",
                    msg: match req.kind {
                        Kind::Reboot => "Rebooting".into(),
                        Kind::NonReboot => "Transitioning to new revision without rebooting".into(),
                    },
                    pct: 20,
                });
            }
            Purpose::Rollback | Purpose::Restart => {}
        }
        out.push(Action::Stop(req.stop.clone()));
        self.update = Some(Update {
            rev: req.rev,
            from: req.from,
            kind: req.kind,
            purpose: req.purpose,
            phase: Phase::Stopping {
                next: Box::new(req.next),
                stop: req.stop,
            },
            failed: None,
            started: now,
        });
        Ok(out)
    }

    /// A container stopped on its own: while a revision is tested, that
    /// fails it (true: the exit is the update's business, not recovery's).
    pub fn container_exited(&mut self, name: &str) -> bool {
        match self.update.as_mut() {
            Some(u)
                if matches!(u.purpose, Purpose::Run | Purpose::TryOnce)
                    && matches!(u.phase, Phase::Testing { .. }) =>
            {
                u.failed
                    .get_or_insert(format!("container {name} stopped during TESTING"));
                true
            }
            _ => false,
        }
    }

    /// The daemon could not carry out the first action (the handshake):
    /// the update ends before anything stopped.
    pub fn abort(&mut self) {
        self.update = None;
    }

    /// The daemon could not put the revision in place (after a Switch).
    pub fn switch_failed(&mut self, why: &str) -> Vec<Action> {
        self.fail(why)
    }

    /// When the machine next needs a poll without an event.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        match &self.update.as_ref()?.phase {
            Phase::Testing {
                deadline,
                commit_at,
            } => Some(commit_at.map_or(*deadline, |c| c.min(*deadline))),
            Phase::Stopping { .. } => Some(now + Duration::from_millis(50)),
        }
    }

    /// Move on, given the running revision's snapshot.
    pub fn poll(&mut self, now: Instant, snap: &Snapshot) -> Vec<Action> {
        let Some(update) = self.update.as_mut() else {
            return Vec::new();
        };
        match &mut update.phase {
            Phase::Stopping { stop, .. } => {
                if snap.running.iter().any(|r| stop.contains(r)) {
                    return Vec::new();
                }
                self.switch(now)
            }
            Phase::Testing {
                deadline,
                commit_at,
            } => {
                if let Some(why) = update.failed.clone() {
                    return self.fail(&why);
                }
                if snap.all_up {
                    let at = *commit_at.get_or_insert(now + self.commit_delay);
                    if now >= at && snap.stable {
                        return self.commit();
                    }
                    Vec::new()
                } else if now >= *deadline {
                    let why = format!("Status goal not reached: {}", snap.late.join(", "));
                    self.fail(&why)
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Every container to stop has stopped.
    fn switch(&mut self, now: Instant) -> Vec<Action> {
        let Some(mut u) = self.update.take() else {
            return Vec::new();
        };
        let Phase::Stopping { next, stop } = std::mem::replace(
            &mut u.phase,
            Phase::Testing {
                deadline: now + self.goals_timeout,
                commit_at: None,
            },
        ) else {
            return Vec::new();
        };
        if u.kind == Kind::Reboot && self.mode == Mode::Embedded {
            // Every container is down; the boot environment already names
            // the revision to try (or only the committed one): the
            // bootloader brings it up.
            return match u.purpose {
                Purpose::Run | Purpose::TryOnce => vec![
                    Action::Progress {
                        rev: u.rev.clone(),
                        status: "INPROGRESS",
                        msg: "Rebooting".into(),
                        pct: 50,
                    },
                    Action::Reboot {
                        why: format!("revision {} needs a reboot", u.rev),
                    },
                ],
                Purpose::Rollback => vec![Action::Reboot {
                    why: format!("rolling back to {} needs a reboot", u.rev),
                }],
                Purpose::Restart => vec![Action::Reboot {
                    why: "REBOOT_DEVICE requested".into(),
                }],
            };
        }
        let mut out = vec![Action::Switch {
            rev: u.rev.clone(),
            next,
            stop,
        }];
        match u.purpose {
            Purpose::Run | Purpose::TryOnce => {
                out.push(Action::Progress {
                    rev: u.rev.clone(),
                    status: "TESTING",
                    msg: "Awaiting to see if update is stable".into(),
                    pct: 60,
                });
                self.update = Some(u);
            }
            Purpose::Rollback => out.push(Action::Settle),
            Purpose::Restart => {}
        }
        out
    }

    fn commit(&mut self) -> Vec<Action> {
        let Some(u) = self.update.take() else {
            return Vec::new();
        };
        let took = u.started.elapsed().as_secs_f64();
        match u.purpose {
            Purpose::TryOnce => {
                // The latch stays, so the next start goes back.
                info!("revision {}: tried once, not committed", u.rev);
                vec![Action::Progress {
                    rev: u.rev,
                    status: "UPDATED",
                    msg: "Tried once; not committed".into(),
                    pct: 100,
                }]
            }
            _ => {
                let (status, msg) = match u.kind {
                    Kind::Reboot => ("DONE", "Update finished, revision set as rollback point"),
                    Kind::NonReboot => (
                        "UPDATED",
                        "Update finished, revision not set as rollback point",
                    ),
                };
                info!("revision {}: {status} after {took:.2} s", u.rev);
                vec![
                    Action::Commit { rev: u.rev.clone() },
                    Action::Progress {
                        rev: u.rev,
                        status,
                        msg: msg.into(),
                        pct: 100,
                    },
                ]
            }
        }
    }

    fn fail(&mut self, why: &str) -> Vec<Action> {
        let Some(u) = self.update.take() else {
            return Vec::new();
        };
        error!(
            "revision {}: ERROR: {why}; rolling back to {}",
            u.rev, u.from
        );
        vec![
            Action::Progress {
                rev: u.rev.clone(),
                status: "ERROR",
                msg: why.into(),
                pct: 100,
            },
            Action::Settle,
            Action::RollBack {
                to: u.from,
                failed: u.rev,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOALS: Duration = Duration::from_secs(60);
    const DELAY: Duration = Duration::from_secs(5);

    fn machine(mode: Mode) -> Machine {
        Machine::new(mode, GOALS, DELAY)
    }

    fn request(kind: Kind, purpose: Purpose, stop: &[&str]) -> Request {
        Request {
            rev: "locals/new".into(),
            from: "0".into(),
            kind,
            purpose,
            next: State::new(),
            stop: stop.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn up() -> Snapshot {
        Snapshot {
            all_up: true,
            stable: true,
            ..Default::default()
        }
    }

    fn statuses(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Progress { status, .. } => Some(*status),
                _ => None,
            })
            .collect()
    }

    /// Run a request through stopping and switching; the actions of the switch.
    fn to_testing(m: &mut Machine, req: Request, t0: Instant) -> Vec<Action> {
        // While a container to stop still runs: nothing yet.
        let running = Snapshot {
            running: req.stop.clone(),
            ..Default::default()
        };
        let first = m.begin(req, t0).unwrap();
        assert!(matches!(first.last(), Some(Action::Stop(_))));
        if !running.running.is_empty() {
            assert!(m.poll(t0, &running).is_empty());
        }
        m.poll(t0, &Snapshot::default())
    }

    #[test]
    fn commit_after_goals_and_delay() {
        for (kind, status) in [(Kind::Reboot, "DONE"), (Kind::NonReboot, "UPDATED")] {
            let mut m = machine(Mode::Appengine);
            let t0 = Instant::now();
            let first = m.begin(request(kind, Purpose::Run, &["app"]), t0).unwrap();
            // The latch comes before anything stops.
            assert_eq!(
                first[0],
                Action::Latch {
                    rev: "locals/new".into(),
                    latch: true
                }
            );
            assert_eq!(statuses(&first), ["INPROGRESS"]);
            let sw = m.poll(t0, &Snapshot::default());
            assert!(matches!(&sw[0], Action::Switch { rev, .. } if rev == "locals/new"));
            assert_eq!(statuses(&sw), ["TESTING"]);
            // Goals reached: the commit waits for the delay.
            assert!(m.poll(t0, &up()).is_empty());
            assert!(m.poll(t0 + DELAY / 2, &up()).is_empty());
            let done = m.poll(t0 + DELAY, &up());
            assert_eq!(
                done[0],
                Action::Commit {
                    rev: "locals/new".into()
                }
            );
            assert_eq!(statuses(&done), [status], "{kind:?}");
            assert!(!m.busy());
        }
    }

    #[test]
    fn unstable_containers_hold_the_commit() {
        let mut m = machine(Mode::Appengine);
        let t0 = Instant::now();
        to_testing(&mut m, request(Kind::NonReboot, Purpose::Run, &["app"]), t0);
        let unstable = Snapshot {
            stable: false,
            ..up()
        };
        assert!(m.poll(t0, &unstable).is_empty());
        assert!(m.poll(t0 + DELAY * 3, &unstable).is_empty());
        assert!(matches!(
            m.poll(t0 + DELAY * 3, &up())[0],
            Action::Commit { .. }
        ));
    }

    #[test]
    fn goal_timeout_rolls_back() {
        let mut m = machine(Mode::Appengine);
        let t0 = Instant::now();
        to_testing(&mut m, request(Kind::NonReboot, Purpose::Run, &["app"]), t0);
        let late = Snapshot {
            late: vec!["app".into()],
            ..Default::default()
        };
        assert!(m
            .poll(t0 + GOALS - Duration::from_millis(1), &late)
            .is_empty());
        let failed = m.poll(t0 + GOALS, &late);
        assert_eq!(
            failed,
            vec![
                Action::Progress {
                    rev: "locals/new".into(),
                    status: "ERROR",
                    msg: "Status goal not reached: app".into(),
                    pct: 100
                },
                Action::Settle,
                Action::RollBack {
                    to: "0".into(),
                    failed: "locals/new".into()
                }
            ]
        );
        // The rollback: stops, switches back, settles; not tested, not committed.
        let mut back = request(Kind::NonReboot, Purpose::Rollback, &["app"]);
        back.rev = "0".into();
        back.from = "locals/new".into();
        let sw = to_testing(&mut m, back, t0 + GOALS);
        assert!(matches!(&sw[0], Action::Switch { rev, .. } if rev == "0"));
        assert_eq!(sw[1], Action::Settle);
        assert!(statuses(&sw).is_empty());
        assert!(!m.busy());
    }

    #[test]
    fn a_crash_while_testing_rolls_back() {
        let mut m = machine(Mode::Appengine);
        let t0 = Instant::now();
        // Before TESTING, an exit is recovery's business.
        m.begin(request(Kind::NonReboot, Purpose::Run, &["app"]), t0)
            .unwrap();
        assert!(!m.container_exited("app"));
        m.poll(t0, &Snapshot::default());
        // In TESTING, the first exit fails the revision, even once all is up.
        assert!(m.container_exited("app"));
        assert!(m.container_exited("other"));
        let failed = m.poll(t0 + DELAY * 2, &up());
        assert!(matches!(
            &failed[0],
            Action::Progress { status: "ERROR", msg, .. } if msg == "container app stopped during TESTING"
        ));
        assert!(matches!(failed.last(), Some(Action::RollBack { to, .. }) if to == "0"));
        // A rollback in progress does not fail again on exits.
        let mut back = request(Kind::NonReboot, Purpose::Rollback, &[]);
        back.rev = "0".into();
        m.begin(back, t0).unwrap();
        assert!(!m.container_exited("app"));
    }

    #[test]
    fn try_once_is_never_committed() {
        let mut m = machine(Mode::Appengine);
        let t0 = Instant::now();
        to_testing(&mut m, request(Kind::NonReboot, Purpose::TryOnce, &[]), t0);
        assert!(m.poll(t0, &up()).is_empty());
        let done = m.poll(t0 + DELAY, &up());
        assert_eq!(statuses(&done), ["UPDATED"]);
        assert!(!done.iter().any(|a| matches!(a, Action::Commit { .. })));
        // Nor settled: the latch stays, so the next start goes back.
        assert!(!done.iter().any(|a| matches!(a, Action::Settle)));
    }

    #[test]
    fn embedded_reboot_leaves_the_try_to_the_next_boot() {
        let mut m = machine(Mode::Embedded);
        let t0 = Instant::now();
        let first = m
            .begin(request(Kind::Reboot, Purpose::Run, &["app"]), t0)
            .unwrap();
        assert_eq!(
            first[0],
            Action::Latch {
                rev: "locals/new".into(),
                latch: false
            }
        );
        let sw = m.poll(t0, &Snapshot::default());
        assert!(
            matches!(sw.last(), Some(Action::Reboot { why }) if why.contains("needs a reboot"))
        );
        assert!(!sw.iter().any(|a| matches!(a, Action::Switch { .. })));
        // A non-reboot update in embedded mode switches in place.
        let mut m = machine(Mode::Embedded);
        let sw = to_testing(&mut m, request(Kind::NonReboot, Purpose::Run, &[]), t0);
        assert!(matches!(sw[0], Action::Switch { .. }));
    }

    /// Defect: REBOOT_DEVICE in embedded mode was logged as a rollback.
    #[test]
    fn reboot_device_is_a_reboot_not_a_rollback() {
        let mut m = machine(Mode::Embedded);
        let t0 = Instant::now();
        let mut req = request(Kind::Reboot, Purpose::Restart, &["app"]);
        req.rev = "0".into();
        let first = m.begin(req, t0).unwrap();
        // The handshake is not touched, nothing is reported as progress.
        assert_eq!(first, vec![Action::Stop(vec!["app".into()])]);
        let sw = m.poll(t0, &Snapshot::default());
        assert_eq!(
            sw,
            vec![Action::Reboot {
                why: "REBOOT_DEVICE requested".into()
            }]
        );
        // Appengine: the revision comes up again in place, untested.
        let mut m = machine(Mode::Appengine);
        let mut req = request(Kind::Reboot, Purpose::Restart, &["app"]);
        req.rev = "0".into();
        m.begin(req, t0).unwrap();
        let sw = m.poll(t0, &Snapshot::default());
        assert_eq!(sw.len(), 1);
        assert!(matches!(sw[0], Action::Switch { .. }));
        assert!(!m.busy());
    }

    #[test]
    fn one_update_at_a_time() {
        let mut m = machine(Mode::Appengine);
        let t0 = Instant::now();
        m.begin(request(Kind::NonReboot, Purpose::Run, &[]), t0)
            .unwrap();
        assert_eq!(
            m.begin(request(Kind::NonReboot, Purpose::Run, &[]), t0),
            Err(Busy)
        );
    }

    /// The try latch at boot: the daemon came up on pv_try; it is tested
    /// like any update and committed as DONE (a reboot transition).
    #[test]
    fn try_at_boot_is_tested_then_done() {
        let mut m = machine(Mode::Embedded);
        let t0 = Instant::now();
        m.after_boot("5", "4", t0);
        assert_eq!(m.deadline(t0), Some(t0 + GOALS));
        let done = m.poll(t0 + DELAY, &up());
        assert!(
            done.is_empty(),
            "the commit delay starts when goals are reached"
        );
        let done = m.poll(t0 + DELAY * 2, &up());
        assert_eq!(done[0], Action::Commit { rev: "5".into() });
        assert_eq!(statuses(&done), ["DONE"]);
        // Or it misses its goals and goes back to 4.
        let mut m = machine(Mode::Embedded);
        m.after_boot("5", "4", t0);
        let failed = m.poll(t0 + GOALS, &Snapshot::default());
        assert!(matches!(failed.last(), Some(Action::RollBack { to, .. }) if to == "4"));
    }

    #[test]
    fn a_failed_switch_rolls_back() {
        let mut m = machine(Mode::Appengine);
        let t0 = Instant::now();
        to_testing(&mut m, request(Kind::NonReboot, Purpose::Run, &[]), t0);
        let failed = m.switch_failed("container x: its group does not exist");
        assert!(matches!(failed.last(), Some(Action::RollBack { .. })));
        assert!(!m.busy());
    }
}
