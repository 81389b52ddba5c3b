//! Pantavisor's LXC containers (`run.json` `type: "lxc"`): the common keys of
//! their `lxc.container.conf` translated into the OCI config our runtime runs.
//! A key we cannot honour is an error for that container, never ignored
//! silently; keys that only concern LXC's own plumbing are accepted.

use serde_json::{json, Map, Value};

use crate::bundle::DEFAULT_CAPS;

/// Keys that need nothing from us: our runtime already does what they ask
/// (proc/sys mounts, /dev, consoles) or they only concern LXC's logging.
const HANDLED_ELSEWHERE: &[&str] = &[
    "lxc.rootfs.path",
    "lxc.rootfs.options",
    "lxc.rootfs.mount",
    "lxc.tty.max",
    "lxc.pty.max",
    "lxc.log.file",
    "lxc.log.level",
    "lxc.console.path",
    "lxc.console.logfile",
    "lxc.autodev",
    "lxc.mount.auto",
    "lxc.arch",
    "lxc.net.0.flags",
];

fn cap_name(lxc: &str) -> String {
    format!("CAP_{}", lxc.trim().to_uppercase())
}

/// Split a command line on white space, keeping quoted parts together.
fn split_command(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for ch in s.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(ch);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_size(v: &str) -> Option<i64> {
    let v = v.trim();
    let (n, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1024),
        'm' | 'M' => (&v[..v.len() - 1], 1024 * 1024),
        'g' | 'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    n.parse::<i64>().ok().map(|n| n * mult)
}

/// A device cgroup rule: `a`, or `c 1:3 rwm`, `b *:* m`.
fn device_rule(v: &str, allow: bool) -> Result<Value, String> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let mut rule = Map::new();
    rule.insert("allow".into(), json!(allow));
    match parts.as_slice() {
        ["a"] => {
            rule.insert("type".into(), json!("a"));
        }
        [kind @ ("c" | "b" | "a"), numbers, access] => {
            rule.insert("type".into(), json!(kind));
            let (maj, min) = numbers
                .split_once(':')
                .ok_or(format!("device rule \"{v}\": expected MAJOR:MINOR"))?;
            if maj != "*" {
                rule.insert(
                    "major".into(),
                    json!(maj
                        .parse::<i64>()
                        .map_err(|_| format!("device rule \"{v}\""))?),
                );
            }
            if min != "*" {
                rule.insert(
                    "minor".into(),
                    json!(min
                        .parse::<i64>()
                        .map_err(|_| format!("device rule \"{v}\""))?),
                );
            }
            rule.insert("access".into(), json!(access));
        }
        _ => {
            return Err(format!(
                "device rule \"{v}\": expected \"a\" or \"c|b MAJOR:MINOR ACCESS\""
            ))
        }
    }
    Ok(Value::Object(rule))
}

