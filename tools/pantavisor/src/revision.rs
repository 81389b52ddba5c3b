//! The running revision: its containers and groups in start order, goal
//! evaluation and group advancement. No I/O here: the daemon brings up what
//! [`Revision::advance`] says and reports what changed.

use std::time::{Duration, Instant};

use pvstate::model::StatusGoal;
use pvstate::{ObjectStore, State};
use serde_json::{json, Value};

use crate::container::{Ctr, Status};
use crate::error::{Error, Result};

pub struct Group {
    pub name: String,
    pub timeout: Duration,
    /// Indices into [`Revision::ctrs`].
    pub members: Vec<usize>,
    pub launched: bool,
    pub deadline: Option<Instant>,
}

/// What to do next for the groups.
#[derive(Debug, PartialEq, Eq)]
pub enum Advance {
    /// Bring these containers up (a group was just launched).
    Launch(Vec<usize>),
    /// The current group waits for its members' goals.
    Wait,
    /// Every group is through.
    Done,
}

pub struct Revision {
    pub name: String,
    pub state: State,
    pub ctrs: Vec<Ctr>,
    pub groups: Vec<Group>,
    /// The first group not through yet.
    pub next_group: usize,
}

pub fn goal_reached(c: &Ctr) -> bool {
    match c.eff.status_goal {
        StatusGoal::Mounted => c.status >= Status::Mounted && c.status != Status::Stopped,
        StatusGoal::Started => matches!(c.status, Status::Started | Status::Ready),
        StatusGoal::Ready => c.status == Status::Ready,
    }
}

/// Gives each container of the daemon's life a new, never reused id.
#[derive(Debug, Default)]
pub struct Ids(u64);

