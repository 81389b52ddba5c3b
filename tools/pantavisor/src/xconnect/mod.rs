//! xconnect: the service mesh between the containers of a revision.
//!
//! Providers declare services in `<c>/services.json`
//! (`service-manifest-xconnect@1`: name, type, socket), consumers require
//! them in run.json `services.required`/`optional` (name, type, target,
//! role, interface). The daemon — not the container — decides who is
//! calling: it binds a socket at the consumer's `target` inside the
//! consumer's own mount namespace before the consumer's program runs, and
//! proxies every connection to the provider's socket, resolved inside the
//! provider's namespace at connect time (so a provider restart only costs
//! the connections it had). On the way it injects identity: `rest` puts
//! `X-PV-Client`/`X-PV-Role` into every request (a consumer's own are
//! dropped), `dbus` connects to the provider's bus as the UID the role
//! has in the provider's `/etc/passwd` and rewrites the SASL EXTERNAL
//! identity to it.
//!
//! - [`filter`]: the per-type rewriting of the consumer's byte stream;
//! - [`proxy`]: listeners and connections on one epoll, edge triggered,
//!   no thread per connection.

pub mod filter;
pub mod proxy;

use pvstate::{Entry, State};
use serde_json::{json, Value};

/// The mediation types the daemon proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unix,
    Rest,
    Dbus,
}

/// Types Pantavisor knows and this daemon does not mediate (yet).
pub const LATER: &[&str] = &["drm", "wayland", "input"];

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "unix" => Some(Kind::Unix),
            "rest" => Some(Kind::Rest),
            "dbus" => Some(Kind::Dbus),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unix => "unix",
            Kind::Rest => "rest",
            Kind::Dbus => "dbus",
        }
    }
}

/// One consumer requirement matched to its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub consumer: String,
    pub provider: String,
    /// The service's name.
    pub name: String,
    pub kind: Kind,
    /// The requirement's role, `any` when it names none.
    pub role: String,
    pub interface: String,
    /// Where the consumer finds it (a path in its namespace).
    pub target: String,
    /// The provider's socket (a path in its namespace).
    pub socket: String,
    pub required: bool,
}

/// A service's type as the export says it, else as the requirement does
/// (`unix` when neither says).
fn kind_of(export: Option<&str>, requirement: Option<&str>) -> &'static str {
    match export.or(requirement).unwrap_or("unix") {
        "unix" => "unix",
        "rest" => "rest",
        "dbus" => "dbus",
        "drm" => "drm",
        "wayland" => "wayland",
        "input" => "input",
        _ => "unknown",
    }
}

/// The exports of `state`: (provider, name, type, socket), providers in
/// name order.
fn exports(state: &State) -> Vec<(String, String, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    for (key, entry) in state.entries() {
        let Entry::Services(m) = entry else { continue };
        let Some(provider) = key.strip_suffix("/services.json") else {
            continue;
        };
        for s in &m.services {
            out.push((
                provider.to_string(),
                s.name.clone(),
                s.kind.clone(),
                s.socket.clone(),
            ));
        }
    }
    out
}

/// Every requirement of `state` that a provider of the same state answers
/// and this daemon can mediate, consumers in name order.
pub fn links(state: &State) -> Vec<Link> {
    let exports = exports(state);
    let mut out = Vec::new();
    for (consumer, run) in state.containers() {
        let Some(s) = &run.services else { continue };
        let all = s
            .required
            .iter()
            .flatten()
            .map(|r| (r, true))
            .chain(s.optional.iter().flatten().map(|r| (r, false)));
        for (r, required) in all {
            let Some((provider, _, ekind, socket)) = exports
                .iter()
                .find(|(p, n, _, _)| n == &r.name && p != consumer)
            else {
                continue;
            };
            let kind = kind_of(ekind.as_deref(), r.kind.as_deref());
            let (Some(kind), Some(target), Some(socket)) =
                (Kind::parse(kind), r.target.as_ref(), socket.as_ref())
            else {
                continue;
            };
            out.push(Link {
                consumer: consumer.to_string(),
                provider: provider.clone(),
                name: r.name.clone(),
                kind,
                role: r.role.clone().unwrap_or_else(|| "any".into()),
                interface: r
                    .interface
                    .clone()
                    .unwrap_or_else(|| kind.as_str().to_string()),
                target: target.clone(),
                socket: socket.clone(),
                required,
            });
        }
    }
    out
}