/// Translate an LXC config of container `name` into an OCI config.
pub fn translate(name: &str, text: &str) -> Result<Value, String> {
    let mut args: Vec<String> = Vec::new();
    let mut env: Vec<String> = Vec::new();
    let mut cwd = "/".to_string();
    let (mut uid, mut gid) = (0i64, 0i64);
    let mut hostname = name.to_string();
    let mut mounts: Vec<Value> = Vec::new();
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let mut kept_caps: Option<Vec<String>> = None;
    let mut host_net = false;
    let mut host_ipc = false;
    let mut resources = Map::new();
    let mut devices: Vec<Value> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |m: String| format!("line {}: {m}", n + 1);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| at(format!("\"{line}\" is not KEY = VALUE")))?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "lxc.init.cmd" => args = split_command(value),
            "lxc.init.cwd" => cwd = value.to_string(),
            "lxc.init.uid" => uid = value.parse().map_err(|_| at(format!("{key}: not a number")))?,
            "lxc.init.gid" => gid = value.parse().map_err(|_| at(format!("{key}: not a number")))?,
            "lxc.environment" => env.push(value.to_string()),
            "lxc.uts.name" => hostname = value.to_string(),
            "lxc.mount.entry" => {
                let f: Vec<&str> = value.split_whitespace().collect();
                if f.len() < 4 {
                    return Err(at(format!("{key}: expected SOURCE TARGET TYPE OPTIONS")));
                }
                let (source, target, kind) = (f[0], f[1], f[2]);
                let options: Vec<&str> = f[3]
                    .split(',')
                    .filter(|o| !o.starts_with("create=") && *o != "optional" && !o.is_empty())
                    .collect();
                let is_bind = kind == "none" || options.iter().any(|o| *o == "bind" || *o == "rbind");
                // Pantavisor's volumes are at /volumes/<container>/<volume>.
                let prefix = format!("/volumes/{name}/");
                let source = match source.strip_prefix(&prefix) {
                    Some(vol) => vol.to_string(),
                    None => source.to_string(),
                };
                mounts.push(json!({
                    "destination": format!("/{}", target.trim_start_matches('/')),
                    "type": if is_bind { "bind" } else { kind },
                    "source": source,
                    "options": options,
                }));
            }
            "lxc.cap.drop" => {
                for c in value.split_whitespace() {
                    caps.retain(|x| *x != cap_name(c));
                }
            }
            "lxc.cap.keep" => {
                let list = kept_caps.get_or_insert_with(Vec::new);
                list.extend(value.split_whitespace().filter(|c| *c != "none").map(cap_name));
            }
            "lxc.net.0.type" | "lxc.network.type" => match value {
                "none" => host_net = true,
                "empty" => host_net = false,
                other => {
                    return Err(at(format!(
                        "{key} = {other}: only none (host network) and empty (own namespace) are supported"
                    )))
                }
            },
            "lxc.namespace.keep" => {
                for ns in value.split_whitespace() {
                    match ns {
                        "net" => host_net = true,
                        // Pantavisor's pvr keeps `user net ipc` by default.
                        "ipc" => host_ipc = true,
                        "user" => {}
                        other => return Err(at(format!("{key}: keeping the {other} namespace is not supported"))),
                    }
                }
            }
            "lxc.cgroup.memory.limit_in_bytes" | "lxc.cgroup2.memory.max" => {
                let v = parse_size(value).ok_or_else(|| at(format!("{key}: \"{value}\" is not a size")))?;
                resources.insert("memory".into(), json!({"limit": v}));
            }
            "lxc.cgroup.cpu.shares" => {
                let v: u64 = value.parse().map_err(|_| at(format!("{key}: not a number")))?;
                resources.insert("cpu".into(), json!({"shares": v}));
            }
            "lxc.cgroup.pids.max" | "lxc.cgroup2.pids.max" => {
                let v: i64 = value.parse().map_err(|_| at(format!("{key}: not a number")))?;
                resources.insert("pids".into(), json!({"limit": v}));
            }
            "lxc.cgroup.devices.allow" | "lxc.cgroup2.devices.allow" => devices.push(device_rule(value, true).map_err(at)?),
            "lxc.cgroup.devices.deny" | "lxc.cgroup2.devices.deny" => devices.push(device_rule(value, false).map_err(at)?),
            k if HANDLED_ELSEWHERE.contains(&k) => {}
            other => return Err(at(format!("unsupported LXC key {other}"))),
        }
    }
    if args.is_empty() {
        args.push("/sbin/init".into());
    }
    if let Some(keep) = kept_caps {
        caps = keep;
    }
    if !devices.is_empty() {
        resources.insert("devices".into(), json!(devices));
    }
    let mut namespaces = vec![json!({"type": "pid"})];
    if !host_ipc {
        namespaces.push(json!({"type": "ipc"}));
    }
    namespaces.extend([json!({"type": "uts"}), json!({"type": "mount"})]);
    if !host_net {
        namespaces.push(json!({"type": "network"}));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let mut linux = json!({"namespaces": namespaces});
    if !resources.is_empty() {
        linux["resources"] = Value::Object(resources);
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        },
        "root": {"path": "rootfs"},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PVR_STYLE: &str = "\
lxc.tty.max = 8
lxc.pty.max = 1024
lxc.cgroup.devices.allow = a
lxc.rootfs.path = overlayfs:/volumes/awconnect/root.squashfs:/volumes/awconnect/lxc-overlay/upper
lxc.init.cmd = /lib/systemd/systemd --log-level \"debug info\"
lxc.init.cwd = /opt/wifi-connect/
lxc.environment = PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
lxc.environment = LANG=C
lxc.mount.auto = proc sys:rw cgroup
lxc.mount.entry = /volumes/awconnect/docker--etc-NetworkManager-system-connections etc/NetworkManager/system-connections none bind,rw,create=dir 0 0
lxc.mount.entry = tmpfs run tmpfs rw,nodev,create=dir 0 0
lxc.cap.drop = sys_module mac_admin
lxc.cgroup.memory.limit_in_bytes = 64M
lxc.net.0.type = none
";

    #[test]
    fn translates_a_pvr_generated_config() {
        let v = translate("awconnect", PVR_STYLE).unwrap();
        assert_eq!(
            v["process"]["args"],
            json!(["/lib/systemd/systemd", "--log-level", "debug info"])
        );
        assert_eq!(v["process"]["cwd"], "/opt/wifi-connect/");
        assert_eq!(v["process"]["env"][1], "LANG=C");
        let mounts = v["mounts"].as_array().unwrap();
        assert_eq!(
            mounts[0]["source"],
            "docker--etc-NetworkManager-system-connections"
        );
        assert_eq!(
            mounts[0]["destination"],
            "/etc/NetworkManager/system-connections"
        );
        assert_eq!(mounts[0]["options"], json!(["bind", "rw"]));
        assert_eq!(mounts[1]["type"], "tmpfs");
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 * 1024 * 1024);
        assert_eq!(
            v["linux"]["resources"]["devices"][0],
            json!({"allow": true, "type": "a"})
        );
        // lxc.net.0.type = none: the host's network.
        assert!(!v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!({"type": "network"})));
    }

    #[test]
    fn unknown_or_unsupported_keys_are_errors() {
        let e = translate(
            "x",
            "lxc.init.cmd = /bin/sh\nlxc.apparmor.profile = unconfined\n",
        )
        .unwrap_err();
        assert_eq!(e, "line 2: unsupported LXC key lxc.apparmor.profile");
        let e = translate("x", "lxc.net.0.type = veth\n").unwrap_err();
        assert!(e.contains("only none (host network) and empty"), "{e}");
        assert!(translate("x", "just words\n")
            .unwrap_err()
            .contains("not KEY = VALUE"));
        assert!(translate("x", "lxc.cgroup.devices.allow = c x:3 rwm\n").is_err());
    }

    #[test]
    fn caps_keep_and_drop() {
        let v = translate("x", "lxc.cap.keep = net_admin sys_time\n").unwrap();
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            json!(["CAP_NET_ADMIN", "CAP_SYS_TIME"])
        );
        let v = translate("x", "lxc.cap.drop = net_raw\n").unwrap();
        assert!(!v["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .contains(&json!("CAP_NET_RAW")));
    }
}