impl Ids {
    pub fn fresh(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

impl Revision {
    /// The containers and groups of `state`, in start order. Containers of
    /// `keep` with a name in the state are taken as they are (still
    /// running); the others get a new entry and a new id. On an error
    /// `keep` is left untouched, so its running containers are not lost.
    pub fn layout(
        name: &str,
        state: State,
        objects: &ObjectStore,
        keep: &mut Vec<Ctr>,
        ids: &mut Ids,
    ) -> Result<Revision> {
        let (groups_def, _) = state.groups();
        let assignment = state.group_assignment();
        let mut groups: Vec<Group> = groups_def
            .iter()
            .map(|g| Group {
                name: g.name.clone(),
                timeout: Duration::from_secs(g.timeout.unwrap_or(30)),
                members: Vec::new(),
                launched: false,
                deadline: None,
            })
            .collect();
        // Everything that can fail comes first: each container's group, and
        // the new entries.
        let mut placed = Vec::new();
        for cname in state.containers().keys() {
            let gi = groups
                .iter()
                .position(|g| Some(&g.name) == assignment.get(*cname))
                .ok_or_else(|| Error::container(cname, "its group does not exist"))?;
            let fresh = match keep.iter().any(|c| c.name == *cname) {
                true => None,
                false => Some(Ctr::new(cname, &state, objects)?),
            };
            placed.push((*cname, gi, fresh));
        }
        let mut ctrs = Vec::new();
        for (cname, gi, fresh) in placed {
            let ctr = match fresh {
                Some(mut c) => {
                    c.uid = ids.fresh();
                    c
                }
                None => match keep.iter().position(|c| c.name == *cname) {
                    Some(k) => keep.swap_remove(k),
                    None => unreachable!("checked above"),
                },
            };
            groups[gi].members.push(ctrs.len());
            ctrs.push(ctr);
        }
        Ok(Revision {
            name: name.to_string(),
            state,
            ctrs,
            groups,
            next_group: 0,
        })
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.ctrs.iter().position(|c| c.name == name)
    }

    /// The container with id `uid`, if it is still part of the revision.
    pub fn by_uid(&self, uid: u64) -> Option<usize> {
        self.ctrs.iter().position(|c| c.uid == uid)
    }

    /// Move the groups on: launch the current group, or pass it once every
    /// member reached its goal or its timeout passed.
    pub fn advance(&mut self, now: Instant) -> Advance {
        while self.next_group < self.groups.len() {
            let g = &mut self.groups[self.next_group];
            if !g.launched {
                g.launched = true;
                g.deadline = Some(now + g.timeout);
                info!(
                    "group {}: starting {} container(s)",
                    g.name,
                    g.members.len()
                );
                return Advance::Launch(g.members.clone());
            }
            let g = &self.groups[self.next_group];
            let late: Vec<&str> = g
                .members
                .iter()
                .filter(|&&i| !goal_reached(&self.ctrs[i]))
                .map(|&i| self.ctrs[i].name.as_str())
                .collect();
            let timed_out = g.deadline.is_some_and(|d| now >= d);
            if !late.is_empty() && !timed_out {
                return Advance::Wait;
            }
            if late.is_empty() {
                info!("group {}: every container reached its goal", g.name);
            } else {
                warn!(
                    "group {}: timeout after {:?}; not at their goal: {}",
                    g.name,
                    g.timeout,
                    late.join(", ")
                );
            }
            self.next_group += 1;
        }
        Advance::Done
    }

    /// The current group's deadline, for the event loop's timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.groups.get(self.next_group).and_then(|g| g.deadline)
    }

    /// Every group through and every container at its goal.
    pub fn all_up(&self) -> bool {
        self.next_group >= self.groups.len() && self.ctrs.iter().all(goal_reached)
    }

    /// The containers not at their goal.
    pub fn late(&self) -> Vec<String> {
        self.ctrs
            .iter()
            .filter(|c| !goal_reached(c))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Every container ran at least its auto_recovery's `stable_timeout`.
    pub fn stable(&self) -> bool {
        self.ctrs.iter().all(|c| {
            let need = c
                .eff
                .auto_recovery
                .as_ref()
                .and_then(|a| a.stable_timeout)
                .unwrap_or(0);
            need == 0
                || c.status == Status::Mounted
                || c.started_at
                    .is_some_and(|t| t.elapsed() >= Duration::from_secs(need))
        })
    }

    /// Names of the containers still running.
    pub fn running(&self) -> Vec<String> {
        self.ctrs
            .iter()
            .filter(|c| c.is_running())
            .map(|c| c.name.clone())
            .collect()
    }

    /// `/groups`.
    pub fn describe_groups(&self) -> Value {
        Value::Array(
            self.groups
                .iter()
                .enumerate()
                .map(|(gi, g)| {
                    let status = if gi < self.next_group {
                        "READY"
                    } else if g.launched {
                        "STARTING"
                    } else {
                        "WAITING"
                    };
                    json!({
                        "name": g.name,
                        "timeout": g.timeout.as_secs(),
                        "status": status,
                        "containers": g.members.iter().map(|&i| self.ctrs[i].name.clone()).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(group: &str) -> State {
        let sha = "1".repeat(64);
        let v = json!({
            "#spec": "pantavisor-service-system@1",
            "app/run.json": {"#spec": "service-manifest-run@1", "name": "app", "type": "oci",
                             "config": "config.json", "root-volume": "root.squashfs",
                             "storage": {}, "group": group},
            "app/config.json": {"ociVersion": "1.0.2", "process": {"args": ["/bin/sh"]}},
            "app/root.squashfs": sha,
        });
        State::parse_lenient(&serde_json::to_vec(&v).unwrap())
            .unwrap()
            .0
    }

    /// A revision that cannot be laid out leaves the containers it was
    /// given to the caller (they still run); a good one takes them.
    #[test]
    fn a_failed_layout_leaves_the_kept_containers_to_the_caller() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = ObjectStore::open(tmp.path()).unwrap();
        let mut ids = Ids::default();
        let mut run =
            Revision::layout("0", state("app"), &objects, &mut Vec::new(), &mut ids).unwrap();
        let uid = run.ctrs[0].uid;
        let mut kept = std::mem::take(&mut run.ctrs);
        let err = Revision::layout("1", state("nowhere"), &objects, &mut kept, &mut ids);
        assert!(err.is_err());
        assert_eq!(kept.len(), 1, "the running container is still the caller's");
        let again = Revision::layout("2", state("app"), &objects, &mut kept, &mut ids).unwrap();
        assert!(kept.is_empty());
        assert_eq!(
            again.ctrs[0].uid, uid,
            "the same container, not a new entry"
        );
        assert_eq!(
            again.groups.iter().map(|g| g.members.len()).sum::<usize>(),
            1
        );
    }
}
