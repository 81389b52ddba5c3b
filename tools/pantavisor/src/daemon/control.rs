//! The control API's calls, answered from the daemon's state: the
//! [`api::Service`] the transport calls back into.

use std::fs;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use pvctrl::proto::{self, Action, Op};
use pvstate::model::{RestartPolicy, Role};
use pvstate::store::ObjectWriter;
use pvstate::ObjectId;
use serde_json::{json, Value};

use super::Daemon;
use crate::api::{Answer, Call, Caller, Service};
use crate::config::Mode;
use crate::container::{Ctr, Status};
use crate::error::Refusal;
use crate::update::machine::Purpose;

/// `/buildinfo`.
pub fn buildinfo(mode: Mode) -> Value {
    json!({"name": "pantavisor-rs", "version": env!("CARGO_PKG_VERSION"), "mode": mode.as_str()})
}

fn describe(c: &Ctr) -> Value {
    json!({
        "name": c.name,
        "group": c.eff.group,
        "status": c.status.as_str(),
        "status_goal": c.eff.status_goal.to_string(),
        "restart_policy": c.eff.restart_policy.to_string(),
        "roles": c.run.roles.clone().unwrap_or_default(),
        "pid": c.pid,
        "restarts": c.restarts,
        "last_exit": c.last_exit,
        "held": c.held.as_ref().map(|(_, why)| why.clone()),
    })
}

/// The container named in the caller's cgroup path (`/PARENT/NAME/…`) of
/// `/proc/PID/cgroup` text.
pub fn cgroup_container(text: &str, parent: &str) -> Option<String> {
    let prefix = format!("/{parent}/");
    text.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        let rest = path.split(&prefix).nth(1)?;
        Some(rest.split('/').next()?.to_string()).filter(|n| !n.is_empty())
    })
}

impl Service for Daemon {
    fn caller_of(&self, pid: i32) -> Caller {
        let name = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| cgroup_container(&t, &self.rt.opts.cgroup_parent));
        match name.and_then(|n| self.run.index_of(&n)) {
            Some(i) => Caller::Container {
                uid: self.run.ctrs[i].uid,
                name: self.run.ctrs[i].name.clone(),
            },
            None => Caller::Host,
        }
    }

    fn may_manage(&self, caller: &Caller) -> Result<(), Refusal> {
        let Caller::Container { uid, name } = caller else {
            return Ok(());
        };
        let Some(i) = self.run.by_uid(*uid) else {
            return Err(Refusal::Denied(format!(
                "container {name} has left the running revision: its connection has no rights"
            )));
        };
        let mgmt = self.run.ctrs[i]
            .run
            .roles
            .as_ref()
            .is_some_and(|r| r.contains(&Role::Mgmt));
        if mgmt {
            Ok(())
        } else {
            Err(Refusal::Denied(format!(
                "container {name} has no mgmt role: only /signal is allowed"
            )))
        }
    }

    fn call(&mut self, caller: &Caller, call: Call) -> Result<Answer, Refusal> {
        let json = |v| Ok(Answer::Json(v));
        match call {
            Call::Signal(s) => self.signal(caller, &s).and_then(json),
            Call::Containers => json(Value::Array(self.run.ctrs.iter().map(describe).collect())),
            Call::ContainerAction { name, action } => {
                self.container_action(&name, &action).and_then(json)
            }
            Call::Groups => json(self.run.describe_groups()),
            Call::XconnectGraph => json(self.xconnect_graph()),
            Call::BuildInfo => json(buildinfo(self.rt.opts.mode)),
            Call::Config => json(self.rt.opts.settings.to_json()),
            Call::DeviceMeta => json(self.device_meta()),
            Call::UserMeta => json(self.user_meta_all()),
            Call::UserMetaGet(k) => fs::read_to_string(self.rt.storage.user_meta_dir().join(&k))
                .map(|v| Answer::Json(json!(v)))
                .map_err(|_| Refusal::NotFound(format!("no user-meta {k}"))),
            Call::UserMetaPut(k, v) => {
                let dir = self.rt.storage.user_meta_dir();
                let _ = fs::create_dir_all(&dir);
                pvstate::store::write_atomic(&dir.join(&k), v.as_bytes())
                    .map_err(|e| Refusal::Failed(e.to_string()))?;
                json(json!({}))
            }
            Call::UserMetaDelete(k) => fs::remove_file(self.rt.storage.user_meta_dir().join(&k))
                .map(|_| Answer::Json(json!({})))
                .map_err(|_| Refusal::NotFound(format!("no user-meta {k}"))),
            Call::Objects => {
                let ids = self
                    .rt
                    .objects
                    .list()
                    .map_err(|e| Refusal::Failed(e.to_string()))?;
                json(json!(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()))
            }
            Call::Object(id) if self.rt.objects.contains(&id) => {
                Ok(Answer::File(self.rt.objects.path(&id)))
            }
            Call::Object(id) => Err(Refusal::NotFound(format!("no object {id}"))),
            Call::ObjectPartial(id) => {
                let path = pvstate::chunks::partial_path(&self.rt.objects, &id);
                match std::fs::metadata(&path) {
                    Ok(m) => json(json!({"object": id.to_string(), "bytes": m.len()})),
                    Err(_) => Err(Refusal::NotFound(format!(
                        "nothing kept of a transfer of object {id}"
                    ))),
                }
            }
            Call::Steps => json(self.steps()),
            Call::Logs { name, offset, max } => json(self.log_chunk(&name, offset, max)?),
            Call::Step(rev) => self
                .rt
                .storage
                .state(&rev)
                .map(|s| Answer::Json(s.to_value()))
                .map_err(|_| Refusal::NotFound(format!("no revision {rev}"))),
            Call::Progress(rev) => match self.rt.storage.progress(&rev) {
                Some(p) => json(p),
                None if self.rt.storage.has_revision(&rev) => {
                    json(json!({"status": "NEW", "status-msg": "", "progress": 0}))
                }
                None => Err(Refusal::NotFound(format!("no revision {rev}"))),
            },
            Call::CommitMessage(rev, msg) => {
                if !self.rt.storage.has_revision(&rev) {
                    return Err(Refusal::NotFound(format!("no revision {rev}")));
                }
                let path = self.rt.storage.commit_message_path(&rev);
                if let Some(dir) = path.parent() {
                    let _ = fs::create_dir_all(dir);
                }
                pvstate::store::write_atomic(&path, &msg)
                    .map_err(|e| Refusal::Failed(e.to_string()))?;
                json(json!({}))
            }
            Call::InstallLocal(name, body) => self.install_step(&name, &body).and_then(json),
            Call::Command(c) => self.command(&c).and_then(json),
            Call::Gc => self.gc().and_then(json),
        }
    }

    fn begin_upload(&mut self, id: &ObjectId, length: u64) -> Result<ObjectWriter, Refusal> {
        self.begin_upload(id, length)
    }
}

