//! The update machine's unit tests: commit, rollback on goal timeout, a
//! crash while testing, the try latch at boot, UPDATED vs DONE, REBOOT_DEVICE.

use super::machine::*;
use crate::config::Mode;
use pvstate::State;
use std::time::{Duration, Instant};

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
        // DONE moves the rollback point; UPDATED leaves it and the
        // revision pending (the next boot tries it), as Pantavisor does.
        let first = match kind {
            Kind::Reboot => Action::Commit {
                rev: "locals/new".into(),
            },
            Kind::NonReboot => Action::Pending {
                rev: "locals/new".into(),
            },
        };
        assert_eq!(done[0], first);
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
        Action::Pending { .. }
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
    assert_eq!(sw[1], Action::Resume { rev: "0".into() });
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
    assert!(matches!(sw.last(), Some(Action::Reboot { why }) if why.contains("needs a reboot")));
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
