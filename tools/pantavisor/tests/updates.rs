//! Updates in appengine mode: install, transition, test, commit, roll back.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use serde_json::{Map, Value};

/// Pantavisor's default groups without the app group's auto_recovery, whose
/// 30 s stable_timeout would hold every commit for half a minute.
const DEVICE: &str = r#"{"groups": [
  {"name": "data", "status_goal": "MOUNTED", "restart_policy": "system"},
  {"name": "root", "status_goal": "STARTED", "restart_policy": "system"},
  {"name": "platform", "status_goal": "STARTED", "restart_policy": "system"},
  {"name": "app", "status_goal": "STARTED", "restart_policy": "container"}]}"#;

const MANIFEST: &str = r#"
device: device.json
containers:
  sys: {rootfs: rootfs/sys, group: platform, args: [/bin/sh, -c, "exec sleep 1000"]}
  app1: {rootfs: rootfs/app1, group: app, args: [/bin/sh, -c, "trap 'exit 0' TERM; cat /etc/version 2>/dev/null; sleep 1000 & wait"]}
  app2: {rootfs: rootfs/app2, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [sys, app1, app2]
"#;

fn gateway_with_device() -> Gateway {
    gateway_in(MANIFEST, &["sys", "app1", "app2"], |dir| {
        fs::write(dir.join("device.json"), DEVICE).unwrap()
    })
}

fn running() -> Gateway {
    let mut g = gateway_with_device();
    g.start();
    for n in ["sys", "app1", "app2"] {
        g.wait_status(n, "STARTED", Duration::from_secs(10));
    }
    g
}

/// The running state with the entries of `part` in place of its container's.
fn with_part(g: &Gateway, name: &str, part: Map<String, Value>) -> Map<String, Value> {
    let mut state = g.step("0");
    // A signature over all of revision 0 cannot hold for a changed state.
    state.remove("_sigs/all.json");
    state.retain(|k, _| {
        !k.starts_with(&format!("{name}/")) && !k.starts_with(&format!("_config/{name}/"))
    });
    for (k, v) in part {
        if k != "#spec" {
            state.insert(k, v);
        }
    }
    state
}

fn version_file(v: &str) -> impl FnOnce(&std::path::Path) + '_ {
    move |root| fs::write(root.join("etc/version"), format!("{v}\n")).unwrap()
}

#[test]
fn updating_one_app_container_restarts_only_it() {
    let mut g = running();
    let (sys, app2, app1) = (g.pid("sys"), g.pid("app2"), g.pid("app1"));
    let part = new_version(
        &g,
        "app1",
        r#"{group: app, args: [/bin/sh, -c, "trap 'exit 0' TERM; cat /etc/version; sleep 1000 & wait"]}"#,
        version_file("v2"),
    );
    let (code, body) = g.install("v2", &with_part(&g, "app1", part));
    assert_eq!(code, 200, "{body}");
    let t0 = std::time::Instant::now();
    let (code, body) = g.command("LOCAL_RUN", "locals/v2");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["reboot"], false, "{body}");
    assert_eq!(body["restart"], serde_json::json!(["app1"]));
    wait_for(Duration::from_secs(15), || {
        (g.pid("app1") != app1 && g.status("app1") == "STARTED").then_some(())
    })
    .unwrap_or_else(|| panic!("app1 never came back:\n{}", g.daemon_log()));
    let back_in = t0.elapsed();
    let p = g.wait_progress("locals/v2", "UPDATED", Duration::from_secs(20));
    assert_eq!(p["progress"], 100);
    assert_eq!(
        (g.pid("sys"), g.pid("app2")),
        (sys, app2),
        "untouched containers keep running"
    );
    assert!(
        g.container_log("app1").contains("v2")
            || fs::read_to_string(g.storage.join("logs/locals/v2/app1/stdout.log"))
                .unwrap_or_default()
                .contains("v2")
    );
    let (_, steps) = g.request("GET", "/steps", "");
    let names: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["0", "locals/v2"]);
    assert_eq!(
        g.request("GET", "/device-meta", "").1["pantavisor.revision"],
        "locals/v2"
    );
    // UPDATED does not move the rollback point (Pantavisor's semantics):
    // the revision is pending, and the next start tries it.
    assert!(
        g.boot_env()
            .contains("pv_rev=0\npv_try=locals/v2\npv_trying=\n"),
        "{}",
        g.boot_env()
    );
    // The next start (a reboot) tries it; reaching its goals makes it DONE,
    // and DONE moves the rollback point.
    assert_eq!(g.stop(), 0);
    g.start();
    g.wait_progress("locals/v2", "DONE", Duration::from_secs(30));
    assert_eq!(
        g.request("GET", "/device-meta", "").1["pantavisor.revision"],
        "locals/v2"
    );
    assert!(
        g.boot_env().contains("pv_rev=locals/v2\npv_try=\n"),
        "{}",
        g.boot_env()
    );
    eprintln!(
        "UPDATE non-reboot: LOCAL_RUN to the updated container running again: {} ms",
        back_in.as_millis()
    );
    if std::env::var("PV_TEST_SHOW_LOG").is_ok() {
        eprintln!("{}", g.daemon_log());
    }
    // Committed: a restarted daemon runs it, with no try pending.
    assert_eq!(g.stop(), 0);
    g.start();
    g.wait_status("app1", "STARTED", Duration::from_secs(10));
    assert_eq!(
        g.request("GET", "/device-meta", "").1["pantavisor.revision"],
        "locals/v2"
    );
}

