//! What a container part is made of besides its root filesystem: the
//! settings that become `run.json`, the OCI runtime `config.json` and
//! `src.json`. Read from a YAML manifest, an `args.json`-style file and flags.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use pvstate::model::{
    AutoRecovery, ContainerType, Persistence, RestartPolicy, Role, RunManifest, ServiceExport,
    ServiceRequirement, ServiceRequirements, StatusGoal, StorageEntry, SPEC_RUN,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{ComposeError, Result};

/// Everything about a container except its root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_goal: Option<StatusGoal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_recovery: Option<AutoRecovery>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// `PATH:PERSISTENCE[@DISK]` (a directory of the container kept on
    /// storage) or `NAME:PERSISTENCE[@DISK]` (a storage entry such as
    /// `lxc-overlay`, the container's writable layer; `boot` by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceRequirements>,
    /// Names of the services this container exports (run.json `exports`,
    /// which Pantavisor reads; the xconnect mesh goes by `provides`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    /// The xconnect services this container provides, written to its
    /// `services.json`: `{name, type (unix|rest|dbus), socket}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provides: Vec<ServiceExport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Arguments after the entrypoint (Docker's `Cmd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `UID[:GID]` or `USER[:GROUP]`, names looked up in the rootfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Share the host's network namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// Host device nodes the container gets, by path (`/dev/ttyS1`): a
    /// serial line, a modem, a GPIO chip. Their numbers are looked up on
    /// the device when the container starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Protect the root squashfs with dm-verity (Pantavisor's `dm:` layout:
    /// a hash tree object and `_dm/root.squashfs.json`, `root-volume`
    /// `dm:root.squashfs`): the device checks every block it reads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dm_verity: bool,
    /// `PV_LXC_CAP_KEEP` (LXC's `lxc.cap.keep`): the only capabilities the
    /// container keeps (`sys_admin`, `CAP_NET_ADMIN`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps_keep: Option<Vec<String>>,
    /// `PV_LXC_NAMESPACE_KEEP` (LXC's `lxc.namespace.keep`): the host's
    /// namespaces the container stays in (`net`, `ipc`, `pid`, `uts`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces_keep: Vec<String>,
    /// The part's runtime format: `oci` (our default: `config.json`) or
    /// `lxc` (Pantavisor's `lxc.container.conf`, which Pantavisor's own
    /// devices run too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ContainerType>,
}

/// The xconnect types a service may have.
const SERVICE_TYPES: &[&str] = &["unix", "rest", "dbus"];

fn service_type(t: &str, what: &str) -> Result<String> {
    if SERVICE_TYPES.contains(&t) {
        Ok(t.to_string())
    } else {
        Err(ComposeError::input(format!(
            "{what}: type \"{t}\" is not supported (unix, rest and dbus are)"
        )))
    }
}

fn absolute(p: &str, what: &str) -> Result<String> {
    if p.starts_with('/') && p.len() > 1 && !p.split('/').any(|c| c == "..") {
        Ok(p.to_string())
    } else {
        Err(ComposeError::input(format!(
            "{what}: \"{p}\" is not an absolute path inside the container"
        )))
    }
}

/// `NAME:TYPE:SOCKET`, a service this container provides (services.json).
pub fn parse_provide(s: &str) -> Result<ServiceExport> {
    let what = format!("service \"{s}\" (NAME:TYPE:SOCKET)");
    let mut f = s.splitn(3, ':');
    match (f.next(), f.next(), f.next()) {
        (Some(name), Some(t), Some(socket)) if !name.is_empty() => Ok(ServiceExport {
            name: name.to_string(),
            kind: Some(service_type(t, &what)?),
            socket: Some(absolute(socket, &what)?),
            extra: Map::new(),
        }),
        _ => Err(ComposeError::input(format!(
            "{what}: expected NAME:TYPE:SOCKET, e.g. mqtt:unix:/run/mosquitto/mqtt.sock"
        ))),
    }
}

