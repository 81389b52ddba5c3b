//! Which revisions storage keeps (Pantavisor's garbage collector, with a
//! count of older revisions to keep): the running one, the committed one,
//! the one being tried, factory revision 0, revisions installed and not run
//! yet, and the `keep` newest others — good or failed, so that the last
//! failures stay readable. Everything older goes, with its logs and
//! per-revision disks; then the objects no remaining revision refers to.
//! Pure: the daemon gathers the facts and removes.

use std::collections::BTreeSet;
use std::time::SystemTime;

/// A revision on storage, as the collector sees it.
#[derive(Debug, Clone)]
pub struct Trail {
    pub rev: String,
    /// Its progress status (`NEW`, `DONE`, `ERROR`, …), if it has one.
    pub status: Option<String>,
    /// When its progress last changed.
    pub when: SystemTime,
}

/// The revisions to remove, oldest first.
pub fn plan(trails: &[Trail], pinned: &BTreeSet<String>, keep: usize) -> Vec<String> {
    let mut others: Vec<&Trail> = trails
        .iter()
        .filter(|t| !pinned.contains(&t.rev) && t.rev != "0")
        // Installed, not run yet (or no progress at all): the user's. An
        // update under way is pinned by the caller; one left INPROGRESS or
        // TESTING by a power cut ages like the others.
        .filter(|t| !matches!(t.status.as_deref(), None | Some("NEW")))
        .collect();
    others.sort_by(|a, b| b.when.cmp(&a.when).then_with(|| b.rev.cmp(&a.rev)));
    let mut remove: Vec<&Trail> = others.into_iter().skip(keep).collect();
    remove.sort_by(|a, b| a.when.cmp(&b.when).then_with(|| a.rev.cmp(&b.rev)));
    remove.into_iter().map(|t| t.rev.clone()).collect()
}

/// Percent of a file system in use, from its block counts.
pub fn used_percent(total: u64, available: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (total.saturating_sub(available) * 100).div_ceil(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn t(rev: &str, status: Option<&str>, secs: u64) -> Trail {
        Trail {
            rev: rev.into(),
            status: status.map(str::to_string),
            when: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn keeps_the_pinned_factory_new_and_the_newest_good_ones() {
        let trails = vec![
            t("0", Some("DONE"), 1),
            t("1", Some("DONE"), 2),
            t("2", Some("ERROR"), 3),
            t("3", Some("DONE"), 4),
            t("locals/a", Some("UPDATED"), 5),
            t("locals/b", Some("WONTGO"), 6),
            t("5", Some("DONE"), 7),
            t("locals/new", Some("NEW"), 8),
            t("locals/raw", None, 9),
            t("6", Some("DONE"), 10),
            t("7", Some("TESTING"), 11),
        ];
        // 6 runs and is committed; 7 is being tried.
        let pinned: BTreeSet<String> = ["6", "7"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            plan(&trails, &pinned, 2),
            vec!["1", "2", "3", "locals/a"],
            "the two newest besides the pinned (5, and the failed locals/b) stay"
        );
        assert_eq!(
            plan(&trails, &pinned, 0),
            vec!["1", "2", "3", "locals/a", "locals/b", "5"]
        );
        // A TESTING revision nobody pins (a left-over of a power cut) ages
        // like the others; 0, NEW and unreported ones stay.
        assert_eq!(
            plan(&trails, &BTreeSet::new(), 1),
            vec!["1", "2", "3", "locals/a", "locals/b", "5", "6"]
        );
    }

    #[test]
    fn used_percent_rounds_up() {
        assert_eq!(used_percent(100, 100), 0);
        assert_eq!(used_percent(1000, 1), 100);
        assert_eq!(used_percent(1000, 899), 11);
        assert_eq!(used_percent(0, 0), 0);
    }
}
