//! Typed documents of a Pantavisor state (`pantavisor-service-system@1`).
//!
//! Every document keeps the members it does not know in `extra`, so a state
//! read and written back is byte-identical in canonical form. Optional members
//! are `None` when absent and are not written back.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const SPEC_STATE: &str = "pantavisor-service-system@1";
pub const SPEC_RUN: &str = "service-manifest-run@1";
pub const SPEC_SRC: &str = "service-manifest-src@1";
pub const SPEC_BSP_SRC: &str = "bsp-manifest-src@1";
pub const SPEC_XCONNECT: &str = "service-manifest-xconnect@1";
pub const SPEC_SIG: &str = "pvs@2";
pub const SPEC_DRIVERS: &str = "driver-aliases@1";

/// What a container must reach before its group counts as up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StatusGoal {
    #[serde(rename = "MOUNTED")]
    Mounted,
    #[serde(rename = "STARTED")]
    Started,
    #[serde(rename = "READY")]
    Ready,
}

/// What a crash of the container means: restart it (`container`) or the
/// whole system (`system`). Also decides whether an update reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    System,
    Container,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::System => "system",
            RestartPolicy::Container => "container",
        })
    }
}

impl fmt::Display for StatusGoal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatusGoal::Mounted => "MOUNTED",
            StatusGoal::Started => "STARTED",
            StatusGoal::Ready => "READY",
        })
    }
}

/// Where a writable path of a container lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// Shared by all revisions.
    Permanent,
    /// Kept across reboots of one revision.
    Revision,
    /// tmpfs, gone at reboot.
    Boot,
    /// Written by pvr for a Docker volume with no persistence given: the
    /// volume stays in the image; Pantavisor treats it as `boot`.
    #[serde(rename = "built-in")]
    BuiltIn,
}

/// Container runtime: Pantavisor's LXC, or an OCI runtime config (ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerType {
    Lxc,
    Oci,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May use the whole control API.
    Mgmt,
    /// May only send signals.
    Nobody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryPolicy {
    No,
    Always,
    OnFailure,
    UnlessStopped,
}

/// `auto_recovery` of a container or group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoRecovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RecoveryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_window: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_timeout: Option<u64>,
    /// `reboot`, `never` or a duration such as `10min`, `1h`, `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `storage` (container) or `volumes` (device.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A service a container requires from the xconnect mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRequirement {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `services` of a run.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<Vec<ServiceRequirement>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<Vec<ServiceRequirement>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `<container>/run.json` (`service-manifest-run@1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    #[serde(rename = "#spec")]
    pub spec: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ContainerType,
    /// The runtime config file, relative to the container's directory.
    /// pvr leaves it out for containers that are only mounted (`MOUNTED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The root filesystem object, relative to the container's directory;
    /// `dm:` in front asks for a dm-verity protected volume.
    #[serde(rename = "root-volume")]
    pub root_volume: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<String>>,
    pub storage: BTreeMap<String, StorageEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_goal: Option<StatusGoal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_recovery: Option<AutoRecovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceRequirements>,
    /// An array in the documents, a flag in Pantavisor's parser: kept as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drivers: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `bsp/run.json`: the boot assets, each a file name under `bsp/`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BspRun {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpiab: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addons: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_config: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl BspRun {
    /// The files under `bsp/` this manifest refers to, with the member naming each.
    pub fn referenced_files(&self) -> Vec<(&'static str, &str)> {
        let mut files = Vec::new();
        let singles = [
            ("linux", &self.linux),
            ("initrd", &self.initrd),
            ("modules", &self.modules),
            ("firmware", &self.firmware),
            ("fdt", &self.fdt),
            ("fit", &self.fit),
            ("rpiab", &self.rpiab),
            ("initrd_config", &self.initrd_config),
        ];
        for (member, value) in singles {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                files.push((member, v));
            }
        }
        for addon in self.addons.iter().flatten() {
            files.push(("addons", addon.as_str()));
        }
        files
    }
}