#[test]
fn updating_a_system_container_goes_through_the_try_handshake() {
    let mut g = running();
    let app2 = g.pid("app2");
    let part = new_version(
        &g,
        "sys",
        "{group: platform, args: [/bin/sh, -c, 'exec sleep 1000']}",
        version_file("sys-v2"),
    );
    assert_eq!(g.install("sys2", &with_part(&g, "sys", part)).0, 200);
    let (code, body) = g.command("LOCAL_RUN", "locals/sys2");
    assert_eq!(
        (code, body["reboot"].clone()),
        (200, Value::Bool(true)),
        "{body}"
    );
    // The latch is written before the transition starts.
    let env = g.boot_env();
    assert!(
        env.contains("pv_rev=0\n")
            && env.contains("pv_try=locals/sys2\n")
            && env.contains("pv_trying=locals/sys2\n"),
        "{env}"
    );
    g.wait_progress("locals/sys2", "DONE", Duration::from_secs(30));
    assert!(
        g.boot_env()
            .contains("pv_rev=locals/sys2\npv_try=\npv_trying=\n"),
        "{}",
        g.boot_env()
    );
    // A reboot transition restarts everything.
    assert_ne!(g.pid("app2"), app2);
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_revision_that_never_gets_ready_is_rolled_back() {
    let mut g = running();
    let app1 = g.pid("app1");
    let part = new_version(
        &g,
        "app1",
        "{group: app, status_goal: READY, args: [/bin/sh, -c, 'exec sleep 1000']}",
        |_| {},
    );
    assert_eq!(g.install("mute", &with_part(&g, "app1", part)).0, 200);
    assert_eq!(g.command("LOCAL_RUN", "locals/mute").0, 200);
    let p = g.wait_progress("locals/mute", "ERROR", Duration::from_secs(30));
    assert!(
        p["status-msg"]
            .as_str()
            .unwrap()
            .contains("Status goal not reached: app1"),
        "{p}"
    );
    // Back on revision 0 with its containers.
    wait_for(Duration::from_secs(15), || {
        (g.request("GET", "/device-meta", "").1["pantavisor.revision"] == "0"
            && g.status("app1") == "STARTED")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no rollback:\n{}", g.daemon_log()));
    assert_ne!(g.pid("app1"), app1);
    assert_eq!(g.container("app1")["status_goal"], "STARTED");
    assert!(
        g.boot_env().contains("pv_rev=0\npv_try=\n"),
        "{}",
        g.boot_env()
    );
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_crash_loop_during_testing_rolls_back_whatever_the_backoff() {
    let mut g = running();
    let settings = "{group: app, args: [/bin/sh, -c, 'sleep 0.2; exit 2'], auto_recovery: {policy: always, retry_delay: 0, max_retries: 100, backoff_policy: never}}";
    let part = new_version(&g, "app2", settings, |_| {});
    assert_eq!(g.install("crashy", &with_part(&g, "app2", part)).0, 200);
    assert_eq!(g.command("LOCAL_RUN", "locals/crashy").0, 200);
    let p = g.wait_progress("locals/crashy", "ERROR", Duration::from_secs(30));
    assert!(
        p["status-msg"]
            .as_str()
            .unwrap()
            .contains("app2 stopped during TESTING"),
        "{p}"
    );
    wait_for(Duration::from_secs(15), || {
        (g.request("GET", "/device-meta", "").1["pantavisor.revision"] == "0"
            && g.status("app2") == "STARTED")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no rollback:\n{}", g.daemon_log()));
    assert_eq!(g.stop(), 0);
}

#[test]
fn tampered_objects_are_refused_and_named() {
    let mut g = running();
    // An upload whose content is not its name leaves nothing.
    let before = listing(&g.storage.join("objects"));
    let wrong = "0".repeat(64);
    let (code, body) = g.request_bytes("PUT", &format!("/objects/{wrong}"), b"some bytes");
    assert_eq!(code, 422, "{body}");
    assert_eq!(listing(&g.storage.join("objects")), before);
    // A byte flipped after upload: the revision will not run.
    let part = new_version(&g, "app1", "{group: app}", version_file("v3"));
    let root = part["app1/root.squashfs"].as_str().unwrap().to_string();
    assert_eq!(g.install("v3", &with_part(&g, "app1", part)).0, 200);
    let path = g.storage.join("objects").join(&root);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 1;
    fs::write(&path, bytes).unwrap();
    let app1 = g.pid("app1");
    let (code, body) = g.command("LOCAL_RUN", "locals/v3");
    assert_eq!(code, 422, "{body}");
    let msg = body["Error"].as_str().unwrap();
    assert!(
        msg.starts_with("WONTGO") && msg.contains("app1/root.squashfs") && msg.contains(&root),
        "{msg}"
    );
    assert_eq!(g.progress("locals/v3")["status"], "WONTGO");
    assert_eq!(g.pid("app1"), app1, "the running revision is untouched");
    // A state naming an object the device lacks is not installed.
    let mut state = g.step("0");
    state.insert("app2/extra.bin".into(), Value::String("1".repeat(64)));
    let (code, body) = g.install("lacking", &state);
    assert_eq!(code, 422);
    assert!(
        body["Error"]
            .as_str()
            .unwrap()
            .contains("objects missing: app2/extra.bin"),
        "{body}"
    );
    assert_eq!(g.stop(), 0);
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn an_upload_that_does_not_fit_gets_507_and_leaves_nothing() {
    let mut g = gateway_with_device();
    // Move the storage onto a small file system of its own.
    let small = g.tmp.path().join("small");
    fs::create_dir(&small).unwrap();
    let used = std::process::Command::new("du")
        .args(["-sb"])
        .arg(&g.storage)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let size = used + 4 * 1024 * 1024;
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = std::process::Command::new("cp")
        .args(["-a"])
        .arg(format!("{}/.", g.storage.display()))
        .arg(&small)
        .status()
        .unwrap();
    assert!(ok.success());
    g.storage = small.clone();
    g.start();
    g.wait_status("app2", "STARTED", Duration::from_secs(10));
    let before = listing(&small.join("objects"));
    let big = vec![7u8; 8 * 1024 * 1024];
    let id = pvstate::ObjectId::of_bytes(&big);
    let (code, body) = g.request_bytes("PUT", &format!("/objects/{id}"), &big);
    assert_eq!(code, 507, "{body}");
    assert!(
        body["Error"].as_str().unwrap().contains("not enough space"),
        "{body}"
    );
    assert_eq!(listing(&small.join("objects")), before, "no partial file");
    assert_eq!(g.status("app2"), "STARTED");
    assert_eq!(g.stop(), 0);
    let _ = std::process::Command::new("umount").arg(&small).status();
}

#[test]
fn selected_factory_packages_are_installed_on_first_boot() {
    let manifest = r#"
device: device.json
containers:
  sys: {rootfs: rootfs/sys, group: platform, args: [/bin/sh, -c, "exec sleep 1000"]}
  modbus: {rootfs: rootfs/modbus, group: app, args: [/bin/sh, -c, "trap 'exit 0' TERM; echo polling; sleep 1000 & wait"]}
  opcua: {rootfs: rootfs/opcua, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [sys]
optional: [modbus, opcua]
config:
  PV_FACTORY_PKGS: modbus
"#;
    let mut g = gateway_in(manifest, &["sys", "modbus", "opcua"], |dir| {
        fs::write(dir.join("device.json"), DEVICE).unwrap()
    });
    g.start();
    g.wait_progress("locals/factory", "UPDATED", Duration::from_secs(30));
    assert_eq!(
        g.request("GET", "/device-meta", "").1["pantavisor.revision"],
        "locals/factory"
    );
    let (_, list) = g.request("GET", "/containers", "");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["modbus", "sys"], "only the selected package joins");
    g.wait_status("modbus", "STARTED", Duration::from_secs(10));
    // Installed once: a restart runs the committed revision and installs nothing again.
    assert_eq!(g.stop(), 0);
    g.start();
    g.wait_status("modbus", "STARTED", Duration::from_secs(10));
    assert_eq!(
        g.request("GET", "/device-meta", "").1["pantavisor.revision"],
        "locals/factory"
    );
    assert_eq!(
        g.daemon_log()
            .matches("installed as locals/factory")
            .count(),
        1
    );
    assert_eq!(g.stop(), 0);
}

fn public_pem(key: &p256::ecdsa::SigningKey) -> String {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// A gateway whose device trusts one P-256 key (its built-in trust store,
/// off the storage) and checks signatures in `mode`.
fn signed_gateway(mode: &str) -> (Gateway, p256::ecdsa::SigningKey) {
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let mut g = gateway_with_device();
    let trust = g.tmp.path().join("initramfs-certs");
    fs::create_dir_all(&trust).unwrap();
    fs::write(trust.join("dev.pem"), public_pem(&key)).unwrap();
    fs::write(
        g.tmp.path().join("pantavisor.config"),
        format!(
            "stop.timeout=3\nupdate.commit_delay=1\nupdate.signatures={mode}\n\
             secureboot.truststore={}\n",
            trust.display()
        ),
    )
    .unwrap();
    // Revision 0 is signed too, as the composer signs it with a key: it is
    // checked at every boot (strict mode refuses an unsigned one).
    g.edit_state(|state, _| sign_all(state, &key));
    g.start();
    g.wait_status("app2", "STARTED", Duration::from_secs(10));
    (g, key)
}

/// Sign every key of `state` (as one raw signature) with `key`.
fn sign_all(state: &mut Map<String, Value>, key: &p256::ecdsa::SigningKey) {
    state.retain(|k, _| !k.starts_with("_sigs/"));
    let parsed =
        pvstate::State::parse(&serde_json::to_vec(&Value::Object(state.clone())).unwrap()).unwrap();
    let doc = pvstate::sig::sign(
        &parsed,
        key,
        &["**".into()],
        &["**/src.json".into(), "_sigs/**".into()],
    );
    state.insert("_sigs/all.json".into(), serde_json::to_value(doc).unwrap());
}

#[test]
fn strict_mode_refuses_unsigned_and_mismatched_states() {
    let (mut g, key) = signed_gateway("strict");
    let part = new_version(
        &g,
        "app1",
        "{group: app, args: [/bin/sh, -c, 'exec sleep 1000']}",
        version_file("s1"),
    );
    let mut state = with_part(&g, "app1", part);
    // Unsigned: WONTGO.
    let (code, body) = g.install("unsigned", &state);
    assert_eq!(code, 422);
    assert!(
        body["Error"]
            .as_str()
            .unwrap()
            .starts_with("WONTGO: strict mode:"),
        "{body}"
    );
    // Signed: installed and run.
    sign_all(&mut state, &key);
    assert_eq!(g.install("signed", &state).0, 200);
    assert_eq!(g.command("LOCAL_RUN", "locals/signed").0, 200);
    // _sigs/all.json belongs to no container: a root change, so a reboot
    // transition, DONE.
    g.wait_progress("locals/signed", "DONE", Duration::from_secs(30));
    // Content changed after signing: WONTGO.
    state.get_mut("app1/run.json").unwrap()["status_goal"] = serde_json::json!("STARTED");
    let (code, body) = g.install("mismatch", &state);
    assert_eq!(code, 422);
    assert!(
        body["Error"]
            .as_str()
            .unwrap()
            .contains("_sigs/all.json: the signature does not match"),
        "{body}"
    );
    assert_eq!(g.stop(), 0);
}

#[test]
fn a_key_dropped_into_storage_config_trust_is_not_trusted() {
    let (mut g, _) = signed_gateway("strict");
    // Whoever can write the storage adds their own key and signs with it.
    let intruder = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    fs::create_dir_all(g.storage.join("config/trust")).unwrap();
    fs::write(
        g.storage.join("config/trust/mine.pem"),
        public_pem(&intruder),
    )
    .unwrap();
    let part = new_version(&g, "app1", "{group: app}", version_file("x1"));
    let mut state = with_part(&g, "app1", part);
    sign_all(&mut state, &intruder);
    let (code, body) = g.install("intruder", &state);
    assert_eq!(code, 422, "{body}");
    assert!(
        body["Error"]
            .as_str()
            .unwrap()
            .contains("_sigs/all.json: signed with a key the device does not trust"),
        "{body}"
    );
    // Also after a restart (the trust store is read at start), which says
    // why that directory is ignored.
    assert_eq!(g.stop(), 0);
    g.start();
    g.wait_status("app2", "STARTED", Duration::from_secs(10));
    assert_eq!(g.install("intruder", &state).0, 422);
    assert!(
        g.daemon_log()
            .contains("is on the writable storage and is no longer trusted"),
        "{}",
        g.daemon_log()
    );
    assert!(g.daemon_log().contains("trust store: 1 key(s)/CA(s)"));
    assert_eq!(g.stop(), 0);
}

#[test]
fn an_update_asking_for_what_the_daemon_does_not_do_is_wontgo_by_name() {
    let mut g = running();
    let part = new_version(&g, "app1", "{group: app}", version_file("u1"));
    let mut state = with_part(&g, "app1", part);
    state.get_mut("app1/run.json").unwrap()["logs"] =
        serde_json::json!([{"file": "/var/log/app.log"}]);
    state.get_mut("app1/run.json").unwrap()["drivers"] = serde_json::json!({"required": ["wifi"]});
    let (code, body) = g.install("unsupported", &state);
    assert_eq!(code, 422, "{body}");
    let why = body["Error"].as_str().unwrap();
    assert!(
        why.starts_with("WONTGO: not supported by this daemon:"),
        "{why}"
    );
    assert!(
        why.contains("app1/run.json: logs: container loggers"),
        "{why}"
    );
    assert!(
        why.contains("app1/run.json: drivers: managed drivers"),
        "{why}"
    );
    // The same written to storage behind the API's back: LOCAL_RUN refuses it.
    let rev = "locals/behind";
    let dir = g.storage.join("trails").join(rev).join(".pvr");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("json"),
        serde_json::to_vec(&serde_json::Value::Object(state)).unwrap(),
    )
    .unwrap();
    let (code, body) = g.command("LOCAL_RUN", rev);
    assert_eq!(code, 422, "{body}");
    assert!(
        body.to_string().contains("drivers: managed drivers"),
        "{body}"
    );
    assert_eq!(g.progress(rev)["status"], "WONTGO");
    assert_eq!(g.stop(), 0);
}

#[test]
fn lenient_mode_accepts_unsigned_parts() {
    let (mut g, key) = signed_gateway("lenient");
    let part = new_version(&g, "app1", "{group: app}", version_file("l1"));
    let state = with_part(&g, "app1", part);
    assert_eq!(g.install("unsigned", &state).0, 200);
    // A signature that does not verify is still refused.
    let mut bad = state.clone();
    sign_all(&mut bad, &key);
    bad.get_mut("app2/run.json").unwrap()["group"] = serde_json::json!("platform");
    assert_eq!(g.install("bad", &bad).0, 422);
    assert_eq!(g.stop(), 0);
}

#[test]
fn try_once_gc_and_reboot_device() {
    let mut g = running();
    // TRY_ONCE: run, pass, but not committed; the next start goes back.
    let part = new_version(
        &g,
        "app1",
        r#"{group: app, args: [/bin/sh, -c, "trap 'exit 0' TERM; sleep 1000 & wait"]}"#,
        version_file("t1"),
    );
    let new_root = part["app1/root.squashfs"].as_str().unwrap().to_string();
    assert_eq!(g.install("t1", &with_part(&g, "app1", part)).0, 200);
    assert_eq!(g.command("TRY_ONCE", "locals/t1").0, 200);
    let p = g.wait_progress("locals/t1", "UPDATED", Duration::from_secs(30));
    assert_eq!(p["status-msg"], "Tried once; not committed");
    assert!(
        g.boot_env()
            .contains("pv_rev=0\npv_try=locals/t1\npv_trying=locals/t1\n"),
        "{}",
        g.boot_env()
    );
    assert_eq!(g.stop(), 0);
    g.start();
    g.wait_status("app1", "STARTED", Duration::from_secs(10));
    assert_eq!(
        g.request("GET", "/device-meta", "").1["pantavisor.revision"],
        "0"
    );
    assert_eq!(g.progress("locals/t1")["status"], "ERROR");
    // GC: an orphan goes, every installed revision's objects stay.
    let orphan = vec![9u8; 4096];
    let orphan_id = pvstate::ObjectId::of_bytes(&orphan);
    assert_eq!(
        g.request_bytes("PUT", &format!("/objects/{orphan_id}"), &orphan)
            .0,
        200
    );
    let (code, body) = g.request("POST", "/storage/gc", "");
    assert_eq!(
        (code, body["reclaimed"].as_u64()),
        (200, Some(4096)),
        "{body}"
    );
    assert!(!g.storage.join("objects").join(orphan_id.as_str()).exists());
    assert!(
        g.storage.join("objects").join(&new_root).exists(),
        "locals/t1 still refers to it"
    );
    assert_eq!(g.command("RUN_GC", "").0, 200);
    // REBOOT_DEVICE in appengine mode: every container starts again.
    let before: Vec<i64> = ["sys", "app1", "app2"].iter().map(|n| g.pid(n)).collect();
    assert_eq!(g.command("REBOOT_DEVICE", "test").0, 200);
    wait_for(Duration::from_secs(20), || {
        let now: Vec<i64> = ["sys", "app1", "app2"].iter().map(|n| g.pid(n)).collect();
        (now.iter().zip(&before).all(|(a, b)| a != b && *a > 0)).then_some(())
    })
    .unwrap_or_else(|| panic!("no restart:\n{}", g.daemon_log()));
    assert_eq!(g.stop(), 0);
}

/// Defect: the control socket kept its caller as an index into the
/// container list. A connection a plain container opened before a revision
/// switch that put a new container first was answered, after the switch,
/// with the rights of whichever container then had that index — here the
/// mgmt one. The caller must keep its own identity (and no more rights).
#[test]
fn a_connection_keeps_its_callers_identity_across_a_switch() {
    let manifest = r#"
device: device.json
containers:
  mgr: {rootfs: rootfs/mgr, group: app, roles: [mgmt], args: [/bin/sh, -c, "exec sleep 1000"]}
  worker: {rootfs: rootfs/worker, group: app, args: [/bin/sh, -c, "exec sleep 1000"]}
core: [mgr, worker]
"#;
    let mut g = gateway_in(manifest, &["mgr", "worker"], |dir| {
        fs::write(dir.join("device.json"), DEVICE).unwrap()
    });
    g.start();
    for n in ["mgr", "worker"] {
        g.wait_status(n, "STARTED", Duration::from_secs(10));
    }
    // A host process that joins worker's cgroup (so the daemon sees it as
    // worker), opens a connection and sends half a request; the rest on cue.
    let script = r#"
import glob, os, socket, sys
sock, parent = sys.argv[1], sys.argv[2]
dirs = glob.glob(f"/sys/fs/cgroup/{parent}/worker") + glob.glob(f"/sys/fs/cgroup/*/{parent}/worker")
assert dirs, "no cgroup of worker"
for d in dirs:
    with open(os.path.join(d, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
s.sendall(b"GET /containers HTTP/1.1\r\nHost: x\r\n")
print("sent", flush=True)
sys.stdin.readline()
s.sendall(b"\r\n")
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
print(out.decode().split("\r\n")[0], flush=True)
"#;
    let mut helper = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&g.socket)
        .arg(&g.cgroup)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(helper.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::{BufRead, Write};
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "sent");
    // A new container sorted before both: the list is reordered and the
    // index worker had now names mgr.
    let part = new_version(
        &g,
        "aaa",
        r#"{group: app, args: [/bin/sh, -c, "exec sleep 1000"]}"#,
        busybox_rootfs,
    );
    assert_eq!(g.install("more", &with_part(&g, "aaa", part)).0, 200);
    let (code, body) = g.command("LOCAL_RUN", "locals/more");
    assert_eq!(code, 200, "{body}");
    g.wait_status("aaa", "STARTED", Duration::from_secs(15));
    let names: Vec<String> = g
        .request("GET", "/containers", "")
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["aaa", "mgr", "worker"]);
    writeln!(helper.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = helper.wait();
    assert!(
        line.starts_with("HTTP/1.1 403"),
        "worker's connection got: {line}"
    );
    assert_eq!(g.stop(), 0);
}

/// Defect: `PVROOT_RPI_TRYBOOT = "1"` gave an A/B card whose daemon used the
/// plain backend. The composer's `bootloader: rpi-tryboot` (what the class
/// passes for it) now writes the daemon's setting too.
#[test]
fn rpi_tryboot_is_one_setting_for_composer_and_daemon() {
    let manifest = "bootloader: rpi-tryboot\ncontainers:\n  app: {rootfs: rootfs/app, group: app, args: [/bin/sh]}\ncore: [app]\n";
    let g = gateway(manifest, &["app"]);
    let text = fs::read_to_string(g.storage.join("config/pantavisor.config")).unwrap();
    let paths = pantavisor::config::Paths {
        storage: g.storage.clone(),
        ctrl_socket: g.socket.clone(),
        run_dir: g.run_dir.clone(),
        cgroup_parent: None,
    };
    let opts = pantavisor::config::Options::parse(&text, paths, pantavisor::config::Mode::Embedded)
        .unwrap();
    assert_eq!(
        opts.bootloader,
        pantavisor::config::Bootloader::RpiTryboot {
            autoboot: "/dev/mmcblk0p1".into(),
            partitions: (2, 3)
        },
        "{text}"
    );
    assert!(g.storage.join("boot/pv.env").is_file());
}

/// Issue 19, check at boot: a committed revision whose object was changed on
/// disk is refused when the daemon starts (ERROR naming the object), and the
/// device runs the last good revision instead; pv_rev is not rewritten.
#[test]
fn a_committed_revision_tampered_on_disk_is_refused_at_boot() {
    let mut g = running();
    let part = new_version(
        &g,
        "sys",
        "{group: platform, args: [/bin/sh, -c, 'exec sleep 1000']}",
        version_file("sys-v3"),
    );
    let root = part["sys/root.squashfs"].as_str().unwrap().to_string();
    assert_eq!(g.install("sys3", &with_part(&g, "sys", part)).0, 200);
    assert_eq!(g.command("LOCAL_RUN", "locals/sys3").0, 200);
    g.wait_progress("locals/sys3", "DONE", Duration::from_secs(30));
    assert!(g.boot_env().contains("pv_rev=locals/sys3\n"));
    assert_eq!(g.stop(), 0);
    // One flipped byte in the object only the committed revision uses.
    let path = g.storage.join("objects").join(&root);
    let mut bytes = fs::read(&path).unwrap();
    bytes[200] ^= 1;
    fs::write(&path, bytes).unwrap();
    g.start();
    for n in ["sys", "app1", "app2"] {
        g.wait_status(n, "STARTED", Duration::from_secs(10));
    }
    assert_eq!(
        g.request("GET", "/device-meta", "").1["pantavisor.revision"],
        "0",
        "{}",
        g.daemon_log()
    );
    let p = g.progress("locals/sys3");
    let msg = p["status-msg"].as_str().unwrap_or("");
    assert_eq!(p["status"], "ERROR", "{p}");
    assert!(
        msg.starts_with("Refused at boot:")
            && msg.contains("sys/root.squashfs")
            && msg.contains(&root),
        "{msg}"
    );
    assert!(
        g.boot_env().contains("pv_rev=locals/sys3\n"),
        "{}",
        g.boot_env()
    );
    assert_eq!(g.stop(), 0);
}

/// Issue 19, check at boot: in strict mode an unsigned committed revision
/// does not boot; with no other revision to fall back to, the daemon stops
/// with the reason instead of running it.
#[test]
fn strict_mode_refuses_an_unsigned_committed_revision_at_boot() {
    let g = gateway_with_device();
    fs::write(
        g.tmp.path().join("pantavisor.config"),
        "update.signatures=strict\n",
    )
    .unwrap();
    let out = g.daemon_command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no revision on storage passes its check at boot"),
        "{err}"
    );
    let p: Value = serde_json::from_slice(
        &fs::read(g.storage.join("trails/0/.pv/progress")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert_eq!(p["status"], "ERROR", "{p}");
    assert!(
        p["status-msg"]
            .as_str()
            .unwrap_or("")
            .starts_with("Refused at boot: strict mode:"),
        "{p}"
    );
}

/// Issue 16, storage lifetime: 60 updates of a container carrying 3 MiB of
/// its own each (180 MiB in all) on a 96 MiB storage. The revisions the
/// keep policy lets go are removed with their objects (named in the log),
/// a rollback still works after them, and an upload larger than the room
/// left is refused on its header, before any byte of it is taken.
#[test]
fn sixty_updates_never_fill_a_small_storage_and_a_rollback_still_works() {
    use rand_core::RngCore;
    let mut g = gateway_with_device();
    let small = g.tmp.path().join("small");
    fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(small.clone());
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", g.storage.display()))
        .arg(&small)
        .status()
        .unwrap();
    assert!(copied.success());
    g.storage = small.clone();
    fs::write(
        g.tmp.path().join("pantavisor.config"),
        "stop.timeout=2\nupdate.commit_delay=1\nupdate.goals_timeout=5\n\
         storage.gc.keep_revisions=2\nstorage.gc.reserved=5\n",
    )
    .unwrap();
    g.start();
    for n in ["sys", "app1", "app2"] {
        g.wait_status(n, "STARTED", Duration::from_secs(10));
    }
    let used = |p: &std::path::Path| {
        let s = nix::sys::statvfs::statvfs(p).unwrap();
        (s.blocks() - s.blocks_available()) * s.fragment_size()
    };
    let mut peak = 0;
    for i in 0..60 {
        let part = new_version(
            &g,
            "app1",
            "{group: app, args: [/bin/sh, -c, \"trap 'exit 0' TERM; sleep 1000 & wait\"]}",
            |root| {
                // Without the test's (debug) pvcontrol: the update is
                // the 3 MiB blob, busybox and a few libraries.
                let _ = fs::remove_file(root.join("usr/bin/pvcontrol"));
                fs::write(root.join("etc/version"), format!("v{i}\n")).unwrap();
                let mut blob = vec![0u8; 3 << 20];
                rand_core::OsRng.fill_bytes(&mut blob);
                fs::write(root.join("blob"), blob).unwrap();
            },
        );
        let rev = format!("locals/u{i}");
        assert_eq!(
            g.install(&format!("u{i}"), &with_part(&g, "app1", part)).0,
            200
        );
        assert_eq!(g.command("LOCAL_RUN", &rev).0, 200, "update {i}");
        g.wait_progress(&rev, "UPDATED", Duration::from_secs(30));
        peak = peak.max(used(&small));
    }
    let log = g.daemon_log();
    let gcs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("gc (update finished): removed revisions ["))
        .collect();
    assert!(gcs.len() >= 55, "{}", gcs.join("\n"));
    eprintln!("{} collections; e.g. {}", gcs.len(), gcs[gcs.len() / 2]);
    eprintln!("peak use {} MiB of 96", peak >> 20);
    assert!(
        log.contains("locals/u0"),
        "the first update's revision was collected"
    );
    // What is left: 0, the running one and the two before it.
    let left: Vec<String> = fs::read_dir(small.join("trails/locals"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.len() <= 3, "{left:?}");
    assert!(left.contains(&"u59".to_string()), "{left:?}");

    // A rollback still works: an update whose container never starts.
    let part = new_version(&g, "app1", "{group: app, args: [/nonexistent]}", |root| {
        fs::write(root.join("etc/version"), "broken\n").unwrap()
    });
    assert_eq!(g.install("broken", &with_part(&g, "app1", part)).0, 200);
    assert_eq!(g.command("LOCAL_RUN", "locals/broken").0, 200);
    g.wait_progress("locals/broken", "ERROR", Duration::from_secs(60));
    wait_for(Duration::from_secs(30), || {
        (g.request("GET", "/device-meta", "").1["pantavisor.revision"] == "locals/u59")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", g.daemon_log()));
    g.wait_status("app1", "STARTED", Duration::from_secs(20));

    // An object larger than the room left: refused on its header.
    let before = fs::read_dir(small.join("objects")).unwrap().count();
    let big = 200u64 << 20;
    let sha = "ab".repeat(32);
    let mut s = std::os::unix::net::UnixStream::connect(&g.socket).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "PUT /objects/{sha} HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        if answer.contains("\r\n\r\n") && answer.contains('}') {
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 507"), "{answer}");
    assert!(answer.contains("not enough space"), "{answer}");
    let after = fs::read_dir(small.join("objects")).unwrap().count();
    assert_eq!(before, after, "nothing of it was written");
    assert_eq!(g.stop(), 0);
}

/// Issue 16, anti-rollback: with update.min_version the device refuses a
/// revision older than its floor (WONTGO), the floor rises with each commit
/// and survives a restart, and a rollback to the last good revision still
/// works.
#[test]
fn anti_rollback_refuses_older_versions_and_keeps_its_floor() {
    let mut g = gateway_with_device();
    fs::write(
        g.tmp.path().join("pantavisor.config"),
        "stop.timeout=2\nupdate.commit_delay=1\nupdate.goals_timeout=5\nupdate.min_version=1\n",
    )
    .unwrap();
    g.start();
    g.wait_status("app2", "STARTED", Duration::from_secs(10));
    let floor_file = g.storage.join("config/min-version");
    let floor = || fs::read_to_string(&floor_file).unwrap_or_default();
    let versioned = |g: &Gateway, v: u64, tag: &str, args: &str| {
        let part = new_version(g, "app1", args, version_file(tag));
        let mut state = with_part(g, "app1", part);
        state.insert("version.json".into(), serde_json::json!({"version": v}));
        state
    };
    let ok_args = "{group: app, args: [/bin/sh, -c, 'exec sleep 1000']}";
    // Version 5: runs and commits (a new root key: a reboot transition,
    // DONE); the floor rises to 5.
    assert_eq!(g.install("v5", &versioned(&g, 5, "v5", ok_args)).0, 200);
    assert_eq!(g.command("LOCAL_RUN", "locals/v5").0, 200);
    g.wait_progress("locals/v5", "DONE", Duration::from_secs(30));
    assert_eq!(floor().trim(), "5");
    // Version 3, signed or not: older than the floor, WONTGO.
    let (code, body) = g.install("v3", &versioned(&g, 3, "v3", ok_args));
    assert_eq!(code, 422, "{body}");
    assert!(
        body["Error"]
            .as_str()
            .unwrap()
            .contains("version 3 is older than this device's floor 5"),
        "{body}"
    );
    // The floor is on storage: after a restart version 4 is refused too.
    assert_eq!(g.stop(), 0);
    g.start();
    g.wait_status("app2", "STARTED", Duration::from_secs(10));
    assert_eq!(g.install("v4", &versioned(&g, 4, "v4", ok_args)).0, 422);
    // Version 6 that fails: rolled back to version 5, the last good one,
    // which is below nothing; the floor stays 5.
    let broken = versioned(&g, 6, "v6", "{group: app, args: [/nonexistent]}");
    assert_eq!(g.install("v6", &broken).0, 200);
    assert_eq!(g.command("LOCAL_RUN", "locals/v6").0, 200);
    g.wait_progress("locals/v6", "ERROR", Duration::from_secs(60));
    wait_for(Duration::from_secs(30), || {
        (g.request("GET", "/device-meta", "").1["pantavisor.revision"] == "locals/v5").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", g.daemon_log()));
    assert_eq!(floor().trim(), "5");
    assert!(g
        .daemon_log()
        .contains("anti-rollback: floor raised to 5 (revision locals/v5)"));
    assert_eq!(g.stop(), 0);
}