/// `NAME:TYPE:TARGET[:ROLE]`, a service this container requires
/// (run.json services.required).
pub fn parse_require(s: &str) -> Result<ServiceRequirement> {
    let what = format!("requirement \"{s}\" (NAME:TYPE:TARGET[:ROLE])");
    let f: Vec<&str> = s.split(':').collect();
    match f.as_slice() {
        [name, t, target, rest @ ..] if !name.is_empty() && rest.len() <= 1 => {
            Ok(ServiceRequirement {
                name: name.to_string(),
                kind: Some(service_type(t, &what)?),
                target: Some(absolute(target, &what)?),
                role: rest
                    .first()
                    .filter(|r| !r.is_empty())
                    .map(|r| r.to_string()),
                interface: None,
                extra: Map::new(),
            })
        }
        _ => Err(ComposeError::input(format!(
            "{what}: expected NAME:TYPE:TARGET[:ROLE], e.g. mqtt:unix:/run/mqtt.sock"
        ))),
    }
}

/// The name of an LXC-format part's config.
pub const LXC_CONFIG: &str = "lxc.container.conf";

/// The args.json keys the composer turns into settings the daemon honours.
pub const ARGS_JSON_KEYS: &str = "PV_GROUP, PV_STATUS_GOAL, PV_RESTART_POLICY, PV_AUTO_RECOVERY, PV_ROLES, PV_VOLUMES, PV_EXPORTS, PV_SERVICES, PV_SERVICES_REQUIRED, PV_HOST_NETWORK, PV_DEVICES, PV_LXC_CAP_KEEP, PV_LXC_NAMESPACE_KEEP, PV_LXC_DISABLE_CONSOLE (1), Entrypoint, Cmd, Env, WorkingDir, User";

/// An OCI capability name of `lxc.cap.keep`'s `sys_admin` or `CAP_SYS_ADMIN`.
fn capability(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    let cap = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if cap.len() > 4 && cap[4..].chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        Ok(cap)
    } else {
        Err(ComposeError::input(format!(
            "PV_LXC_CAP_KEEP: \"{name}\" is not a capability name"
        )))
    }
}

/// The OCI namespace type of an `lxc.namespace.keep` name.
fn namespace(name: &str) -> Result<&'static str> {
    Ok(match name {
        "net" | "network" => "network",
        "ipc" => "ipc",
        // Containers get no user namespace: the host's is kept already.
        "user" => "user",
        // The daemon always gives a container its own pid, uts and mount
        // namespaces (its init, its hostname, its root).
        other => {
            return Err(ComposeError::input(format!(
                "PV_LXC_NAMESPACE_KEEP: keeping the \"{other}\" namespace is not supported (net, ipc, user)"
            )))
        }
    })
}

/// A parsed `volumes` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// The storage key in run.json.
    pub key: String,
    /// Where it is mounted in the container, for path volumes.
    pub target: Option<String>,
    pub persistence: Persistence,
    pub disk: Option<String>,
}

impl Volume {
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| {
            ComposeError::input(format!("volume \"{spec}\": {why}; expected PATH:PERSISTENCE[@DISK], e.g. /var/lib/mosquitto:permanent"))
        };
        if spec.starts_with("ovl:") {
            // meta-pantavisor's default `--volume ovl:/var:permanent`: an
            // overlay kept on storage over the image's own PATH.
            return Err(bad(
                "ovl: volumes (a kept overlay over the image's own PATH) are not supported yet; PATH:PERSISTENCE mounts an empty directory of storage at PATH instead",
            ));
        }
        let (what, rest) = spec.rsplit_once(':').ok_or_else(|| bad("no persistence"))?;
        let (persistence, disk) = match rest.split_once('@') {
            Some((p, d)) if !d.is_empty() => (p, Some(d.to_string())),
            Some(_) => return Err(bad("empty disk name")),
            None => (rest, None),
        };
        let persistence = match persistence {
            "permanent" => Persistence::Permanent,
            "revision" => Persistence::Revision,
            "boot" => Persistence::Boot,
            other => {
                return Err(bad(&format!(
                    "persistence \"{other}\" is not permanent, revision or boot"
                )))
            }
        };
        if what.is_empty() || what.contains("..") || what.contains('\0') {
            return Err(bad("bad path or name"));
        }
        let (key, target) = if what.starts_with('/') {
            let trimmed = what.trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(bad("the root directory cannot be a volume"));
            }
            (
                format!("docker-{}", trimmed.replace('/', "-")),
                Some(trimmed.to_string()),
            )
        } else if what.contains('/') {
            return Err(bad("a path must be absolute"));
        } else {
            (what.to_string(), None)
        };
        Ok(Volume {
            key,
            target,
            persistence,
            disk,
        })
    }
}