impl Daemon {
    fn signal(&mut self, caller: &Caller, s: &proto::Signal) -> Result<Value, Refusal> {
        let Caller::Container { uid, name } = caller else {
            return Err(Refusal::Invalid(
                "signals come from containers; this caller is not in one".into(),
            ));
        };
        let Some(i) = self.run.by_uid(*uid) else {
            return Err(Refusal::Denied(format!(
                "container {name} has left the running revision"
            )));
        };
        match s.kind.as_str() {
            "ready" => {
                let c = &mut self.run.ctrs[i];
                if c.is_running() {
                    c.status = Status::Ready;
                    info!("{}: READY", c.name);
                }
                self.advance_groups();
                Ok(json!({}))
            }
            other => Err(Refusal::Invalid(format!("unknown signal type \"{other}\""))),
        }
    }

    fn container_action(
        &mut self,
        name: &str,
        action: &proto::ContainerAction,
    ) -> Result<Value, Refusal> {
        let Some(i) = self.run.index_of(name) else {
            return Err(Refusal::NotFound(format!("no container {name}")));
        };
        if self.run.ctrs[i].eff.restart_policy == RestartPolicy::System {
            return Err(Refusal::Denied(format!(
                "{name} has restart_policy system: it cannot be stopped or restarted alone"
            )));
        }
        match action.action {
            Action::Stop => {
                self.run.ctrs[i].stopped_by_user = true;
                self.stop_container(i);
            }
            Action::Start => {
                self.run.ctrs[i].stopped_by_user = false;
                if !self.run.ctrs[i].is_running() {
                    self.run.ctrs[i].retries = 0;
                    self.restart_now(i);
                }
            }
            Action::Restart => {
                if self.run.ctrs[i].is_running() {
                    self.run.ctrs[i].restart_after_stop = true;
                    self.stop_container(i);
                } else {
                    self.run.ctrs[i].stopped_by_user = false;
                    self.restart_now(i);
                }
            }
            Action::Kill => {
                // A signal to the container's init, as a crash would end it:
                // what follows is its auto_recovery's business (docker kill).
                let sig = action.signal.unwrap_or(9);
                let signal = Signal::try_from(sig)
                    .map_err(|_| Refusal::Invalid(format!("signal {sig}: not a signal")))?;
                let Some(pid) = self.run.ctrs[i].pid else {
                    return Err(Refusal::Busy(format!("{name} is not running")));
                };
                nix::sys::signal::kill(Pid::from_raw(pid), signal)
                    .map_err(|e| Refusal::Failed(format!("kill {name}: {e}")))?;
                info!("{name}: sent {signal} on request");
            }
        }
        Ok(describe(&self.run.ctrs[i]))
    }

