//! What of a state this daemon acts on. A member it parses but would not
//! act on makes the state WONTGO by name ([`unsupported`]) instead of being
//! ignored: a gateway must not run believing it has a swap disk, a logger or
//! a driver it does not have. docs/state-format.md lists what is honoured.
//!
//! Also where a container volume on a `device.json` disk lives: disks of
//! type `volume-disk` without `provision` (Pantavisor's bind-mount backend)
//! are directories on storage, `pv/volume-disk/NAME`.

use std::path::{Path, PathBuf};

use pvstate::model::{Disk, Persistence, RunManifest};
use pvstate::State;
use serde_json::{Map, Value};

/// Whether a JSON member says something (not null, not an empty array or
/// object, not `false`).
fn says_something(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn unknown_members(key: &str, path: &str, extra: &Map<String, Value>, out: &mut Vec<String>) {
    for (m, v) in extra {
        if says_something(v) {
            out.push(format!(
                "{key}: {path}{m}: not a member this daemon acts on"
            ));
        }
    }
}

/// The disks of `device.json` (`disks`, `disks_v2`, `disks_v3`), each
/// with whether its list is lenient (`disks_v3`).
fn disks(state: &State) -> Vec<(&Disk, bool)> {
    let Some(dev) = state.device() else {
        return Vec::new();
    };
    [
        (&dev.disks, false),
        (&dev.disks_v2, false),
        (&dev.disks_v3, true),
    ]
    .into_iter()
    .flat_map(|(list, lenient)| list.iter().flatten().map(move |d| (d, lenient)))
    .collect()
}

/// Why a disk cannot be used here; `None` for a directory disk.
fn disk_problem(d: &Disk) -> Option<String> {
    match d.kind.as_str() {
        "volume-disk" if !d.extra.get("provision").is_some_and(says_something) => None,
        "volume-disk" => Some(
            "a provisioned volume-disk (zram, block device) is not supported; \
             a volume-disk without provision is (a directory on storage)"
                .into(),
        ),
        t if t.starts_with("dm-crypt-") => Some(format!(
            "{t}: dm-crypt disks are not supported (no CAAM, DCP or versatile key handling)"
        )),
        "swap-disk" => Some("swap disks are not supported yet".into()),
        "dual" => Some("dual disks are not supported".into()),
        other => Some(format!("disk type {other} is not supported")),
    }
}

/// The disk named (or aliased) `name`.
fn find_disk<'a>(state: &'a State, name: &str) -> Option<&'a Disk> {
    disks(state)
        .into_iter()
        .map(|(d, _)| d)
        .find(|d| d.name == name || d.aliases.iter().flatten().any(|a| a == name))
}

/// The disk a volume without a `disk` member goes to: one marked
/// `"default": "yes"`.
fn default_disk(state: &State) -> Option<&Disk> {
    disks(state)
        .into_iter()
        .map(|(d, _)| d)
        .find(|d| d.extra.get("default").and_then(Value::as_str) == Some("yes"))
}

fn check_run(key: &str, run: &RunManifest, state: &State, out: &mut Vec<String>) {
    if run.drivers.as_ref().is_some_and(says_something) {
        out.push(format!(
            "{key}: drivers: managed drivers are not supported; list the modules in the BSP's modules-load.d"
        ));
    }
    if run.logs.as_ref().is_some_and(says_something) {
        out.push(format!(
            "{key}: logs: container loggers are not supported (stdout and stderr are logged)"
        ));
    }
    if run.exports.as_ref().is_some_and(says_something) {
        out.push(format!("{key}: exports: not supported yet (xconnect)"));
    }
    if let Some(s) = &run.services {
        unknown_members(key, "services.", &s.extra, out);
    }
    for (vol, entry) in &run.storage {
        unknown_members(key, &format!("storage.{vol}."), &entry.extra, out);
        if let Some(name) = &entry.disk {
            // An unknown disk name is a validation problem already.
            if let Some(why) = find_disk(state, name).and_then(disk_problem) {
                out.push(format!("{key}: storage.{vol}.disk: \"{name}\": {why}"));
            }
        }
    }
    unknown_members(key, "", &run.extra, out);
}

/// Every member of `state` this daemon would not act on, as
/// `KEY: MEMBER: why`; empty when it honours the whole state.
pub fn unsupported(state: &State) -> Vec<String> {
    let mut out = Vec::new();
    for (name, run) in state.containers() {
        check_run(&format!("{name}/run.json"), run, state, &mut out);
    }
    if let Some(bsp) = state.bsp() {
        let key = "bsp/run.json";
        for (member, set) in [
            ("fit", bsp.fit.as_ref().is_some_and(|v| !v.is_empty())),
            ("rpiab", bsp.rpiab.as_ref().is_some_and(|v| !v.is_empty())),
            ("addons", bsp.addons.as_ref().is_some_and(|v| !v.is_empty())),
            (
                "initrd_config",
                bsp.initrd_config.as_ref().is_some_and(|v| !v.is_empty()),
            ),
        ] {
            if set {
                out.push(format!(
                    "{key}: {member}: not supported by this daemon's boot flow (linux, initrd, fdt, modules, firmware are)"
                ));
            }
        }
        unknown_members(key, "", &bsp.extra, &mut out);
    }
    if let Some(dev) = state.device() {
        let key = "device.json";
        for (d, lenient) in disks(state) {
            let Some(why) = disk_problem(d) else { continue };
            // disks_v3 is lenient in Pantavisor too: a type it does not
            // know is skipped there.
            if lenient && !pvstate::model::DISK_TYPES.contains(&d.kind.as_str()) {
                continue;
            }
            out.push(format!("{key}: disk \"{}\": {why}", d.name));
        }
        if dev.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
            out.push(format!(
                "{key}: volumes: volumes for the daemon itself are not supported"
            ));
        }
        for g in dev.groups.iter().flatten() {
            unknown_members(key, &format!("groups.{}.", g.name), &g.extra, &mut out);
        }
        unknown_members(key, "", &dev.extra, &mut out);
    }
    out.extend(crate::xconnect::problems(state));
    out
}

