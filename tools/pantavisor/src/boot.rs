//! Which revision boots: the one decision, used by the daemon when it starts
//! (appengine and embedded mode alike) and by embedded mode before it, to
//! mount the revision's BSP modules and firmware.

/// What the boot handshake (`pv_rev`, `pv_try`, `pv_trying`) says to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Nothing pending: the committed revision.
    Committed(String),
    /// `pv_try` is pending and its try has not begun: try it (and set the
    /// latch `pv_trying` before running anything of it).
    Try { rev: String, committed: String },
    /// `pv_try`'s try began before and never committed: never twice. Back
    /// to the committed revision; `failed` is marked ERROR.
    TriedBefore { failed: String, committed: String },
}

impl Choice {
    /// The revision this choice runs.
    pub fn rev(&self) -> &str {
        match self {
            Choice::Committed(r) => r,
            Choice::Try { rev, .. } => rev,
            Choice::TriedBefore { committed, .. } => committed,
        }
    }
}

/// `pv_bootrev=REV` of a kernel command line: the revision whose kernel
/// and initramfs the bootloader loaded (our U-Boot script says so).
pub fn bootloader_rev(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pv_bootrev="))
        .filter(|r| !r.is_empty())
}

/// A try the bootloader gave up before the daemon ran: the handshake
/// says try `rev`, but the bootloader booted the kernel of `booted`
/// (its try began in the bootloader and never reached us — a kernel that
/// cannot start). Why, or None when there is nothing wrong.
pub fn try_not_booted(choice: &Choice, booted: Option<&str>) -> Option<String> {
    match (choice, booted) {
        (Choice::Try { rev, .. }, Some(b)) if b != rev => Some(format!(
            "its BSP did not boot: the bootloader booted the kernel of revision {b} (its try of {rev} began in the bootloader and never reached the daemon)"
        )),
        _ => None,
    }
}

/// Decide from the handshake's three variables.
pub fn choose(rev: &str, try_rev: Option<&str>, trying: Option<&str>) -> Choice {
    match try_rev.filter(|t| !t.is_empty() && *t != rev) {
        None => Choice::Committed(rev.to_string()),
        Some(t) if trying == Some(t) => Choice::TriedBefore {
            failed: t.to_string(),
            committed: rev.to_string(),
        },
        Some(t) => Choice::Try {
            rev: t.to_string(),
            committed: rev.to_string(),
        },
    }
}

/// The revisions to try booting, in order, when the chosen one fails its
/// check at boot: the chosen one, the committed one, the revisions that
/// reached DONE (`done_newest_first`, asked only if those two fail), and
/// factory revision 0 last; each once.
pub fn candidates<'a>(
    chosen: &'a Choice,
    done_newest_first: impl FnOnce() -> Vec<String> + 'a,
) -> impl Iterator<Item = String> + 'a {
    let committed = match chosen {
        Choice::Committed(r) => r,
        Choice::Try { committed, .. } | Choice::TriedBefore { committed, .. } => committed,
    };
    let mut seen: Vec<String> = Vec::new();
    [chosen.rev().to_string(), committed.clone()]
        .into_iter()
        .chain(std::iter::once_with(done_newest_first).flatten())
        .chain(["0".to_string()])
        .filter(move |r| {
            let new = !seen.contains(r);
            if new {
                seen.push(r.clone());
            }
            new
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latch_decides() {
        assert_eq!(choose("3", None, None), Choice::Committed("3".into()));
        // A stale latch with nothing to try is ignored.
        assert_eq!(choose("3", None, Some("4")), Choice::Committed("3".into()));
        let c = choose("3", Some("4"), None);
        assert_eq!(
            c,
            Choice::Try {
                rev: "4".into(),
                committed: "3".into()
            }
        );
        assert_eq!(c.rev(), "4");
        // Its try began and never committed: back to 3, never 4 again.
        let c = choose("3", Some("4"), Some("4"));
        assert_eq!(c.rev(), "3");
        assert!(matches!(c, Choice::TriedBefore { ref failed, .. } if failed == "4"));
        // A latch of an older try does not block a new one.
        assert_eq!(choose("3", Some("5"), Some("4")).rev(), "5");
        // pv_try naming the committed revision is nothing to try.
        assert_eq!(
            choose("3", Some("3"), Some("3")),
            Choice::Committed("3".into())
        );
    }

    #[test]
    fn a_try_the_bootloader_did_not_boot_is_told() {
        let cmd = "console=ttyS0 pv_bootrev=locals/a quiet";
        assert_eq!(bootloader_rev(cmd), Some("locals/a"));
        assert_eq!(bootloader_rev("pv_bootrev= x"), None);
        let try_b = choose("locals/a", Some("locals/b"), None);
        let why = try_not_booted(&try_b, bootloader_rev(cmd)).unwrap();
        assert!(why.contains("kernel of revision locals/a"), "{why}");
        // The try's own kernel, a committed boot, or no report: nothing.
        assert_eq!(try_not_booted(&try_b, Some("locals/b")), None);
        assert_eq!(try_not_booted(&try_b, None), None);
        assert_eq!(
            try_not_booted(&choose("locals/a", None, None), Some("locals/a")),
            None
        );
    }

    #[test]
    fn fallbacks_go_from_newest_good_to_factory() {
        let done = || vec!["7".to_string(), "5".to_string(), "3".to_string()];
        let all = |c: &Choice| candidates(c, done).collect::<Vec<_>>();
        assert_eq!(
            all(&choose("7", Some("locals/x"), None)),
            ["locals/x", "7", "5", "3", "0"]
        );
        assert_eq!(all(&choose("5", None, None)), ["5", "7", "3", "0"]);
        assert_eq!(
            candidates(&choose("0", None, None), Vec::new).collect::<Vec<_>>(),
            ["0"]
        );
        // The DONE revisions are looked up only when the first two fail.
        let c = choose("7", Some("locals/x"), None);
        let mut lazy = candidates(&c, || panic!("looked up too early"));
        assert_eq!(lazy.next().as_deref(), Some("locals/x"));
        assert_eq!(lazy.next().as_deref(), Some("7"));
    }
}
