//! What to do when a container has stopped on its own: Pantavisor's
//! `auto_recovery` rules, as a pure function of the container's settings and
//! history so they can be checked case by case.

use std::time::Duration;

use pvstate::model::{AutoRecovery, RecoveryPolicy, RestartPolicy};
use pvstate::parse_duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart { after: Duration },
    /// Leave it stopped; the reason is for the log.
    LeaveStopped(String),
    /// The system should reboot; the reason is for the log.
    Reboot(String),
}

/// Decide for a container that exited with `exit` (None: it failed to
/// start) after running `ran_for`, having been restarted `retries` times since
/// the last reset. Returns the decision and the new retry count.
pub fn decide(
    ar: Option<&AutoRecovery>,
    restart_policy: RestartPolicy,
    retries: u32,
    ran_for: Duration,
    exit: Option<i32>,
) -> (Decision, u32) {
    let policy = ar.and_then(|a| a.policy).unwrap_or(RecoveryPolicy::No);
    let what = match exit {
        Some(code) => format!("exited with status {code}"),
        None => "failed to start".to_string(),
    };
    let Some(ar) = ar.filter(|_| policy != RecoveryPolicy::No) else {
        return match restart_policy {
            RestartPolicy::System => (
                Decision::Reboot(format!("restart_policy system, {what}")),
                retries,
            ),
            RestartPolicy::Container => (
                Decision::LeaveStopped(format!("{what}; no auto_recovery")),
                retries,
            ),
        };
    };
    if policy == RecoveryPolicy::OnFailure && exit == Some(0) {
        return (
            Decision::LeaveStopped("exited cleanly; on-failure does not restart it".into()),
            retries,
        );
    }
    let window = ar.reset_window.unwrap_or(0);
    let retries = if window > 0 && ran_for >= Duration::from_secs(window) {
        0
    } else {
        retries
    };
    let max = ar.max_retries.unwrap_or(0);
    if max == 0 || u64::from(retries) < max {
        let delay = ar.retry_delay.unwrap_or(0) as f64
            * ar.backoff_factor.unwrap_or(1.0).powi(retries as i32);
        return (
            Decision::Restart {
                after: Duration::from_secs_f64(delay),
            },
            retries + 1,
        );
    }
    match ar.backoff_policy.as_deref().unwrap_or("reboot") {
        "never" => (
            Decision::LeaveStopped(format!("{what}; {max} retries used (backoff_policy never)")),
            retries,
        ),
        "reboot" => (
            Decision::Reboot(format!("{what} after {max} retries")),
            retries,
        ),
        d => {
            // Validation refuses anything else, so this always parses.
            let secs = parse_duration(d).unwrap_or(60);
            (
                Decision::Restart {
                    after: Duration::from_secs(secs),
                },
                0,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar(
        policy: RecoveryPolicy,
        max: u64,
        delay: u64,
        factor: f64,
        backoff: &str,
    ) -> AutoRecovery {
        AutoRecovery {
            policy: Some(policy),
            max_retries: Some(max),
            retry_delay: Some(delay),
            backoff_factor: Some(factor),
            backoff_policy: Some(backoff.into()),
            ..Default::default()
        }
    }

    fn secs(d: &Decision) -> f64 {
        match d {
            Decision::Restart { after } => after.as_secs_f64(),
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_then_gives_up_per_policy() {
        let a = ar(RecoveryPolicy::Always, 4, 1, 2.0, "never");
        let mut retries = 0;
        let mut delays = Vec::new();
        loop {
            let (d, r) = decide(
                Some(&a),
                RestartPolicy::Container,
                retries,
                Duration::from_secs(1),
                Some(1),
            );
            retries = r;
            match d {
                Decision::Restart { after } => delays.push(after.as_secs_f64()),
                Decision::LeaveStopped(why) => {
                    assert!(why.contains("4 retries used"), "{why}");
                    break;
                }
                Decision::Reboot(_) => panic!("never reboots"),
            }
        }
        assert_eq!(delays, [1.0, 2.0, 4.0, 8.0]);
        let reboot = ar(RecoveryPolicy::Always, 1, 0, 1.0, "reboot");
        assert!(matches!(
            decide(
                Some(&reboot),
                RestartPolicy::Container,
                1,
                Duration::ZERO,
                Some(1)
            )
            .0,
            Decision::Reboot(_)
        ));
    }

    #[test]
    fn a_duration_backoff_waits_then_starts_counting_again() {
        let a = ar(RecoveryPolicy::Always, 2, 1, 1.0, "10min");
        let (d, r) = decide(
            Some(&a),
            RestartPolicy::Container,
            2,
            Duration::ZERO,
            Some(1),
        );
        assert_eq!((secs(&d), r), (600.0, 0));
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let mut a = ar(RecoveryPolicy::Always, 3, 2, 2.0, "never");
        a.reset_window = Some(60);
        let (d, r) = decide(
            Some(&a),
            RestartPolicy::Container,
            3,
            Duration::from_secs(61),
            Some(1),
        );
        assert_eq!((secs(&d), r), (2.0, 1));
        let (d, _) = decide(
            Some(&a),
            RestartPolicy::Container,
            3,
            Duration::from_secs(59),
            Some(1),
        );
        assert!(matches!(d, Decision::LeaveStopped(_)));
    }

    #[test]
    fn on_failure_lets_clean_exits_be() {
        let a = ar(RecoveryPolicy::OnFailure, 0, 0, 1.0, "never");
        assert!(matches!(
            decide(
                Some(&a),
                RestartPolicy::Container,
                0,
                Duration::ZERO,
                Some(0)
            )
            .0,
            Decision::LeaveStopped(_)
        ));
        assert!(matches!(
            decide(
                Some(&a),
                RestartPolicy::Container,
                0,
                Duration::ZERO,
                Some(2)
            )
            .0,
            Decision::Restart { .. }
        ));
        // A failure to start is a failure.
        assert!(matches!(
            decide(Some(&a), RestartPolicy::Container, 0, Duration::ZERO, None).0,
            Decision::Restart { .. }
        ));
        // Unlimited retries (max 0) never give up.
        let (_, r) = decide(
            Some(&a),
            RestartPolicy::Container,
            1000,
            Duration::ZERO,
            Some(1),
        );
        assert_eq!(r, 1001);
    }

    #[test]
    fn without_recovery_the_restart_policy_decides() {
        let (d, _) = decide(None, RestartPolicy::System, 0, Duration::ZERO, Some(1));
        assert!(matches!(d, Decision::Reboot(ref why) if why.contains("restart_policy system")));
        let (d, _) = decide(None, RestartPolicy::Container, 0, Duration::ZERO, Some(1));
        assert!(matches!(d, Decision::LeaveStopped(_)));
        let no = ar(RecoveryPolicy::No, 5, 1, 1.0, "never");
        assert!(matches!(
            decide(Some(&no), RestartPolicy::System, 0, Duration::ZERO, Some(1)).0,
            Decision::Reboot(_)
        ));
    }
}