/// Where volume `vol` of `container` with persistence `p` lives when its
/// storage entry names `disk` (or a default disk exists): under the disk's
/// directory, laid out as `disks/` on storage is. `None` when it is not on
/// a disk.
pub fn disk_volume_dir(
    storage: &Path,
    state: &State,
    rev: &str,
    container: &str,
    vol: &str,
    disk: Option<&str>,
    p: Persistence,
) -> Option<PathBuf> {
    let d = match disk {
        Some(name) => find_disk(state, name)?,
        None => default_disk(state)?,
    };
    if disk_problem(d).is_some() {
        return None;
    }
    let base = storage.join("pv/volume-disk").join(&d.name);
    Some(match p {
        Persistence::Permanent => base.join("perm").join(container).join(vol),
        Persistence::Revision => base.join("rev").join(rev).join(container).join(vol),
        Persistence::Boot | Persistence::BuiltIn => base.join("boot").join(container).join(vol),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(edit: impl FnOnce(&mut Map<String, Value>)) -> State {
        let mut v = json!({
            "#spec": "pantavisor-service-system@1",
            "bsp/run.json": {"linux": "kernel.img", "initrd": "pantavisor"},
            "bsp/kernel.img": "0".repeat(64),
            "bsp/pantavisor": "1".repeat(64),
            "app/run.json": {"#spec": "service-manifest-run@1", "name": "app", "type": "oci",
                "config": "config.json", "root-volume": "root.squashfs",
                "storage": {"lxc-overlay": {"persistence": "boot"}}},
            "app/config.json": {},
            "app/root.squashfs": "2".repeat(64),
        });
        edit(v.as_object_mut().unwrap());
        State::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn a_plain_state_is_honoured_whole() {
        assert_eq!(unsupported(&state(|_| {})), Vec::<String>::new());
    }

    #[test]
    fn each_member_not_acted_on_is_named() {
        let s = state(|m| {
            let run = m["app/run.json"].as_object_mut().unwrap();
            run.insert("drivers".into(), json!({"required": ["wifi"]}));
            run.insert("logs".into(), json!([{"file": "/var/log/x"}]));
            run.insert("exports".into(), json!(["mqtt"]));
            run.insert("services".into(), json!({"optional": [{"name": "dbus"}]}));
            run.insert("dev-log".into(), json!(true));
            run["storage"]["docker--data"] = json!({"persistence": "permanent", "disk": "secret"});
            m["bsp/run.json"]["fit"] = json!("fit.img");
            m.insert("bsp/fit.img".into(), json!("3".repeat(64)));
            m.insert(
                "device.json".into(),
                json!({"disks": [
                    {"name": "secret", "type": "dm-crypt-versatile", "path": "/x,1M,key"},
                    {"name": "swap", "type": "swap-disk", "provision": "zram"},
                    {"name": "plain", "type": "volume-disk"}],
                 "disks_v3": [{"name": "future", "type": "quantum-disk"}],
                 "volumes": {"pv": {"persistence": "permanent"}}}),
            );
        });
        let got = unsupported(&s);
        for needle in [
            "app/run.json: drivers: managed drivers",
            "app/run.json: logs: container loggers",
            "app/run.json: exports: not supported yet",
            "app/run.json: services.optional: \"dbus\": no target",
            "app/run.json: dev-log: not a member this daemon acts on",
            "app/run.json: storage.docker--data.disk: \"secret\": dm-crypt-versatile: dm-crypt disks",
            "bsp/run.json: fit: not supported",
            "device.json: disk \"secret\": dm-crypt-versatile",
            "device.json: disk \"swap\": swap disks are not supported",
            "device.json: volumes: volumes for the daemon itself",
        ] {
            assert!(got.iter().any(|g| g.starts_with(needle)), "{needle}: {got:#?}");
        }
        // A directory disk is fine; an unknown type in disks_v3 is skipped
        // as Pantavisor does.
        assert!(
            !got.iter()
                .any(|g| g.contains("\"plain\"") || g.contains("future")),
            "{got:#?}"
        );
    }

    #[test]
    fn volumes_on_a_directory_disk_live_under_it() {
        let s = state(|m| {
            m.insert(
                "device.json".into(),
                json!({"disks": [{"name": "data", "type": "volume-disk", "aliases": ["big"]}]}),
            );
        });
        let dir = |disk, p| disk_volume_dir(Path::new("/storage"), &s, "3", "app", "v", disk, p);
        assert_eq!(
            dir(Some("big"), Persistence::Permanent).unwrap(),
            Path::new("/storage/pv/volume-disk/data/perm/app/v")
        );
        assert_eq!(
            dir(Some("data"), Persistence::Revision).unwrap(),
            Path::new("/storage/pv/volume-disk/data/rev/3/app/v")
        );
        assert_eq!(dir(None, Persistence::Permanent), None);
    }
}
