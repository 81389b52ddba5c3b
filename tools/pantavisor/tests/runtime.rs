//! The daemon in appengine mode, on real busybox containers composed by the
//! composer: groups, status goals, recovery, the control socket, persistence
//! and a clean stop. Needs root.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

const DEVICE: &str = r#"{"groups": [
  {"name": "data", "status_goal": "MOUNTED", "restart_policy": "system", "timeout": 10},
  {"name": "root", "status_goal": "STARTED", "restart_policy": "system", "timeout": 10},
  {"name": "platform", "status_goal": "STARTED", "restart_policy": "system", "timeout": TIMEOUT},
  {"name": "app", "status_goal": "STARTED", "restart_policy": "container", "timeout": 10}]}"#;

fn gateway_with_groups(manifest: &str, names: &[&str], platform_timeout: u64) -> Gateway {
    gateway_in(&format!("device: device.json\n{manifest}"), names, |dir| {
        fs::write(
            dir.join("device.json"),
            DEVICE.replace("TIMEOUT", &platform_timeout.to_string()),
        )
        .unwrap();
    })
}

#[test]
fn four_groups_come_up_in_order_and_ready_blocks_the_next() {
    let manifest = r#"
containers:
  vol: {rootfs: rootfs/vol, group: data, status_goal: MOUNTED}
  net: {rootfs: rootfs/net, group: root, args: [/bin/sh, -c, "echo net up; exec sleep 1000"]}
  broker: {rootfs: rootfs/broker, group: platform, status_goal: READY, args: [/bin/sh, -c, "sleep 2; /usr/bin/pvcontrol signal ready; exec sleep 1000"]}
  edge: {rootfs: rootfs/edge, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [vol, net, broker, edge]
"#;
    let mut g = gateway_with_groups(manifest, &["vol", "net", "broker", "edge"], 30);
    g.start();
    g.wait_status("broker", "STARTED", Duration::from_secs(10));
    // The app group waits for the READY goal of the platform group.
    assert_eq!(g.status("edge"), "INSTALLED");
    assert_eq!(g.status("vol"), "MOUNTED");
    assert_eq!(g.status("net"), "STARTED");
    g.wait_status("broker", "READY", Duration::from_secs(10));
    g.wait_status("edge", "STARTED", Duration::from_secs(10));
    let log = g.daemon_log();
    let ready = log_times(&log, "broker: READY")[0];
    let edge = log_times(&log, "edge: started")[0];
    let net = log_times(&log, "net: started")[0];
    let broker = log_times(&log, "broker: started")[0];
    assert!(
        net <= broker && broker < ready && ready <= edge,
        "order: net {net} broker {broker} ready {ready} edge {edge}"
    );
    assert!(
        ready - broker >= 1.5,
        "READY came {}s after start",
        ready - broker
    );
    let (code, groups) = g.request("GET", "/groups", "");
    assert_eq!(code, 200);
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["data", "root", "platform", "app"]);
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_container_that_never_signals_times_out_and_the_next_group_starts() {
    let manifest = r#"
containers:
  net: {rootfs: rootfs/net, group: root, args: [/bin/sh, -c, "exec sleep 1000"]}
  mute: {rootfs: rootfs/mute, group: platform, status_goal: READY, args: [/bin/sh, -c, "exec sleep 1000"]}
  edge: {rootfs: rootfs/edge, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [net, mute, edge]
"#;
    let mut g = gateway_with_groups(manifest, &["net", "mute", "edge"], 3);
    g.start();
    g.wait_status("edge", "STARTED", Duration::from_secs(15));
    assert_eq!(g.status("mute"), "STARTED");
    let log = g.daemon_log();
    let mute = log_times(&log, "mute: started")[0];
    let edge = log_times(&log, "edge: started")[0];
    assert!(
        edge - mute >= 2.8,
        "edge started {}s after mute; the group timeout is 3s",
        edge - mute
    );
    assert!(log.contains("group platform: timeout"), "{log}");
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_crashing_container_restarts_with_backoff_and_others_keep_running() {
    let manifest = r#"
containers:
  steady: {rootfs: rootfs/steady, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
  crasher:
    rootfs: rootfs/crasher
    group: app
    args: [/bin/sh, -c, "sleep 1; exit 1"]
    auto_recovery: {policy: always, retry_delay: 1, backoff_factor: 2, max_retries: 4, backoff_policy: never}
core: [steady, crasher]
"#;
    let mut g = gateway_with_groups(manifest, &["steady", "crasher"], 10);
    g.start();
    g.wait_status("steady", "STARTED", Duration::from_secs(10));
    let steady_pid = g.container("steady")["pid"].as_i64().unwrap();
    // 5 runs of 1 s and delays of 1, 2, 4, 8 s: about 20 s.
    let done = wait_for(Duration::from_secs(40), || {
        let c = g.container("crasher");
        (c["restarts"] == 4 && c["status"] == "STOPPED").then_some(c)
    });
    let log = g.daemon_log();
    assert!(
        done.is_some(),
        "crasher did not end stopped after 4 restarts:\n{log}"
    );
    let exits = log_times(&log, "crasher: exited with status 1 after");
    let starts = log_times(&log, "crasher: started");
    assert_eq!((exits.len(), starts.len()), (5, 5), "{log}");
    for (n, want) in [1.0, 2.0, 4.0, 8.0].iter().enumerate() {
        let delay = starts[n + 1] - exits[n];
        assert!(
            (delay - want).abs() < 0.5,
            "restart {} after {delay:.2}s, expected {want}s",
            n + 1
        );
    }
    assert!(
        log.contains("4 retries used (backoff_policy never), left stopped"),
        "{log}"
    );
    // The other container was never touched.
    assert_eq!(g.container("steady")["pid"].as_i64().unwrap(), steady_pid);
    assert_eq!(g.container("steady")["restarts"], 0);
    assert_eq!(g.stop(), 0);
}

#[test]
fn stop_start_restart_through_the_socket_and_403_for_system() {
    let manifest = r#"
containers:
  sys: {rootfs: rootfs/sys, group: platform, args: [/bin/sh, -c, "exec sleep 1000"]}
  app: {rootfs: rootfs/app, group: app, args: [/bin/sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]}
core: [sys, app]
"#;
    let mut g = gateway_with_groups(manifest, &["sys", "app"], 10);
    g.start();
    g.wait_status("app", "STARTED", Duration::from_secs(10));
    let pid1 = g.container("app")["pid"].as_i64().unwrap();
    let (code, body) = g.request("PUT", "/containers/app", r#"{"action":"stop"}"#);
    assert_eq!(code, 200, "{body}");
    g.wait_status("app", "STOPPED", Duration::from_secs(15));
    let (code, _) = g.request("PUT", "/containers/app", r#"{"action":"start"}"#);
    assert_eq!(code, 200);
    g.wait_status("app", "STARTED", Duration::from_secs(10));
    let pid2 = g.container("app")["pid"].as_i64().unwrap();
    assert_ne!(pid1, pid2);
    let (code, _) = g.request("PUT", "/containers/app", r#"{"action":"restart"}"#);
    assert_eq!(code, 200);
    let pid3 = wait_for(Duration::from_secs(15), || {
        let c = g.container("app");
        (c["status"] == "STARTED" && c["pid"].as_i64() != Some(pid2))
            .then(|| c["pid"].as_i64().unwrap())
    });
    assert!(
        pid3.is_some(),
        "restart gave no new process:\n{}",
        g.daemon_log()
    );
    // A system container cannot be stopped or restarted on its own.
    let sys_pid = g.container("sys")["pid"].clone();
    for action in ["stop", "restart", "start"] {
        let (code, body) = g.request(
            "PUT",
            "/containers/sys",
            &format!(r#"{{"action":"{action}"}}"#),
        );
        assert_eq!(code, 403, "{action}: {body}");
    }
    assert_eq!(g.container("sys")["pid"], sys_pid);
    let (code, _) = g.request("PUT", "/containers/ghost", r#"{"action":"stop"}"#);
    assert_eq!(code, 404);
    let (code, _) = g.request("PUT", "/containers/app", r#"{"action":"explode"}"#);
    assert_eq!(code, 400);
    // The same through pvcontrol.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pvcontrol"))
        .arg("--socket")
        .arg(&g.socket)
        .args(["containers", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    // Pantavisor's pvcontrol verbs: steps, objects, conf, cmd, logs.
    let pvcontrol = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pvcontrol"))
            .arg("-s")
            .arg(&g.socket)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = pvcontrol(&["steps", "ls"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"0\""), "{out}");
    let (code, out, _) = pvcontrol(&["steps", "show-progress", "current"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"status\""), "{out}");
    let (code, out, _) = pvcontrol(&["steps", "get", "current"]);
    assert_eq!(code, 0);
    let state: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = state["app/root.squashfs"].as_str().unwrap().to_string();
    let (code, out, _) = pvcontrol(&["objects", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id), "{out}");
    let object = std::process::Command::new(env!("CARGO_BIN_EXE_pvcontrol"))
        .arg("-s")
        .arg(&g.socket)
        .args(["objects", "get", &id])
        .output()
        .unwrap();
    assert!(object.status.success());
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&object.stdout)), id);
    let (code, out, _) = pvcontrol(&["conf", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains("update.goals_timeout"), "{out}");
    let (code, out, _) = pvcontrol(&["logs"]);
    assert_eq!(code, 0);
    assert!(out.contains("revision 0"), "{out}");
    let (code, _, err) = pvcontrol(&["cmd", "run"]);
    assert_eq!(code, 2);
    assert!(err.contains("usage: pvcontrol cmd run REV"), "{err}");
    let (code, _, err) = pvcontrol(&["cmd", "run", "locals/nosuch"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(g.stop(), 0);
}

#[test]
fn only_mgmt_containers_may_use_more_than_signal() {
    let manifest = r#"
containers:
  plain:
    rootfs: rootfs/plain
    group: app
    status_goal: READY
    args: [/bin/sh, -c, "/usr/bin/pvcontrol containers ls; echo rc=$?; /usr/bin/pvcontrol signal ready; echo rc=$?; exec sleep 1000"]
  boss:
    rootfs: rootfs/boss
    group: app
    roles: [mgmt]
    args: [/bin/sh, -c, "/usr/bin/pvcontrol containers ls; echo rc=$?; exec sleep 1000"]
core: [plain, boss]
"#;
    let mut g = gateway_with_groups(manifest, &["plain", "boss"], 10);
    g.start();
    g.wait_status("plain", "READY", Duration::from_secs(10));
    let plain = wait_for(Duration::from_secs(5), || {
        let l = g.container_log("plain");
        (l.matches("rc=").count() >= 2).then_some(l)
    })
    .unwrap_or_else(|| g.container_log("plain"));
    assert!(
        plain.contains("pvcontrol: 403") && plain.contains("no mgmt role"),
        "{plain}"
    );
    assert!(
        plain.contains("rc=1\n") && plain.contains("rc=0\n"),
        "{plain}"
    );
    let boss = wait_for(Duration::from_secs(5), || {
        let l = g.container_log("boss");
        l.contains("rc=").then_some(l)
    })
    .unwrap_or_default();
    assert!(
        boss.contains("\"name\":\"plain\"") && boss.contains("rc=0"),
        "{boss}"
    );
    // The host side (not in a container) may call anything; a signal from it
    // is refused since it names no container.
    let (code, _) = g.request("POST", "/signal", r#"{"type":"ready"}"#);
    assert_eq!(code, 400);
    assert_eq!(g.stop(), 0);
}

#[test]
fn permanent_volumes_survive_a_restart_and_boot_ones_do_not() {
    let script =
        "cat /data/f 2>/dev/null || echo no-data; cat /scratch/f 2>/dev/null || echo no-scratch; \
                  date > /data/f; date > /scratch/f; echo written; exec sleep 1000";
    let manifest = format!(
        r#"
containers:
  keeper: {{rootfs: rootfs/keeper, group: app, volumes: ["/data:permanent", "/scratch:boot"], args: [/bin/sh, -c, "{script}"]}}
core: [keeper]
"#
    );
    let mut g = gateway_with_groups(&manifest, &["keeper"], 10);
    g.start();
    wait_for(Duration::from_secs(10), || {
        g.container_log("keeper").contains("written").then_some(())
    })
    .expect("first run wrote its files");
    assert_eq!(g.stop(), 0);
    let first = g.container_log("keeper");
    assert!(
        first.contains("no-data") && first.contains("no-scratch"),
        "{first}"
    );
    let stored = g.storage.join("disks/perm/keeper/docker--data/f");
    assert!(stored.is_file(), "permanent volume lives on storage");
    let written = fs::read_to_string(&stored).unwrap();
    g.start();
    wait_for(Duration::from_secs(10), || {
        (g.container_log("keeper").matches("written").count() == 2).then_some(())
    })
    .expect("second run");
    assert_eq!(g.stop(), 0);
    let second = g.container_log("keeper");
    let second_run = &second[first.len()..];
    assert!(
        second_run.starts_with(&written),
        "permanent data lost: {second_run:?} vs {written:?}"
    );
    assert!(
        second_run.contains("no-scratch"),
        "boot volume survived: {second_run}"
    );
}

#[test]
fn run_json_volumes_are_mounted_read_only_at_volumes() {
    let script = "cat /volumes/data.squashfs/hello; \
                  touch /volumes/data.squashfs/x 2>/dev/null && echo writable || echo read-only; \
                  exec sleep 1000";
    let manifest = format!(
        r#"
containers:
  reader: {{rootfs: rootfs/reader, group: app, args: [/bin/sh, -c, "{script}"]}}
core: [reader]
"#
    );
    let g = gateway_with_groups(&manifest, &["reader"], 10);
    // An extra image for the container, as a pvr template would add it.
    g.edit_state(|state, objects| {
        let tree = g.tmp.path().join("data-tree");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("hello"), "hello from an extra volume\n").unwrap();
        let image = g.tmp.path().join("data.squashfs");
        let out = std::process::Command::new("mksquashfs")
            .arg(&tree)
            .arg(&image)
            .args(["-noappend", "-quiet", "-no-progress"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let store = pvstate::ObjectStore::open(objects).unwrap();
        let (id, _) = store.adopt(&image).unwrap();
        state.insert(
            "reader/data.squashfs".into(),
            serde_json::json!(id.to_string()),
        );
        state["reader/run.json"]["volumes"] = serde_json::json!(["data.squashfs"]);
    });
    let mut g = g;
    g.start();
    let log = wait_for(Duration::from_secs(10), || {
        let log = g.container_log("reader");
        log.contains("read-only").then_some(log)
    })
    .unwrap_or_else(|| panic!("{}\n{}", g.container_log("reader"), g.daemon_log()));
    assert!(log.contains("hello from an extra volume"), "{log}");
    assert!(!log.contains("writable"), "{log}");
    assert_eq!(g.stop(), 0);
}

#[test]
fn volumes_on_a_directory_disk_live_under_it() {
    let script =
        "cat /data/f 2>/dev/null || echo no-data; cat /tmp2/f 2>/dev/null || echo no-tmp; \
                  date > /data/f; date > /tmp2/f; echo written; exec sleep 1000";
    let manifest = format!(
        r#"device: device.json
containers:
  keeper: {{rootfs: rootfs/keeper, group: app, volumes: ["/data:permanent@big", "/tmp2:boot@big"], args: [/bin/sh, -c, "{script}"]}}
core: [keeper]
"#
    );
    let mut g = gateway_in(&manifest, &["keeper"], |dir| {
        let mut device: serde_json::Value =
            serde_json::from_str(&DEVICE.replace("TIMEOUT", "10")).unwrap();
        // Pantavisor's bind-mount backend: a volume-disk without provision.
        device["disks"] = serde_json::json!([
            {"name": "bulk", "aliases": ["big"], "type": "volume-disk"}
        ]);
        fs::write(dir.join("device.json"), device.to_string()).unwrap();
    });
    g.start();
    wait_for(Duration::from_secs(10), || {
        g.container_log("keeper").contains("written").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", g.daemon_log()));
    assert_eq!(g.stop(), 0);
    let disk = g.storage.join("pv/volume-disk/bulk");
    let perm = disk.join("perm/keeper/docker--data/f");
    assert!(perm.is_file(), "the permanent volume is on the disk");
    assert!(disk.join("boot/keeper/docker--tmp2/f").is_file());
    assert!(!g.storage.join("disks/perm/keeper/docker--data").exists());
    let written = fs::read_to_string(&perm).unwrap();
    g.start();
    wait_for(Duration::from_secs(10), || {
        (g.container_log("keeper").matches("written").count() == 2).then_some(())
    })
    .expect("second run");
    assert_eq!(g.stop(), 0);
    let log = g.container_log("keeper");
    let second = &log[log.find("written").unwrap() + "written".len()..];
    assert!(
        second.contains(written.trim()),
        "permanent data kept: {second}"
    );
    assert!(
        second.contains("no-tmp"),
        "a boot volume starts empty: {second}"
    );
}

#[test]
fn config_levels_and_their_origins_show_in_get_config() {
    let manifest = r#"
containers:
  app: {rootfs: rootfs/app, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [app]
"#;
    let mut g = gateway_with_groups(manifest, &["app"], 10);
    // pv.conf: ours and Pantavisor's names, an OEM name, an unknown key.
    fs::write(
        g.tmp.path().join("pantavisor.config"),
        "stop.timeout=3\nupdate.goals_timeout=50\nPV_OEM_NAME=acme\nfrobnicate=1\n\
         PV_UPDATER_COMMIT_DELAY=3\nremote.token=hunter2\n",
    )
    .unwrap();
    // The revision's OEM configuration (acme/default.config).
    g.edit_state(|state, objects| {
        let text = g.tmp.path().join("oem.config");
        fs::write(
            &text,
            "PV_UPDATER_GOALS_TIMEOUT=40\nPV_SECUREBOOT_MODE=disabled\n",
        )
        .unwrap();
        let (id, _) = pvstate::ObjectStore::open(objects)
            .unwrap()
            .adopt(&text)
            .unwrap();
        state.insert(
            "acme/default.config".into(),
            serde_json::json!(id.to_string()),
        );
    });
    // Environment, then user metadata, above the OEM level.
    g.env.push(("PV_UPDATER_COMMIT_DELAY".into(), "4".into()));
    g.env.push(("PH_CREDS_HOST".into(), "hub.example".into()));
    let meta = g.storage.join("config/user-meta");
    fs::create_dir_all(&meta).unwrap();
    fs::write(meta.join("pv_updater_commit_delay"), "6").unwrap();
    g.start();
    g.wait_status("app", "STARTED", Duration::from_secs(10));
    let (code, config) = g.request("GET", "/config", "");
    assert_eq!(code, 200, "{config}");
    let key = |k: &str| {
        config["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == k)
            .cloned()
            .unwrap_or_else(|| panic!("{k}: {config}"))
    };
    assert_eq!(key("update.goals_timeout")["value"], "40");
    assert_eq!(key("update.goals_timeout")["modified"], "oem config");
    assert_eq!(
        key("update.goals_timeout")["pantavisor"],
        "PV_UPDATER_GOALS_TIMEOUT"
    );
    assert_eq!(key("update.commit_delay")["value"], "6");
    assert_eq!(key("update.commit_delay")["modified"], "user meta");
    assert_eq!(key("stop.timeout")["modified"], "pv.conf");
    assert_eq!(key("cgroup.parent")["modified"], "flag");
    assert_eq!(key("update.signatures")["value"], "lenient");
    assert_eq!(key("update.signatures")["modified"], "default");
    assert_eq!(key("remote.token")["value"], "(set)");
    assert!(!config.to_string().contains("hunter2"));
    let unused = config["unused"].as_array().unwrap();
    let why = |k: &str| {
        unused
            .iter()
            .find(|u| u["key"] == k)
            .map(|u| format!("{} {}", u["level"], u["why"]))
            .unwrap_or_default()
    };
    assert!(why("frobnicate").contains("unknown key"), "{config}");
    assert!(
        why("PH_CREDS_HOST").contains("env") && why("PH_CREDS_HOST").contains("Pantavisor key")
    );
    assert!(why("PV_SECUREBOOT_MODE").contains("oem config"), "{config}");
    // And the daemon said so at start.
    let log = g.daemon_log();
    assert!(
        log.contains("config: frobnicate (pv.conf): unknown key; not used"),
        "{log}"
    );
    assert!(
        log.contains("OEM configuration acme/default.config applied"),
        "{log}"
    );
    assert_eq!(g.stop(), 0);
}

#[test]
fn sigterm_leaves_no_mount_process_or_cgroup() {
    let manifest = r#"
containers:
  a: {rootfs: rootfs/a, group: root, args: [/bin/sh, -c, "exec sleep 1000"]}
  b: {rootfs: rootfs/b, group: app, volumes: ["/data:revision"], args: [/bin/sh, -c, "exec sleep 1000"]}
  c: {rootfs: rootfs/c, group: data, status_goal: MOUNTED}
core: [a, b, c]
"#;
    let mut g = gateway_with_groups(manifest, &["a", "b", "c"], 10);
    g.start();
    g.wait_status("b", "STARTED", Duration::from_secs(10));
    let pids: Vec<i64> = ["a", "b"]
        .iter()
        .map(|n| g.container(n)["pid"].as_i64().unwrap())
        .collect();
    let cgroup_dirs: Vec<std::path::PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join(&g.cgroup))
        .filter(|p| p.exists())
        .collect();
    assert!(
        !cgroup_dirs.is_empty(),
        "containers got cgroups under {}",
        g.cgroup
    );
    assert_eq!(g.stop(), 0);
    let log = g.daemon_log();
    // Reverse group order: app's b before root's a.
    assert!(
        log_times(&log, "b: exited")[0] <= log_times(&log, "a: exited")[0],
        "{log}"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let tmp = g.tmp.path().to_string_lossy().to_string();
    assert!(
        !mountinfo.contains(&tmp),
        "mounts remain:\n{}",
        mountinfo
            .lines()
            .filter(|l| l.contains(&tmp))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still there"
        );
    }
    for d in cgroup_dirs {
        assert!(!d.exists(), "cgroup {} left", d.display());
    }
    assert!(!g.socket.exists());
}

/// Turn container `name` into a Pantavisor LXC container with `conf`.
fn make_lxc(
    m: &mut serde_json::Map<String, serde_json::Value>,
    objects: &std::path::Path,
    name: &str,
    conf: &str,
) {
    let id = pvstate::ObjectId::of_bytes(conf.as_bytes());
    fs::write(objects.join(id.as_str()), conf).unwrap();
    m.remove(&format!("{name}/config.json"));
    m.insert(
        format!("{name}/lxc.container.conf"),
        serde_json::json!(id.to_string()),
    );
    let run = m.get_mut(&format!("{name}/run.json")).unwrap();
    run["type"] = serde_json::json!("lxc");
    run["config"] = serde_json::json!("lxc.container.conf");
}

#[test]
fn lxc_containers_run_translated_and_a_bad_key_fails_only_its_container() {
    let manifest = r#"
containers:
  legacy: {rootfs: rootfs/legacy, group: app, volumes: ["/etc/conf:permanent"]}
  broken: {rootfs: rootfs/broken, group: app}
  fine: {rootfs: rootfs/fine, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [legacy, broken, fine]
"#;
    let mut g = gateway_with_groups(manifest, &["legacy", "broken", "fine"], 10);
    g.edit_state(|m, objects| {
        make_lxc(m, objects, "legacy", "\
lxc.tty.max = 8
lxc.rootfs.path = overlayfs:/volumes/legacy/root.squashfs:/volumes/legacy/lxc-overlay/upper
lxc.init.cmd = /bin/sh -c \"echo hello from $GREETING in $(hostname); ls -d /etc/conf; exec sleep 1000\"
lxc.environment = GREETING=lxc
lxc.uts.name = legacy-host
lxc.mount.auto = proc sys
lxc.mount.entry = /volumes/legacy/docker--etc-conf etc/conf none bind,rw,create=dir 0 0
lxc.cgroup.memory.limit_in_bytes = 64M
lxc.cap.drop = sys_module
");
        make_lxc(m, objects, "broken", "lxc.init.cmd = /bin/sh\nlxc.hook.pre-start = /bin/evil\n");
    });
    g.start();
    g.wait_status("legacy", "STARTED", Duration::from_secs(10));
    g.wait_status("fine", "STARTED", Duration::from_secs(10));
    assert_eq!(g.status("broken"), "STOPPED");
    let out = wait_for(Duration::from_secs(5), || {
        let l = g.container_log("legacy");
        l.contains("/etc/conf").then_some(l)
    })
    .unwrap_or_else(|| g.container_log("legacy"));
    assert!(out.contains("hello from lxc in legacy-host"), "{out}");
    // The memory limit reached the container's cgroup (v1 or v2).
    let v1 = format!(
        "/sys/fs/cgroup/memory/{}/legacy/memory.limit_in_bytes",
        g.cgroup
    );
    let v2 = format!("/sys/fs/cgroup/{}/legacy/memory.max", g.cgroup);
    let limit = fs::read_to_string(&v1)
        .or_else(|_| fs::read_to_string(&v2))
        .expect("memory cgroup of legacy");
    assert_eq!(limit.trim(), (64 * 1024 * 1024).to_string());
    let log = g.daemon_log();
    assert!(
        log.contains(
            "container broken: LXC config: line 2: unsupported LXC key lxc.hook.pre-start"
        ),
        "{log}"
    );
    assert_eq!(g.stop(), 0);
}

#[test]
fn logs_rotate_and_metadata_endpoints_answer() {
    // 64 KiB logs (the test config); the container writes about 200 KiB.
    let manifest = r#"
containers:
  chatty: {rootfs: rootfs/chatty, group: app, args: [/bin/sh, -c, "i=0; while [ $i -lt 3000 ]; do echo line $i of a rather talkative container padding padding; i=$((i+1)); done; echo done; exec sleep 1000"]}
core: [chatty]
"#;
    let mut g = gateway_with_groups(manifest, &["chatty"], 10);
    g.start();
    wait_for(Duration::from_secs(15), || {
        g.container_log("chatty").contains("done").then_some(())
    })
    .unwrap_or_else(|| panic!("no end of output:\n{}", g.daemon_log()));
    let dir = g.storage.join("logs/0/chatty");
    let current = fs::metadata(dir.join("stdout.log")).unwrap().len();
    let previous = fs::metadata(dir.join("stdout.log.1")).unwrap().len();
    assert!(
        current <= 65536 && previous <= 65536 && previous > 30_000,
        "{current} {previous}"
    );
    assert!(g.storage.join("logs/0/pantavisor/pantavisor.log").is_file());
    // Metadata and build information.
    let (code, info) = g.request("GET", "/buildinfo", "");
    assert_eq!((code, info["mode"].as_str()), (200, Some("appengine")));
    let (code, meta) = g.request("GET", "/device-meta", "");
    assert_eq!(
        (code, meta["pantavisor.revision"].as_str()),
        (200, Some("0"))
    );
    assert_eq!(g.request("PUT", "/user-meta/site", "plant-7").0, 200);
    assert_eq!(g.request("GET", "/user-meta/site", "").1, "plant-7");
    assert_eq!(g.request("GET", "/user-meta", "").1["site"], "plant-7");
    assert_eq!(g.request("DELETE", "/user-meta/site", "").0, 200);
    assert_eq!(g.request("GET", "/user-meta/site", "").0, 404);
    assert_eq!(g.request("PUT", "/user-meta/.hidden", "x").0, 400);
    assert_eq!(g.request("GET", "/nothing-here", "").0, 404);
    assert_eq!(g.request("DELETE", "/containers", "").0, 405);
    assert_eq!(g.stop(), 0);
}

/// Issue 18: a part in Pantavisor's LXC format, as the composer writes it
/// (`format: lxc`): the daemon runs it with what its lxc.container.conf
/// says — command with a spaced argument, environment, working directory,
/// a permanent volume, the host's IPC kept — the same as the OCI config the
/// same settings give.
#[test]
fn a_part_composed_in_the_lxc_format_runs_as_its_oci_twin_would() {
    let manifest = r#"
containers:
  legacy:
    rootfs: rootfs/legacy
    group: app
    format: lxc
    volumes: ["/data:permanent"]
    env: ["GREETING=hello lxc"]
    workdir: /data
    entrypoint: [/bin/sh, -c, "echo $GREETING from $(pwd); echo kept > note; trap 'exit 0' TERM; sleep 1000 & wait"]
core: [legacy]
"#;
    let mut g = gateway(manifest, &["legacy"]);
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(g.storage.join("trails/0/.pvr/json")).unwrap()).unwrap();
    assert_eq!(
        state["legacy/run.json"]["type"], "lxc",
        "{}",
        state["legacy/run.json"]
    );
    assert!(state["legacy/lxc.container.conf"].is_string(), "{state}");
    assert!(state.get("legacy/config.json").is_none());
    g.start();
    g.wait_status("legacy", "STARTED", Duration::from_secs(15));
    let log = wait_for(Duration::from_secs(10), || {
        let l = g.container_log("legacy");
        l.contains("hello lxc from /data").then_some(l)
    });
    assert!(
        log.is_some(),
        "{}\n{}",
        g.container_log("legacy"),
        g.daemon_log()
    );
    assert_eq!(g.stop(), 0);
    let note = g.storage.join("disks/perm/legacy/docker--data/note");
    assert_eq!(fs::read_to_string(&note).unwrap(), "kept\n");

    // The LXC text, read back by the daemon, says what the OCI config says.
    let settings = pvcompose::spec::ContainerSettings::from_json(
        &serde_json::json!({
            "Entrypoint": ["/bin/app", "--name", "two words"],
            "Env": ["A=1"],
            "WorkingDir": "/srv",
            "PV_VOLUMES": ["/var/lib/app:permanent"],
            "PV_LXC_CAP_KEEP": ["net_admin", "kill"],
            "PV_LXC_NAMESPACE_KEEP": "ipc",
        }),
        "args.json",
    )
    .unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let oci = settings.oci_config("app", rootfs.path()).unwrap();
    let text = settings.lxc_config("app", rootfs.path()).unwrap();
    let back = pantavisor::lxc::translate("app", &text).unwrap();
    for pointer in [
        "/process/args",
        "/process/env",
        "/process/cwd",
        "/process/capabilities/bounding",
        "/linux/namespaces",
    ] {
        assert_eq!(
            back.pointer(pointer),
            oci.pointer(pointer),
            "{pointer}\n{text}"
        );
    }
    assert_eq!(back["mounts"][0]["destination"], "/var/lib/app", "{text}");
    assert_eq!(
        back["mounts"][0]["source"], oci["mounts"][0]["source"],
        "{text}"
    );
}
