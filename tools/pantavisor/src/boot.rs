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