/// What in `state`'s xconnect declarations this daemon cannot act on, as
/// `KEY: MEMBER: why` (a requirement naming no provider is a validation
/// problem of the state itself, see pvstate).
pub fn problems(state: &State) -> Vec<String> {
    let exports = exports(state);
    let mut out = Vec::new();
    for (provider, name, kind, socket) in &exports {
        let key = format!("{provider}/services.json");
        let k = kind_of(kind.as_deref(), None);
        if LATER.contains(&k) {
            out.push(format!(
                "{key}: services: \"{name}\": type \"{k}\" is not supported by this daemon (unix, rest and dbus are)"
            ));
        } else if k == "unknown" {
            out.push(format!(
                "{key}: services: \"{name}\": type \"{}\" is unknown (unix, rest and dbus are mediated)",
                kind.as_deref().unwrap_or_default()
            ));
        }
        match socket.as_deref() {
            Some(s) if s.starts_with('/') => {}
            Some(s) => out.push(format!(
                "{key}: services: \"{name}\": socket \"{s}\" is not an absolute path"
            )),
            None if LATER.contains(&k) => {}
            None => out.push(format!(
                "{key}: services: \"{name}\": no socket: the provider's socket path is needed"
            )),
        }
    }
    for (consumer, run) in state.containers() {
        let Some(s) = &run.services else { continue };
        let key = format!("{consumer}/run.json");
        for (list, reqs) in [("required", &s.required), ("optional", &s.optional)] {
            for r in reqs.iter().flatten() {
                let export = exports.iter().find(|(_, n, _, _)| n == &r.name);
                let k = kind_of(export.and_then(|e| e.2.as_deref()), r.kind.as_deref());
                if LATER.contains(&k) {
                    out.push(format!(
                        "{key}: services.{list}: \"{}\": type \"{k}\" is not supported by this daemon (unix, rest and dbus are)",
                        r.name
                    ));
                    continue;
                }
                match r.target.as_deref() {
                    Some(t) if t.starts_with('/') && t.len() > 1 => {}
                    Some(t) => out.push(format!(
                        "{key}: services.{list}: \"{}\": target \"{t}\" is not an absolute path",
                        r.name
                    )),
                    None => out.push(format!(
                        "{key}: services.{list}: \"{}\": no target: where the service goes in the container is needed",
                        r.name
                    )),
                }
            }
        }
    }
    out
}

/// One link as `/xconnect-graph` shows it (Pantavisor's shape): the pids
/// are the containers' inits, 0 while one does not run.
pub fn graph_entry(l: &Link, consumer_pid: i32, provider_pid: i32) -> Value {
    json!({
        "consumer": l.consumer,
        "consumer_pid": consumer_pid,
        "provider": l.provider,
        "provider_pid": provider_pid,
        "name": l.name,
        "type": l.kind.as_str(),
        "role": l.role,
        "interface": l.interface,
        "target": l.target,
        "socket": l.socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(extra: Value) -> State {
        let mut v = json!({
            "#spec": "pantavisor-service-system@1",
            "bsp/run.json": {"linux": "kernel", "initrd": "initrd"},
            "bsp/kernel": "0000000000000000000000000000000000000000000000000000000000000000",
            "bsp/initrd": "0000000000000000000000000000000000000000000000000000000000000000",
        });
        for (name, services) in [
            ("broker", Value::Null),
            (
                "app",
                json!({"required": [
                    {"name": "mqtt", "target": "/run/mqtt.sock"},
                    {"name": "metrics", "type": "rest", "target": "/run/metrics.sock", "role": "reader"}
                ]}),
            ),
        ] {
            let mut run = json!({
                "#spec": "service-manifest-run@1", "name": name, "type": "oci",
                "config": "config.json", "root-volume": "root.squashfs",
                "storage": {}
            });
            if !services.is_null() {
                run["services"] = services;
            }
            v[format!("{name}/run.json")] = run;
            v[format!("{name}/config.json")] = json!({"ociVersion": "1.0.2"});
            v[format!("{name}/root.squashfs")] =
                json!("0000000000000000000000000000000000000000000000000000000000000000");
        }
        v["broker/services.json"] = json!({"#spec": "service-manifest-xconnect@1", "services": [
            {"name": "mqtt", "type": "unix", "socket": "/run/mosquitto.sock"},
            {"name": "metrics", "type": "rest", "socket": "/run/metrics.sock"}
        ]});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        State::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn requirements_meet_their_providers() {
        let links = links(&state(json!({})));
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].consumer, "app");
        assert_eq!(links[0].provider, "broker");
        assert_eq!(links[0].kind, Kind::Unix);
        assert_eq!(links[0].role, "any");
        assert_eq!(links[0].socket, "/run/mosquitto.sock");
        assert_eq!(links[1].kind, Kind::Rest);
        assert_eq!(links[1].role, "reader");
        assert_eq!(links[1].interface, "rest");
        let g = graph_entry(&links[1], 7, 0);
        let mut keys: Vec<&String> = g.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "consumer",
                "consumer_pid",
                "interface",
                "name",
                "provider",
                "provider_pid",
                "role",
                "socket",
                "target",
                "type"
            ]
        );
        assert!(problems(&state(json!({}))).is_empty());
    }

    #[test]
    fn types_and_paths_it_cannot_mediate_are_named() {
        let s = state(
            json!({"broker/services.json": {"#spec": "service-manifest-xconnect@1", "services": [
                {"name": "mqtt", "type": "wayland", "socket": "/run/wayland-0"},
                {"name": "metrics", "type": "rest"}
            ]}}),
        );
        let p = problems(&s);
        assert!(
            p.iter().any(|l| l.starts_with("broker/services.json")
                && l.contains("\"mqtt\": type \"wayland\" is not supported")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|l| l.contains("\"metrics\": no socket")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l
                    .starts_with("app/run.json: services.required: \"mqtt\": type \"wayland\"")),
            "{p:?}"
        );
        // Neither becomes a link.
        assert!(links(&s).is_empty());
    }
}