/// `<container>/src.json` and `bsp/src.json`: where a part came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SrcManifest {
    #[serde(rename = "#spec")]
    pub spec: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An orchestration group (`device.json` `groups`, or legacy `groups.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_goal: Option<StatusGoal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_recovery: Option<AutoRecovery>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Disk types `disks` and `disks_v2` accept (`disks_v3` warns on others).
pub const DISK_TYPES: &[&str] = &[
    "dm-crypt-caam",
    "dm-crypt-dcp",
    "dm-crypt-versatile",
    "swap-disk",
    "volume-disk",
    "dual",
];

/// A storage medium of `device.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `device.json`: disks, groups and Pantavisor's own volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceManifest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<Disk>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks_v2: Option<Vec<Disk>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks_v3: Option<Vec<Disk>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Group>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, StorageEntry>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A service a container offers on the xconnect mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceExport {
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `<container>/services.json` (`service-manifest-xconnect@1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicesManifest {
    #[serde(rename = "#spec")]
    pub spec: String,
    #[serde(default)]
    pub services: Vec<ServiceExport>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `_sigs/<name>.json` (`pvs@2`): a JWS in JSON serialisation whose payload
/// is detached (the canonical JSON of the state keys it covers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureDoc {
    #[serde(rename = "#spec")]
    pub spec: String,
    /// base64url of the protected JOSE header.
    pub protected: String,
    /// base64url of the signature.
    pub signature: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A state key's value, parsed according to what the key names.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A binary file, stored as an object.
    Object(crate::ObjectId),
    BspRun(BspRun),
    Run(Box<RunManifest>),
    Src(SrcManifest),
    Device(Box<DeviceManifest>),
    Groups(Vec<Group>),
    Services(ServicesManifest),
    Signature(SignatureDoc),
    /// Any other inline JSON document (`bsp/build.json`, `_config/…/x.json`, …),
    /// or a document that did not parse (its problem is reported by validation).
    Json(Value),
}

impl Entry {
    /// The entry back as JSON.
    pub fn to_value(&self) -> Value {
        fn ser<T: Serialize>(t: &T) -> Value {
            // Serialising these plain data types to a Value cannot fail: all
            // map keys are strings and all floats come from parsed JSON.
            serde_json::to_value(t).unwrap_or(Value::Null)
        }
        match self {
            Entry::Object(id) => Value::String(id.to_string()),
            Entry::BspRun(d) => ser(d),
            Entry::Run(d) => ser(d),
            Entry::Src(d) => ser(d),
            Entry::Device(d) => ser(d),
            Entry::Groups(d) => ser(d),
            Entry::Services(d) => ser(d),
            Entry::Signature(d) => ser(d),
            Entry::Json(v) => v.clone(),
        }
    }

    pub fn object_id(&self) -> Option<&crate::ObjectId> {
        match self {
            Entry::Object(id) => Some(id),
            _ => None,
        }
    }
}

/// Pantavisor's default groups, used when the state defines none
/// (its `defaults/groups.json`).
pub fn default_groups() -> Vec<Group> {
    let group = |name: &str, goal, policy| Group {
        name: name.to_string(),
        description: None,
        status_goal: Some(goal),
        restart_policy: Some(policy),
        timeout: Some(30),
        auto_recovery: None,
        extra: Map::new(),
    };
    let mut app = group("app", StatusGoal::Started, RestartPolicy::Container);
    app.auto_recovery = Some(AutoRecovery {
        policy: Some(RecoveryPolicy::OnFailure),
        max_retries: Some(5),
        retry_delay: Some(5),
        backoff_factor: Some(2.0),
        reset_window: None,
        stable_timeout: Some(30),
        backoff_policy: Some("reboot".into()),
        extra: Map::new(),
    });
    vec![
        group("data", StatusGoal::Mounted, RestartPolicy::System),
        group("root", StatusGoal::Started, RestartPolicy::System),
        group("platform", StatusGoal::Started, RestartPolicy::System),
        app,
    ]
}