fn string_list(key: &str, v: &Value) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(s.split_whitespace().map(str::to_string).collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ComposeError::input(format!("{key}: expected a list of strings"))),
        _ => Err(ComposeError::input(format!(
            "{key}: expected a list of strings"
        ))),
    }
}

fn enum_value<T: serde::de::DeserializeOwned>(key: &str, v: &Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| ComposeError::input(format!("{key}: {e}")))
}

impl ContainerSettings {
    /// Settings from an `args.json`-style file: pvr's `PV_*` keys and the
    /// Docker image config's `Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`.
    pub fn from_args_json(path: &Path) -> Result<Self> {
        let text = fs::read(path).map_err(|e| ComposeError::io(path, e))?;
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| ComposeError::input(format!("{}: not valid JSON: {e}", path.display())))?;
        Self::from_json(&v, &path.display().to_string())
    }

    /// The same keys from a JSON object (`origin` names it in errors), e.g.
    /// the `config` of a Docker/OCI image configuration.
    pub fn from_json(v: &Value, origin: &str) -> Result<Self> {
        let map = v
            .as_object()
            .ok_or_else(|| ComposeError::input(format!("{origin}: expected a JSON object")))?;
        let mut s = ContainerSettings::default();
        let ctx = |k: &str| format!("{origin}: {k}");
        for (k, v) in map {
            match k.as_str() {
                "PV_GROUP" => s.group = v.as_str().map(str::to_string),
                "PV_STATUS_GOAL" => s.status_goal = Some(enum_value(&ctx(k), v)?),
                "PV_RESTART_POLICY" => s.restart_policy = Some(enum_value(&ctx(k), v)?),
                "PV_AUTO_RECOVERY" => s.auto_recovery = Some(enum_value(&ctx(k), v)?),
                "PV_ROLES" => s.roles = enum_value(&ctx(k), v)?,
                "PV_VOLUMES" => s.volumes = string_list(&ctx(k), v)?,
                "PV_EXPORTS" => s.exports = string_list(&ctx(k), v)?,
                "PV_SERVICES" => s.services = Some(enum_value(&ctx(k), v)?),
                // Upstream's consumer side: run.json services.required.
                "PV_SERVICES_REQUIRED" => {
                    let required: Vec<ServiceRequirement> = enum_value(&ctx(k), v)?;
                    for r in &required {
                        if let Some(t) = r.kind.as_deref() {
                            service_type(t, &format!("{}: \"{}\"", ctx(k), r.name))?;
                        }
                    }
                    s.services = Some(ServiceRequirements {
                        required: Some(required),
                        optional: None,
                        extra: Map::new(),
                    })
                }
                "PV_HOST_NETWORK" => {
                    s.host_network = v.as_bool().unwrap_or(v.as_str() == Some("yes"))
                }
                "PV_DEVICES" => s.devices = string_list(&ctx(k), v)?,
                "Entrypoint" => s.entrypoint = Some(string_list(&ctx(k), v)?),
                "Cmd" => s.args = Some(string_list(&ctx(k), v)?),
                "Env" => s.env = string_list(&ctx(k), v)?,
                "WorkingDir" => {
                    s.workdir = v.as_str().filter(|w| !w.is_empty()).map(str::to_string)
                }
                "User" => s.user = v.as_str().filter(|u| !u.is_empty()).map(str::to_string),
                "PV_LXC_CAP_KEEP" => {
                    // An entry may name several, as an lxc.cap.keep line does.
                    s.caps_keep = Some(
                        string_list(&ctx(k), v)?
                            .iter()
                            .flat_map(|c| c.split_whitespace())
                            .map(capability)
                            .collect::<Result<_>>()?,
                    )
                }
                "PV_LXC_NAMESPACE_KEEP" => {
                    let list = string_list(&ctx(k), v)?;
                    for n in &list {
                        namespace(n)?;
                    }
                    s.namespaces_keep = list;
                }
                // Our containers never get a console: asking for none is
                // what they have.
                "PV_LXC_DISABLE_CONSOLE"
                    if matches!(v.as_str(), Some("1") | Some("yes")) || v == &Value::Bool(true) => {
                }
                other => {
                    return Err(ComposeError::input(format!(
                        "{origin}: key \"{other}\" is not supported (supported: {ARGS_JSON_KEYS})"
                    )))
                }
            }
        }
        Ok(s)
    }

    /// `other`'s values where it has them, ours elsewhere.
    pub fn overlay(mut self, other: ContainerSettings) -> Self {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            group,
            status_goal,
            restart_policy,
            auto_recovery,
            services,
            entrypoint,
            args,
            workdir,
            user,
            caps_keep,
            format
        );
        macro_rules! take_vec {
            ($($f:ident),*) => { $( if !other.$f.is_empty() { self.$f = other.$f; } )* };
        }
        take_vec!(
            roles,
            volumes,
            exports,
            provides,
            env,
            devices,
            namespaces_keep
        );
        self.host_network |= other.host_network;
        self.dm_verity |= other.dm_verity;
        self
    }

    pub fn parsed_volumes(&self) -> Result<Vec<Volume>> {
        let vols: Vec<Volume> = self
            .volumes
            .iter()
            .map(|v| Volume::parse(v))
            .collect::<Result<_>>()?;
        let mut seen = std::collections::BTreeSet::new();
        for v in &vols {
            if !seen.insert(&v.key) {
                return Err(ComposeError::input(format!(
                    "volume \"{}\" is given twice",
                    v.key
                )));
            }
        }
        Ok(vols)
    }

    /// The container's run.json.
    pub fn run_manifest(&self, name: &str) -> Result<RunManifest> {
        let mut storage = BTreeMap::new();
        storage.insert(
            "lxc-overlay".to_string(),
            StorageEntry {
                persistence: Some(Persistence::Boot),
                disk: None,
                extra: Map::new(),
            },
        );
        for v in self.parsed_volumes()? {
            storage.insert(
                v.key,
                StorageEntry {
                    persistence: Some(v.persistence),
                    disk: v.disk,
                    extra: Map::new(),
                },
            );
        }
        Ok(RunManifest {
            spec: SPEC_RUN.to_string(),
            name: name.to_string(),
            kind: self.format.unwrap_or(ContainerType::Oci),
            config: Some(match self.format {
                Some(ContainerType::Lxc) => LXC_CONFIG.into(),
                _ => "config.json".into(),
            }),
            root_volume: "root.squashfs".into(),
            volumes: Some(Vec::new()),
            storage,
            group: self.group.clone(),
            status_goal: self.status_goal,
            restart_policy: self.restart_policy,
            auto_recovery: self.auto_recovery.clone(),
            roles: (!self.roles.is_empty()).then(|| self.roles.clone()),
            services: self.services.clone(),
            exports: (!self.exports.is_empty()).then(|| json!(self.exports)),
            drivers: None,
            logs: None,
            extra: Map::new(),
        })
    }

    /// Pantavisor's LXC config (`lxc.container.conf`) of the container, of
    /// the shape Pantavisor's pvr writes: what the OCI config says, in the
    /// keys both Pantavisor and our daemon read (devices are refused: their
    /// numbers are only known on the device).
    pub fn lxc_config(&self, name: &str, rootfs: &Path) -> Result<String> {
        if !self.devices.is_empty() {
            return Err(ComposeError::input(
                "devices (PV_DEVICES) are not carried by the LXC format; use the OCI format",
            ));
        }
        let oci = self.oci_config(name, rootfs)?;
        let quote = |a: &str| {
            if a.is_empty() || a.contains(char::is_whitespace) || a.contains('\'') {
                format!("\"{a}\"")
            } else {
                a.to_string()
            }
        };
        let p = &oci["process"];
        let args: Vec<String> = p["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|a| {
                if a.contains('"') {
                    Err(ComposeError::input(format!(
                        "argument {a:?}: a double quote cannot be written in lxc.init.cmd"
                    )))
                } else {
                    Ok(quote(a))
                }
            })
            .collect::<Result<_>>()?;
        let mut out = format!(
            "# {name}: written by pvcompose (run.json type lxc)\nlxc.tty.max = 8\nlxc.pty.max = 1024\n\
             lxc.rootfs.path = overlayfs:/volumes/{name}/root.squashfs:/volumes/{name}/lxc-overlay/upper\n\
             lxc.init.cmd = {}\n",
            args.join(" ")
        );
        let cwd = p["cwd"].as_str().unwrap_or("/");
        if cwd != "/" {
            out.push_str(&format!("lxc.init.cwd = {cwd}\n"));
        }
        for (key, id) in [("uid", &p["user"]["uid"]), ("gid", &p["user"]["gid"])] {
            if id.as_u64().unwrap_or(0) != 0 {
                out.push_str(&format!("lxc.init.{key} = {id}\n"));
            }
        }
        for e in p["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            out.push_str(&format!("lxc.environment = {e}\n"));
        }
        let has = |t: &str| {
            oci["linux"]["namespaces"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["type"] == t)
        };
        let mut keep = vec!["user"];
        if !has("network") {
            keep.push("net");
        }
        if !has("ipc") {
            keep.push("ipc");
        }
        out.push_str(&format!("lxc.namespace.keep = {}\n", keep.join(" ")));
        if has("network") {
            out.push_str("lxc.net.0.type = empty\n");
        }
        if let Some(caps) = &self.caps_keep {
            let names: Vec<String> = caps
                .iter()
                .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
                .collect();
            out.push_str(&format!("lxc.cap.keep = {}\n", names.join(" ")));
        }
        out.push_str("lxc.mount.auto = proc sys:rw cgroup\n");
        for v in self.parsed_volumes()? {
            if let Some(t) = v.target {
                out.push_str(&format!(
                    "lxc.mount.entry = /volumes/{name}/{} {} none bind,rw,create=dir 0 0\n",
                    v.key,
                    t.trim_start_matches('/')
                ));
            }
        }
        Ok(out)
    }

    /// The OCI runtime config (`config.json`) of the container; user names
    /// are looked up in `rootfs`.
    pub fn oci_config(&self, name: &str, rootfs: &Path) -> Result<Value> {
        let mut args: Vec<String> = self.entrypoint.clone().unwrap_or_default();
        args.extend(self.args.clone().unwrap_or_default());
        if args.is_empty() {
            args.push("/sbin/init".into());
        }
        for e in &self.env {
            if !e.contains('=') || e.starts_with('=') {
                return Err(ComposeError::input(format!(
                    "env \"{e}\": expected KEY=VALUE"
                )));
            }
        }
        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        let (uid, gid) = match &self.user {
            Some(u) => resolve_user(u, rootfs)?,
            None => (0, 0),
        };
        let cwd = self.workdir.clone().unwrap_or_else(|| "/".into());
        if !cwd.starts_with('/') {
            return Err(ComposeError::input(format!(
                "workdir \"{cwd}\" must be an absolute path"
            )));
        }
        let mounts: Vec<Value> = self
            .parsed_volumes()?
            .into_iter()
            .filter_map(|v| {
                v.target.map(|t| {
                    json!({"destination": t, "type": "bind", "source": v.key, "options": ["rbind", "rw"]})
                })
            })
            .collect();
        let mut kept = Vec::new();
        for n in &self.namespaces_keep {
            kept.push(namespace(n)?);
        }
        let mut namespaces: Vec<Value> = ["pid", "ipc", "uts", "mount"]
            .into_iter()
            .filter(|t| !kept.contains(t))
            .map(|t| json!({"type": t}))
            .collect();
        if !self.host_network && !kept.contains(&"network") {
            namespaces.push(json!({"type": "network"}));
        }
        let mut linux = json!({"namespaces": namespaces});
        if !self.devices.is_empty() {
            let mut devices = Vec::new();
            for d in &self.devices {
                let ok = d.starts_with("/dev/")
                    && d.len() > 5
                    && !d.split('/').any(|c| c == "..")
                    && !d.ends_with('/');
                if !ok {
                    return Err(ComposeError::input(format!(
                        "device \"{d}\": expected a device node's path under /dev, e.g. /dev/ttyS1"
                    )));
                }
                if !devices.iter().any(|v: &Value| v["path"] == d.as_str()) {
                    devices.push(json!({"path": d}));
                }
            }
            linux["devices"] = json!(devices);
        }
        let mut process = json!({
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
        });
        if let Some(caps) = &self.caps_keep {
            process["capabilities"] =
                json!({"bounding": caps, "effective": caps, "permitted": caps});
        }
        Ok(json!({
            "ociVersion": "1.0.2",
            "process": process,
            "root": {"path": "rootfs", "readonly": false},
            "hostname": name,
            "mounts": mounts,
            "linux": linux,
        }))
    }
}

