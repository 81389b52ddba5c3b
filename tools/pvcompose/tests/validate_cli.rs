//! `pvcompose validate` on every kind of input it accepts.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use pvstate::pvrexport::{export_file, ExportOptions};
use pvstate::{ObjectStore, State};
use serde_json::{json, Value};

const GATEWAY: &str = include_str!("../../pvstate/tests/data/gateway-revision.json");

fn run(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_pvcompose"))
        .args(args)
        .output()
        .unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn validate(path: &Path) -> (i32, String, String) {
    run(&["validate", path.to_str().unwrap()])
}

/// The gateway state with real objects in `store`.
fn gateway_state(store: &ObjectStore) -> State {
    let mut v: Value = serde_json::from_str(GATEWAY).unwrap();
    for (key, value) in v.as_object_mut().unwrap() {
        if key != "#spec" && value.is_string() {
            let id = store.put_bytes(format!("object {key}").as_bytes()).unwrap();
            *value = json!(id.to_string());
        }
    }
    State::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
}

#[test]
fn a_valid_state_file_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.json");
    fs::write(&path, GATEWAY).unwrap();
    let (code, out, _) = validate(&path);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("valid (38 keys, 6 containers, 18 objects not checked)"),
        "{out}"
    );
}

#[test]
fn an_invalid_state_file_lists_every_problem_and_exits_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut v: Value = serde_json::from_str(GATEWAY).unwrap();
    v["edge-app/run.json"]["status_goal"] = json!("RUNNING");
    v["os/run.json"]["group"] = json!("nowhere");
    let path = tmp.path().join("state.json");
    fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let (code, out, _) = validate(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("edge-app/run.json: status_goal: unknown variant `RUNNING`"),
        "{out}"
    );
    assert!(
        out.contains("os/run.json: group: \"nowhere\" does not exist"),
        "{out}"
    );
    assert!(out.contains("2 problem(s)"), "{out}");
}

#[test]
fn a_storage_directory_checks_every_trail_and_its_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path();
    let store = ObjectStore::open(storage.join("objects")).unwrap();
    let state = gateway_state(&store);
    for rev in ["0", "1", "locals/dev"] {
        fs::create_dir_all(storage.join(format!("trails/{rev}/.pvr"))).unwrap();
        fs::write(
            storage.join(format!("trails/{rev}/.pvr/json")),
            state.to_canonical(),
        )
        .unwrap();
    }
    let (code, out, _) = validate(storage);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("objects checked").count(), 3, "{out}");
    // One trail on its own finds the storage's objects.
    let (code, out, _) = validate(&storage.join("trails/1"));
    assert_eq!(code, 0, "{out}");
    // A corrupt and a missing object are named with their state key.
    let (_, kernel) = state
        .objects()
        .find(|(k, _)| *k == "bsp/kernel.img")
        .unwrap();
    fs::write(store.path(kernel), b"flipped").unwrap();
    let (_, rootfs) = state
        .objects()
        .find(|(k, _)| *k == "os/root.squashfs")
        .unwrap();
    fs::remove_file(store.path(rootfs)).unwrap();
    let (code, out, _) = validate(storage);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bsp/kernel.img: object") && out.contains("hashes to"),
        "{out}"
    );
    assert!(
        out.contains("os/root.squashfs: object") && out.contains("is not in the store"),
        "{out}"
    );
}

#[test]
fn a_pvrexport_is_checked_object_by_object() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path().join("objects")).unwrap();
    let state = gateway_state(&store);
    let archive = tmp.path().join("gw.tgz");
    export_file(&state, &store, &archive, ExportOptions::default()).unwrap();
    let (code, out, _) = validate(&archive);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("objects checked"), "{out}");
    // A part export has no BSP and is still valid.
    let part = tmp.path().join("edge-app.tar");
    let opts = ExportOptions {
        parts: vec!["edge-app".into()],
        ..Default::default()
    };
    export_file(&state, &store, &part, opts).unwrap();
    let (code, out, _) = validate(&part);
    assert_eq!(code, 0, "{out}");
    // A truncated archive is not.
    let bytes = fs::read(&archive).unwrap();
    fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let (code, out, _) = validate(&archive);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(archive): pvrexport"), "{out}");
}

#[test]
fn partial_states_need_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let mut v: Value = serde_json::from_str(GATEWAY).unwrap();
    v.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("bsp/"));
    let path = tmp.path().join("apps.json");
    fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let (code, out, _) = validate(&path);
    assert_eq!(code, 1);
    assert!(out.contains("bsp/run.json: missing"), "{out}");
    let (code, out, _) = run(&["validate", "--partial", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn unreadable_or_unknown_paths_exit_two_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = validate(&tmp.path().join("nope.json"));
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.starts_with("pvcompose: ") && err.contains("nope.json: No such file"),
        "{err}"
    );
    let (code, _, err) = validate(tmp.path());
    assert_eq!(code, 2);
    assert!(err.contains("not a state JSON, pvrexport, trail"), "{err}");
    let (code, out, _) = run(&["validate", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Exit status: 0 valid, 1 problems found"),
        "{out}"
    );
}

#[test]
fn garbage_is_reported_not_panicked_on() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("junk.json");
    fs::write(&path, b"\x00\xffnot json at all").unwrap();
    let (code, out, err) = validate(&path);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("(state): state: not valid JSON"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
}