    fn device_meta(&self) -> Value {
        // The daemon's resident memory (VmRSS of /proc/self/status), in kB.
        let rss_kb = fs::read_to_string("/proc/self/status").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        json!({
            "pantavisor.version": env!("CARGO_PKG_VERSION"),
            "pantavisor.mode": self.rt.opts.mode.as_str(),
            "pantavisor.revision": self.run.name,
            "pantavisor.reboot-requested": self.reboot_requested,
            "pantavisor.rss_kb": rss_kb,
            "storage": self.storage_meta(),
        })
    }

    fn user_meta_all(&self) -> Value {
        let mut map = serde_json::Map::new();
        if let Ok(entries) = fs::read_dir(self.rt.storage.user_meta_dir()) {
            for e in entries.flatten() {
                if let (Some(k), Ok(v)) = (
                    e.file_name().to_str().map(str::to_string),
                    fs::read_to_string(e.path()),
                ) {
                    if !k.starts_with('.') {
                        map.insert(k, json!(v));
                    }
                }
            }
        }
        Value::Object(map)
    }

    fn steps(&self) -> Value {
        let s = &self.rt.storage;
        Value::Array(
            s.revisions()
                .into_iter()
                .map(|rev| {
                    let progress = s.progress(&rev).unwrap_or(json!({}));
                    let msg = fs::read_to_string(s.commit_message_path(&rev)).unwrap_or_default();
                    json!({"name": rev, "progress": progress, "commitmsg": msg, "running": rev == self.run.name, "committed": rev == self.bootenv.rev})
                })
                .collect(),
        )
    }

    /// `POST /commands`.
    fn command(&mut self, c: &proto::Command) -> Result<Value, Refusal> {
        match c.op {
            Op::LOCAL_RUN | Op::LOCAL_RUN_COMMIT => self.run_revision(&c.payload, Purpose::Run),
            Op::TRY_ONCE => self.run_revision(&c.payload, Purpose::TryOnce),
            Op::RUN_GC => self.gc(),
            Op::REBOOT_DEVICE => self.reboot_device(&c.payload),
            Op::DEBUG_HANG if self.rt.opts.debug_hang => {
                error!("DEBUG_HANG: the event loop stops turning now (debug.hang_command=1)");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            Op::DEBUG_HANG => Err(Refusal::Denied(
                "DEBUG_HANG needs debug.hang_command=1".into(),
            )),
        }
    }
}

impl Daemon {
    /// `/xconnect-graph`: every link of the running revision, with the
    /// inits' pids (0 for a container that does not run).
    fn xconnect_graph(&self) -> Value {
        let pid = |name: &str| {
            self.run
                .index_of(name)
                .and_then(|i| self.run.ctrs[i].pid)
                .unwrap_or(0)
        };
        Value::Array(
            crate::xconnect::links(&self.run.state)
                .iter()
                .map(|l| crate::xconnect::graph_entry(l, pid(&l.consumer), pid(&l.provider)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_by_cgroup() {
        let v2 = "0::/pantavisor/edge-app\n";
        assert_eq!(
            cgroup_container(v2, "pantavisor").as_deref(),
            Some("edge-app")
        );
        let v1 = "12:pids:/pantavisor/os/sub\n0::/\n";
        assert_eq!(cgroup_container(v1, "pantavisor").as_deref(), Some("os"));
        assert_eq!(cgroup_container("0::/user.slice\n", "pantavisor"), None);
        assert_eq!(cgroup_container("0::/pantavisor/\n", "pantavisor"), None);
    }

    /// Defect: /buildinfo said "appengine" in embedded mode too.
    #[test]
    fn buildinfo_names_the_mode() {
        assert_eq!(buildinfo(Mode::Embedded)["mode"], "embedded");
        assert_eq!(buildinfo(Mode::Appengine)["mode"], "appengine");
    }
}
