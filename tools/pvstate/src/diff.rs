//! Revision diff: which parts changed between two states, and the transition
//! Pantavisor's rules derive from it.
//!
//! A revision reboots when the BSP, a root document (anything that belongs to
//! no container), or a container whose restart policy is `system` (in either
//! revision) changed; otherwise only the changed `container`-policy
//! containers are stopped, swapped and started while the rest keep running.

use std::collections::{BTreeMap, BTreeSet};

use crate::canonical;
use crate::model::{Entry, RestartPolicy};
use crate::state::State;

/// Who a state key belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Bsp,
    Container(String),
    /// Root documents, `_config/` of no container, anything else.
    Root,
}

/// Which part a key belongs to, given the container names of both revisions.
pub fn owner(key: &str, containers: &BTreeSet<String>) -> Owner {
    let mut parts = key.splitn(3, '/');
    let first = parts.next().unwrap_or("");
    let second = parts.next();
    match (first, second) {
        ("bsp", Some(_)) => Owner::Bsp,
        ("_sigs", Some("bsp.json")) => Owner::Bsp,
        ("_sigs", Some(file)) => match file.strip_suffix(".json") {
            Some(c) if containers.contains(c) => Owner::Container(c.to_string()),
            _ => Owner::Root,
        },
        ("_config", Some(c)) if containers.contains(c) && parts.next().is_some() => {
            Owner::Container(c.to_string())
        }
        (c, Some(_)) if containers.contains(c) => Owner::Container(c.to_string()),
        _ => Owner::Root,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Modified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDiff {
    pub change: Change,
    /// The keys (of the container, its `_config/` and its signature) that differ.
    pub keys: Vec<String>,
    /// Restart policy in the old revision (None when added).
    pub old_policy: Option<RestartPolicy>,
    /// Restart policy in the new revision (None when removed).
    pub new_policy: Option<RestartPolicy>,
}

/// What differs between two revisions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    pub bsp: Vec<String>,
    pub root: Vec<String>,
    pub containers: BTreeMap<String, ContainerDiff>,
    /// Containers present and identical in both revisions.
    pub unchanged: Vec<String>,
}

/// What the device does to go from one revision to the other.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transition {
    pub reboot: bool,
    /// Why it reboots, one line per cause.
    pub reasons: Vec<String>,
    /// Containers only in the old revision (stopped).
    pub stop: Vec<String>,
    /// Containers in both whose parts changed (stopped, swapped, started).
    pub restart: Vec<String>,
    /// Containers only in the new revision (started).
    pub start: Vec<String>,
    /// Containers that keep running untouched (none when rebooting).
    pub keep: Vec<String>,
}

/// Two entries are the same when their canonical forms are (`2` and `2.0`
/// are one number to Pantavisor and to a signature).
fn same(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a == b || canonical::to_vec(&a.to_value()) == canonical::to_vec(&b.to_value())
        }
        _ => false,
    }
}

/// The keys whose entries differ between two states (added, removed or
/// changed, by canonical form), in key order.
pub fn changed_keys<'a>(old: &'a State, new: &'a State) -> Vec<&'a String> {
    let keys: BTreeSet<&String> = old.entries().keys().chain(new.entries().keys()).collect();
    keys.into_iter()
        .filter(|k| !same(old.get(k), new.get(k)))
        .collect()
}

/// Compare two revisions part by part.
pub fn diff(old: &State, new: &State) -> Diff {
    let old_c: BTreeSet<String> = old.containers().keys().map(|s| s.to_string()).collect();
    let new_c: BTreeSet<String> = new.containers().keys().map(|s| s.to_string()).collect();
    let all: BTreeSet<String> = old_c.union(&new_c).cloned().collect();
    let mut out = Diff::default();
    let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in changed_keys(old, new) {
        match owner(key, &all) {
            Owner::Bsp => out.bsp.push(key.clone()),
            Owner::Root => out.root.push(key.clone()),
            Owner::Container(c) => changed.entry(c).or_default().push(key.clone()),
        }
    }
    for name in &all {
        let old_policy = old.effective(name).map(|e| e.restart_policy);
        let new_policy = new.effective(name).map(|e| e.restart_policy);
        let change = match (old_c.contains(name), new_c.contains(name)) {
            (false, true) => Change::Added,
            (true, false) => Change::Removed,
            _ if changed.contains_key(name) => Change::Modified,
            _ => {
                out.unchanged.push(name.clone());
                continue;
            }
        };
        out.containers.insert(
            name.clone(),
            ContainerDiff {
                change,
                keys: changed.remove(name).unwrap_or_default(),
                old_policy,
                new_policy,
            },
        );
    }
    out
}

impl Diff {
    /// Whether the two revisions are the same.
    pub fn is_empty(&self) -> bool {
        self.bsp.is_empty() && self.root.is_empty() && self.containers.is_empty()
    }

    /// Apply Pantavisor's transition rules.
    pub fn transition(&self) -> Transition {
        let mut t = Transition::default();
        if !self.bsp.is_empty() {
            t.reasons
                .push(format!("BSP changed: {}", self.bsp.join(", ")));
        }
        if !self.root.is_empty() {
            t.reasons
                .push(format!("root documents changed: {}", self.root.join(", ")));
        }
        for (name, c) in &self.containers {
            let system = c.old_policy == Some(RestartPolicy::System)
                || c.new_policy == Some(RestartPolicy::System);
            if system {
                let what = match c.change {
                    Change::Added => "added",
                    Change::Removed => "removed",
                    Change::Modified => "changed",
                };
                t.reasons.push(format!(
                    "container '{name}' with restart_policy system {what}"
                ));
            }
            match c.change {
                Change::Added => t.start.push(name.clone()),
                Change::Removed => t.stop.push(name.clone()),
                Change::Modified => t.restart.push(name.clone()),
            }
        }
        t.reboot = !t.reasons.is_empty();
        if !t.reboot {
            t.keep = self.unchanged.clone();
        }
        t
    }
}

/// Diff two states and derive the transition in one call.
pub fn plan(old: &State, new: &State) -> (Diff, Transition) {
    let d = diff(old, new);
    let t = d.transition();
    (d, t)
}
