//! The OCI bundle of a container: its `config.json` from the state, completed
//! with what the runtime decides (root, default mounts and devices, volumes,
//! the control socket, the cgroup) and written to the bundle directory.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The capabilities a container gets unless its config names others (the
/// usual default set of container runtimes).
pub(crate) const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub struct BundleInput<'a> {
    pub name: &'a str,
    /// The container's `config.json` from the state.
    pub config: &'a Value,
    /// The merged root filesystem.
    pub rootfs: &'a Path,
    /// Volume name (storage key) -> directory on the host.
    pub volumes: &'a [(String, PathBuf)],
    /// The run.json `volumes` (read-only images), name -> where mounted:
    /// each appears read-only at `/volumes/NAME` in the container, and a
    /// config mount may name it as its source too.
    pub images: &'a [(String, PathBuf)],
    /// cgroup path, e.g. /pantavisor/edge-app.
    pub cgroup: &'a str,
}

fn default_mounts(netns: bool) -> Vec<Value> {
    let mut m = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    // A container in the host's network namespace cannot mount a new sysfs.
    m.push(if netns {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]})
    } else {
        json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    });
    m.push(json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]}));
    m
}

fn default_devices() -> Vec<Value> {
    [("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)]
        .iter()
        .map(|(p, maj, min)| json!({"path": p, "type": "c", "major": maj, "minor": min, "fileMode": 0o666, "uid": 0, "gid": 0}))
        .collect()
}

/// A `linux.devices` entry given by path only (as pvcompose writes them):
/// its type, numbers, mode and owner are the host node's, now — device
/// numbers are the running kernel's business, not the image's.
fn host_device(container: &str, d: &mut Value) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if d.get("major").is_some() && d.get("minor").is_some() && d.get("type").is_some() {
        return Ok(());
    }
    let path = d["path"].as_str().unwrap_or("").to_string();
    let meta = std::fs::metadata(&path).map_err(|e| {
        Error::container(
            container,
            format!("device {path:?} is not on this device ({e}); is its driver loaded?"),
        )
    })?;
    let kind = if meta.file_type().is_char_device() {
        "c"
    } else if meta.file_type().is_block_device() {
        "b"
    } else {
        return Err(Error::container(
            container,
            format!("{path:?} is not a device node"),
        ));
    };
    let rdev = meta.rdev();
    d["type"] = json!(kind);
    d["major"] = json!(nix::sys::stat::major(rdev));
    d["minor"] = json!(nix::sys::stat::minor(rdev));
    if d.get("fileMode").is_none() {
        d["fileMode"] = json!(meta.mode() & 0o7777);
    }
    if d.get("uid").is_none() {
        d["uid"] = json!(meta.uid());
    }
    if d.get("gid").is_none() {
        d["gid"] = json!(meta.gid());
    }
    Ok(())
}

/// The complete runtime spec.
pub fn spec(input: &BundleInput) -> Result<Value> {
    let cfg = input.config;
    if !cfg.is_object() {
        return Err(Error::container(
            input.name,
            "config.json is not a JSON object",
        ));
    }
    let mut spec = cfg.clone();
    spec["ociVersion"] = json!("1.0.2");
    spec["root"] = json!({"path": input.rootfs, "readonly": false});
    if spec.get("hostname").is_none() {
        spec["hostname"] = json!(input.name);
    }
    let process = spec
        .get_mut("process")
        .filter(|p| p.is_object())
        .ok_or_else(|| Error::container(input.name, "config.json has no process"))?;
    if process
        .get("args")
        .and_then(Value::as_array)
        .map_or(true, |a| a.is_empty())
    {
        return Err(Error::container(
            input.name,
            "config.json: process.args is empty",
        ));
    }
    let default_caps = process.get("capabilities").is_none();
    if default_caps {
        let caps = json!(DEFAULT_CAPS);
        process["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    }
    if process.get("cwd").is_none() {
        process["cwd"] = json!("/");
    }
    if process.get("user").is_none() {
        process["user"] = json!({"uid": 0, "gid": 0});
    }
    let namespaces = spec["linux"]["namespaces"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| {
            ["pid", "ipc", "uts", "mount", "network"]
                .iter()
                .map(|t| json!({"type": t}))
                .collect()
        });
    let netns = namespaces.iter().any(|n| n["type"] == "network");
    if default_caps && !netns {
        // On the host's network a container is there to manage it (network
        // managers, VPNs, modems): it may configure interfaces and routes.
        for set in ["bounding", "effective", "permitted"] {
            if let Some(list) = spec["process"]["capabilities"][set].as_array_mut() {
                list.push(json!("CAP_NET_ADMIN"));
            }
        }
    }
    let mut mounts = default_mounts(netns);
    // Volumes: their names resolve to directories on storage (or tmpfs).
    for m in spec["mounts"].as_array().cloned().unwrap_or_default() {
        let mut m = m;
        if m["type"] == "bind" {
            if let Some(src) = m["source"].as_str() {
                if !src.starts_with('/') {
                    let dir = input
                        .volumes
                        .iter()
                        .chain(input.images)
                        .find(|(k, _)| k == src)
                        .map(|(_, d)| d.clone())
                        .ok_or_else(|| {
                            Error::container(
                                input.name,
                                format!("mount source \"{src}\" is no volume of this container"),
                            )
                        })?;
                    m["source"] = json!(dir);
                }
            }
        }
        mounts.push(m);
    }
    for (name, dir) in input.images {
        mounts.push(json!({
            "destination": format!("/volumes/{name}"),
            "type": "bind",
            "source": dir,
            "options": ["rbind", "ro", "nosuid", "nodev"],
        }));
    }
    spec["mounts"] = json!(mounts);
    let linux = spec["linux"].as_object().cloned().unwrap_or_default();
    let mut linux = Value::Object(linux);
    linux["namespaces"] = json!(namespaces);
    linux["cgroupsPath"] = json!(input.cgroup);
    if let Some(list) = linux.get_mut("devices").and_then(Value::as_array_mut) {
        let mut allow = Vec::new();
        for d in list.iter_mut() {
            host_device(input.name, d)?;
            allow.push(json!({"allow": true, "type": d["type"], "major": d["major"], "minor": d["minor"], "access": "rwm"}));
        }
        // The cgroup device rules (v1; v2 as libcontainer is built here
        // does not filter) let the container use what it was given.
        if !linux["resources"].is_object() {
            linux["resources"] = json!({});
        }
        let rules = &mut linux["resources"]["devices"];
        if !rules.is_array() {
            *rules = json!([]);
        }
        if let Some(rules) = rules.as_array_mut() {
            rules.extend(allow);
        }
    } else {
        linux["devices"] = json!(default_devices());
    }
    if linux.get("maskedPaths").is_none() {
        linux["maskedPaths"] = json!([
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/sys/firmware"
        ]);
    }
    if linux.get("seccomp").is_some() {
        // Built without libseccomp: a profile would be silently ignored.
        return Err(Error::container(
            input.name,
            "config.json asks for a seccomp profile, which this build cannot enforce",
        ));
    }
    spec["linux"] = linux;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_a_composed_config() {
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/app"], "env": ["A=1"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "terminal": false},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/var/lib/app", "type": "bind", "source": "docker--var-lib-app", "options": ["rbind", "rw"]}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        });
        let vols = vec![(
            "docker--var-lib-app".to_string(),
            PathBuf::from("/storage/disks/perm/app/docker--var-lib-app"),
        )];
        let s = spec(&BundleInput {
            name: "app",
            config: &config,
            rootfs: Path::new("/run/pv/app/rootfs"),
            volumes: &vols,
            images: &[(
                "data.squashfs".into(),
                PathBuf::from("/run/pv/app/images/data.squashfs"),
            )],
            cgroup: "/pantavisor/app",
        })
        .unwrap();
        assert_eq!(s["root"]["path"], "/run/pv/app/rootfs");
        assert_eq!(s["linux"]["cgroupsPath"], "/pantavisor/app");
        let mounts = s["mounts"].as_array().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m["source"] == "/storage/disks/perm/app/docker--var-lib-app"));
        // A run.json volume: read-only at /volumes/NAME.
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/volumes/data.squashfs"
                && m["source"] == "/run/pv/app/images/data.squashfs"
                && m["options"].as_array().unwrap().contains(&json!("ro"))));
        // The control socket is bound by the container's mount, not the spec.
        assert!(!mounts
            .iter()
            .any(|m| m["destination"] == "/pantavisor/pv-ctrl"));
        // No network namespace asked: /sys is bound from the host.
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/sys" && m["type"] == "bind"));
        assert!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len()
                > 5
        );
        // ...and may manage the host's network.
        assert!(s["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap()
            .contains(&json!("CAP_NET_ADMIN")));
    }

    #[test]
    fn host_devices_get_their_numbers_and_a_cgroup_rule() {
        fn input(c: &Value) -> BundleInput<'_> {
            BundleInput {
                name: "modbus",
                config: c,
                rootfs: Path::new("/r"),
                volumes: &[],
                images: &[],
                cgroup: "/p/modbus",
            }
        }
        let c = json!({"process": {"args": ["/x"]}, "linux": {"devices": [{"path": "/dev/null"}, {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5}]}});
        let s = spec(&input(&c)).unwrap();
        let null = &s["linux"]["devices"][0];
        assert_eq!(
            (
                null["type"].as_str(),
                null["major"].as_u64(),
                null["minor"].as_u64()
            ),
            (Some("c"), Some(1), Some(3))
        );
        assert_eq!(null["fileMode"], 0o666);
        let rules = s["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0],
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        );
        for (path, why) in [
            ("/dev/ttyNOPE9", "is not on this device"),
            ("/etc/hostname", "not a device node"),
        ] {
            let c = json!({"process": {"args": ["/x"]}, "linux": {"devices": [{"path": path}]}});
            let e = spec(&input(&c)).unwrap_err().to_string();
            assert!(e.contains(why), "{path}: {e}");
        }
    }

    #[test]
    fn refuses_unknown_volumes_and_seccomp() {
        let base = json!({"process": {"args": ["/x"]}, "mounts": [{"destination": "/d", "type": "bind", "source": "nope"}]});
        let input = |c| BundleInput {
            name: "a",
            config: c,
            rootfs: Path::new("/r"),
            volumes: &[],
            images: &[],
            cgroup: "/p/a",
        };
        assert!(spec(&input(&base))
            .unwrap_err()
            .to_string()
            .contains("no volume"));
        let sec = json!({"process": {"args": ["/x"]}, "linux": {"seccomp": {}}});
        assert!(spec(&input(&sec))
            .unwrap_err()
            .to_string()
            .contains("seccomp"));
        let empty = json!({"process": {"args": []}});
        assert!(spec(&input(&empty))
            .unwrap_err()
            .to_string()
            .contains("args is empty"));
    }
}
