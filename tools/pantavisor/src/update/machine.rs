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
    /// `pv_try = rev` with the latch cleared: the revision runs but is not
    /// the rollback point; the next boot tries it (and commits it as DONE
    /// when it reaches its goals), as Pantavisor does after UPDATED.
    Pending { rev: String },
    /// Back on `rev` after a rollback: pending again if it is not the
    /// committed revision, else [`Action::Settle`].
    Resume { rev: String },
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
            Purpose::Rollback => out.push(Action::Resume { rev: u.rev.clone() }),
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
                // DONE moves the rollback point; UPDATED (a non-reboot
                // transition) does not: the revision stays pending until a
                // boot tries it, as Pantavisor's pv_update_set_final does.
                let (first, status, msg) = match u.kind {
                    Kind::Reboot => (
                        Action::Commit { rev: u.rev.clone() },
                        "DONE",
                        "Update finished, revision set as rollback point",
                    ),
                    Kind::NonReboot => (
                        Action::Pending { rev: u.rev.clone() },
                        "UPDATED",
                        "Update finished, revision not set as rollback point",
                    ),
                };
                info!("revision {}: {status} after {took:.2} s", u.rev);
                vec![
                    first,
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