/// Look `name` up in a passwd/group style file of the rootfs.
fn lookup(rootfs: &Path, file: &str, name: &str) -> Result<Option<(u32, u32)>> {
    let path = rootfs.join(file);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ComposeError::io(&path, e)),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        // passwd: name:pw:uid:gid:…; group: name:pw:gid:members.
        if f.len() >= 3 && f[0] == name {
            if let Ok(id) = f[2].parse::<u32>() {
                let second = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
                return Ok(Some((id, second)));
            }
        }
    }
    Ok(None)
}

fn resolve_user(spec: &str, rootfs: &Path) -> Result<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => lookup(rootfs, "etc/passwd", user)?.ok_or_else(|| {
            ComposeError::input(format!(
                "user \"{user}\" is not in the rootfs' /etc/passwd; give a numeric UID"
            ))
        })?,
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(rootfs, "etc/group", g)?
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    ComposeError::input(format!(
                        "group \"{g}\" is not in the rootfs' /etc/group; give a numeric GID"
                    ))
                })?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        let v = Volume::parse("/var/lib/mosquitto/:permanent@data").unwrap();
        assert_eq!(v.key, "docker--var-lib-mosquitto");
        assert_eq!(v.target.as_deref(), Some("/var/lib/mosquitto"));
        assert_eq!(v.persistence, Persistence::Permanent);
        assert_eq!(v.disk.as_deref(), Some("data"));
        let v = Volume::parse("lxc-overlay:revision").unwrap();
        assert_eq!((v.key.as_str(), v.target), ("lxc-overlay", None));
        for bad in [
            "/x",
            "/x:forever",
            "rel/path:boot",
            "/:boot",
            "/a/../b:boot",
            "/x:boot@",
        ] {
            assert!(Volume::parse(bad).is_err(), "{bad}");
        }
        let e = Volume::parse("ovl:/var:permanent").unwrap_err().to_string();
        assert!(
            e.contains("ovl: volumes") && e.contains("not supported"),
            "{e}"
        );
    }

    #[test]
    fn users_resolve_in_the_rootfs() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("etc")).unwrap();
        fs::write(tmp.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nmosquitto:x:101:102::/var/lib/mosquitto:/usr/sbin/nologin\n").unwrap();
        fs::write(
            tmp.path().join("etc/group"),
            "root:x:0:\ndialout:x:20:mosquitto\n",
        )
        .unwrap();
        assert_eq!(resolve_user("mosquitto", tmp.path()).unwrap(), (101, 102));
        assert_eq!(
            resolve_user("mosquitto:dialout", tmp.path()).unwrap(),
            (101, 20)
        );
        assert_eq!(resolve_user("1000:1001", tmp.path()).unwrap(), (1000, 1001));
        assert!(resolve_user("nobody-here", tmp.path())
            .unwrap_err()
            .to_string()
            .contains("not in the rootfs"));
    }

    #[test]
    fn flags_override_args_json() {
        let base = ContainerSettings {
            group: Some("app".into()),
            env: vec!["A=1".into()],
            ..Default::default()
        };
        let flags = ContainerSettings {
            group: Some("platform".into()),
            ..Default::default()
        };
        let merged = base.overlay(flags);
        assert_eq!(merged.group.as_deref(), Some("platform"));
        assert_eq!(merged.env, vec!["A=1"]);
    }

    #[test]
    fn lxc_keys_become_the_oci_configs_capabilities_and_namespaces() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ContainerSettings::from_json(
            &json!({
                "PV_LXC_CAP_KEEP": ["sys_time", "net_admin net_raw", "CAP_KILL"],
                "PV_LXC_NAMESPACE_KEEP": "net ipc",
                "PV_LXC_DISABLE_CONSOLE": "1",
                "Entrypoint": ["/bin/a"],
            }),
            "args.json",
        )
        .unwrap();
        let c = s.oci_config("ntp", tmp.path()).unwrap();
        assert_eq!(
            c["process"]["capabilities"]["bounding"],
            json!(["CAP_SYS_TIME", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_KILL"])
        );
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "uts", "mount"]);
        // Without the keys: no capability list (the daemon's defaults), all namespaces.
        let plain = ContainerSettings::from_json(&json!({"Entrypoint": ["/bin/a"]}), "a")
            .unwrap()
            .oci_config("x", tmp.path())
            .unwrap();
        assert!(plain["process"].get("capabilities").is_none());
        // What the daemon cannot honour is refused by name.
        for (key, value) in [
            ("LXC_TTY_MAX", json!("12")),
            ("PV_NETWORK_POOL", json!("internal")),
            ("PV_VOLUME_IMPORTS", json!([])),
            ("PV_LXC_DISABLE_CONSOLE", json!("0")),
        ] {
            let e = ContainerSettings::from_json(&json!({ key: value }), "args.json")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("key \"{key}\" is not supported")),
                "{e}"
            );
        }
        for bad in [
            json!({"PV_LXC_CAP_KEEP": ["sys-admin"]}),
            json!({"PV_LXC_NAMESPACE_KEEP": "time"}),
        ] {
            assert!(ContainerSettings::from_json(&bad, "a").is_err(), "{bad}");
        }
    }

    #[test]
    fn devices_go_to_the_oci_config_by_path() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ContainerSettings::from_json(
            &json!({"PV_DEVICES": ["/dev/ttyS1", "/dev/ttyUSB0", "/dev/ttyS1"], "Entrypoint": ["/bin/a"]}),
            "args.json",
        )
        .unwrap();
        let c = s.oci_config("modbus", tmp.path()).unwrap();
        assert_eq!(
            c["linux"]["devices"],
            json!([{"path": "/dev/ttyS1"}, {"path": "/dev/ttyUSB0"}])
        );
        let none = ContainerSettings::default()
            .oci_config("x", tmp.path())
            .unwrap();
        assert!(none["linux"].get("devices").is_none());
        for bad in ["ttyS1", "/dev/", "/dev/../etc/shadow", "/etc/passwd"] {
            let s = ContainerSettings {
                devices: vec![bad.into()],
                ..Default::default()
            };
            let e = s.oci_config("x", tmp.path()).unwrap_err().to_string();
            assert!(e.contains("under /dev"), "{bad}: {e}");
        }
    }
}
