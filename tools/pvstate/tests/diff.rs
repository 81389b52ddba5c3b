//! Revision diff and the transition Pantavisor's rules derive from it.

mod common;

use common::*;
use pvstate::diff::{plan, Change};
use pvstate::State;
use serde_json::{json, Map, Value};

fn base() -> State {
    State::parse(GATEWAY.as_bytes()).unwrap()
}

fn changed(mutate: impl FnOnce(&mut Map<String, Value>)) -> State {
    let mut v = gateway();
    mutate(v.as_object_mut().unwrap());
    State::parse(&bytes(&v)).unwrap_or_else(|e| panic!("{e}"))
}

const NEW_ID: &str = "1111111111111111111111111111111111111111111111111111111111111111";

#[test]
fn identical_revisions_change_nothing() {
    let (d, t) = plan(&base(), &base());
    assert!(d.is_empty());
    assert!(!t.reboot);
    assert_eq!(t.keep.len(), 6);
}

#[test]
fn only_an_app_container_changed_restarts_only_it() {
    let new = changed(|m| {
        m.insert("edge-app/root.squashfs".into(), json!(NEW_ID));
    });
    let (d, t) = plan(&base(), &new);
    assert!(!t.reboot, "{:?}", t.reasons);
    assert_eq!(t.restart, vec!["edge-app"]);
    assert!(t.start.is_empty() && t.stop.is_empty());
    assert_eq!(
        t.keep,
        vec![
            "modbus-adapter",
            "mqtt-broker",
            "opcua-adapter",
            "os",
            "pv-tailscale"
        ]
    );
    assert_eq!(
        d.containers["edge-app"].keys,
        vec!["edge-app/root.squashfs"]
    );
}

#[test]
fn a_system_container_changed_reboots() {
    let new = changed(|m| {
        m.insert("mqtt-broker/root.squashfs".into(), json!(NEW_ID));
    });
    let (_, t) = plan(&base(), &new);
    assert!(t.reboot);
    assert!(
        t.reasons
            .iter()
            .any(|r| r.contains("'mqtt-broker' with restart_policy system")),
        "{:?}",
        t.reasons
    );
    // pv-tailscale is system through its group (platform).
    let new = changed(|m| {
        m["pv-tailscale/src.json"]["template"] = json!("other");
    });
    assert!(plan(&base(), &new).1.reboot);
    // Turning an app container into a system one reboots too.
    let new = changed(|m| {
        m["opcua-adapter/run.json"]["restart_policy"] = json!("system");
    });
    assert!(plan(&base(), &new).1.reboot);
}

#[test]
fn bsp_or_root_documents_changed_reboot() {
    let new = changed(|m| {
        m.insert("bsp/kernel.img".into(), json!(NEW_ID));
    });
    let (d, t) = plan(&base(), &new);
    assert_eq!(d.bsp, vec!["bsp/kernel.img"]);
    assert!(t.reboot && t.reasons[0].starts_with("BSP changed"));
    assert!(t.keep.is_empty());
    let new = changed(|m| {
        m["device.json"]["groups"][3]["timeout"] = json!(60);
    });
    let (d, t) = plan(&base(), &new);
    assert_eq!(d.root, vec!["device.json"]);
    assert!(t.reboot);
    // A _config overlay of no container is a root change.
    let new = changed(|m| {
        m.insert("_config/ghost/etc/x".into(), json!(NEW_ID));
    });
    assert_eq!(plan(&base(), &new).0.root, vec!["_config/ghost/etc/x"]);
}

#[test]
fn config_overlay_changed_restarts_that_container_only() {
    let new = changed(|m| {
        m.insert(
            "_config/modbus-adapter/etc/modbus/registers.yaml".into(),
            json!(NEW_ID),
        );
    });
    let (d, t) = plan(&base(), &new);
    assert!(!t.reboot, "{:?}", t.reasons);
    assert_eq!(t.restart, vec!["modbus-adapter"]);
    assert_eq!(d.containers["modbus-adapter"].change, Change::Modified);
    assert_eq!(
        d.containers["modbus-adapter"].keys,
        vec!["_config/modbus-adapter/etc/modbus/registers.yaml"]
    );
    // An inline JSON overlay file and a signature count for their container too.
    let new = changed(|m| {
        m["_config/edge-app/etc/edge-app/rules.json"]["thresholds"]["temperature"] = json!(90);
        m["_sigs/edge-app.json"]["signature"] = json!("AAAA");
    });
    let (d, t) = plan(&base(), &new);
    assert_eq!(t.restart, vec!["edge-app"]);
    assert_eq!(d.containers["edge-app"].keys.len(), 2);
}

#[test]
fn container_added_and_removed() {
    let new = changed(|m| {
        let keys: Vec<String> = m
            .keys()
            .filter(|k| k.starts_with("opcua-adapter/"))
            .cloned()
            .collect();
        for k in keys {
            let v = m.remove(&k).unwrap();
            let mut v = v;
            if k.ends_with("run.json") {
                v["name"] = json!("bacnet-adapter");
            }
            m.insert(k.replace("opcua-adapter", "bacnet-adapter"), v);
        }
    });
    let (d, t) = plan(&base(), &new);
    assert!(!t.reboot, "{:?}", t.reasons);
    assert_eq!(t.start, vec!["bacnet-adapter"]);
    assert_eq!(t.stop, vec!["opcua-adapter"]);
    assert!(t.restart.is_empty());
    assert_eq!(d.containers["bacnet-adapter"].change, Change::Added);
    assert_eq!(d.containers["opcua-adapter"].change, Change::Removed);
    assert_eq!(t.keep.len(), 5);
    // Removing a system container reboots.
    let new = changed(|m| {
        m.retain(|k, _| !k.starts_with("pv-tailscale/"));
    });
    let (_, t) = plan(&base(), &new);
    assert!(t.reboot);
    assert_eq!(t.stop, vec!["pv-tailscale"]);
}

#[test]
fn default_groups_decide_policy_when_the_state_has_none() {
    // Pantavisor's docs example: one container, put in `root` by default: system.
    let old = State::parse(DOCS_REVISION.as_bytes()).unwrap();
    let mut v: Value = serde_json::from_str(DOCS_REVISION).unwrap();
    v["awconnect/root.squashfs"] = json!(NEW_ID);
    let new = State::parse(&bytes(&v)).unwrap();
    assert!(plan(&old, &new).1.reboot);
    // Put in `app` explicitly, it restarts alone.
    let mut a: Value = serde_json::from_str(DOCS_REVISION).unwrap();
    a["awconnect/run.json"]["group"] = json!("app");
    let mut b = a.clone();
    b["awconnect/root.squashfs"] = json!(NEW_ID);
    let (_, t) = plan(
        &State::parse(&bytes(&a)).unwrap(),
        &State::parse(&bytes(&b)).unwrap(),
    );
    assert!(!t.reboot, "{:?}", t.reasons);
    assert_eq!(t.restart, vec!["awconnect"]);
}

#[test]
fn numbers_equal_in_canonical_form_are_no_change() {
    // Found by fuzzing: 2.0 and 2 are the same number once canonical.
    let new = changed(|m| {
        m["device.json"]["groups"][3]["auto_recovery"]["backoff_factor"] = json!(2);
        m["device.json"]["x-vendor"]["ratio"] = json!(1.0);
    });
    let old = changed(|m| {
        m["device.json"]["x-vendor"]["ratio"] = json!(1);
    });
    let (d, t) = plan(&old, &new);
    assert!(d.is_empty(), "{d:?}");
    assert!(!t.reboot);
}
