//! Parsing, validation and canonical round trip of whole states.

mod common;

use common::*;
use pvstate::model::{RestartPolicy, StatusGoal};
use pvstate::{canonical, Entry, Error, State};
use serde_json::{json, Value};

fn assert_round_trip(text: &str) {
    let state = State::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let original: Value = serde_json::from_str(text).unwrap();
    let expected = canonical::to_vec(&original);
    assert_eq!(
        String::from_utf8_lossy(&state.to_canonical()),
        String::from_utf8_lossy(&expected)
    );
    // Canonical output parses back to the same bytes.
    let again = State::parse(&expected).unwrap();
    assert_eq!(again.to_canonical(), expected);
    assert_eq!(again.id(), state.id());
}

#[test]
fn pantavisor_docs_example_parses_typed_and_round_trips() {
    assert_round_trip(DOCS_REVISION);
    let state = State::parse(DOCS_REVISION.as_bytes()).unwrap();
    let run = state.containers()["awconnect"];
    assert_eq!(run.root_volume, "root.squashfs");
    assert_eq!(run.storage.len(), 2);
    assert!(matches!(state.get("bsp/run.json"), Some(Entry::BspRun(_))));
    assert!(matches!(
        state.get("awconnect/src.json"),
        Some(Entry::Src(_))
    ));
    assert!(matches!(
        state.get("awconnect/root.squashfs"),
        Some(Entry::Object(_))
    ));
    assert_eq!(state.bsp().unwrap().addons.as_ref().unwrap().len(), 1);
    // No groups in the state: Pantavisor's defaults, the only container goes to root.
    let eff = state.effective("awconnect").unwrap();
    assert_eq!(eff.group, "root");
    assert_eq!(eff.restart_policy, RestartPolicy::System);
}

#[test]
fn gateway_parses_typed_and_round_trips() {
    assert_round_trip(GATEWAY);
    let state = State::parse(GATEWAY.as_bytes()).unwrap();
    assert_eq!(state.containers().len(), 6);
    assert!(matches!(state.get("device.json"), Some(Entry::Device(_))));
    assert!(matches!(
        state.get("_sigs/edge-app.json"),
        Some(Entry::Signature(_))
    ));
    assert!(matches!(
        state.get("mqtt-broker/services.json"),
        Some(Entry::Services(_))
    ));
    // Unknown members survive in `extra`.
    let edge = state.containers()["edge-app"];
    assert_eq!(edge.extra["x-build"]["yocto-recipe"], "edge-app-container");
    assert_eq!(
        state.device().unwrap().extra["x-vendor"]["sku"],
        "gw-wifi-lte"
    );
    // Group defaults apply where the container says nothing.
    let edge = state.effective("edge-app").unwrap();
    assert_eq!(edge.status_goal, StatusGoal::Ready);
    assert_eq!(edge.restart_policy, RestartPolicy::Container);
    assert_eq!(
        edge.auto_recovery.unwrap().backoff_policy.as_deref(),
        Some("never")
    );
    let tailscale = state.effective("pv-tailscale").unwrap();
    assert_eq!(tailscale.restart_policy, RestartPolicy::System);
    assert_eq!(
        state
            .effective("opcua-adapter")
            .unwrap()
            .auto_recovery
            .unwrap()
            .backoff_policy
            .as_deref(),
        Some("10min")
    );
}

#[test]
fn canonical_form_does_not_depend_on_input_formatting() {
    let a = State::parse(GATEWAY.as_bytes()).unwrap();
    let compact = serde_json::to_vec(&gateway()).unwrap();
    let b = State::parse(&compact).unwrap();
    assert_eq!(a.to_canonical(), b.to_canonical());
    assert_eq!(a.id(), b.id());
}

/// Apply `mutate` to the gateway state and return every problem, as text.
fn problems_after(mutate: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<String> {
    let mut v = gateway();
    mutate(v.as_object_mut().unwrap());
    problems_of(&bytes(&v))
}

fn problems_of(text: &[u8]) -> Vec<String> {
    match State::parse(text) {
        Ok(_) => vec![],
        Err(Error::Invalid(p)) => p.0.iter().map(|p| p.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

fn assert_problem(problems: &[String], key: &str, needle: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with(&format!("{key}: ")) && p.contains(needle)),
        "no problem on {key:?} containing {needle:?} in {problems:#?}"
    );
}

#[test]
fn rejects_wrong_or_missing_spec() {
    let p = problems_after(|m| {
        m.insert("#spec".into(), json!("pantavisor-service-system@2"));
    });
    assert_problem(&p, "#spec", "expected \"pantavisor-service-system@1\"");
    let p = problems_after(|m| {
        m.remove("#spec");
    });
    assert_problem(&p, "#spec", "missing");
    let p = problems_after(|m| {
        m["edge-app/run.json"]["#spec"] = json!("service-manifest-run@2");
    });
    assert_problem(
        &p,
        "edge-app/run.json",
        "#spec: expected \"service-manifest-run@1\"",
    );
    let p = problems_after(|m| {
        m["mqtt-broker/services.json"]
            .as_object_mut()
            .unwrap()
            .remove("#spec");
    });
    assert_problem(&p, "mqtt-broker/services.json", "missing field `#spec`");
}

#[test]
fn rejects_missing_mandatory_fields() {
    for field in ["name", "type", "config", "root-volume", "storage"] {
        let p = problems_after(|m| {
            m["modbus-adapter/run.json"]
                .as_object_mut()
                .unwrap()
                .remove(field);
        });
        assert_problem(
            &p,
            "modbus-adapter/run.json",
            &format!("missing field `{field}`"),
        );
    }
    let p = problems_after(|m| {
        m.remove("bsp/run.json");
    });
    assert_problem(&p, "bsp/run.json", "missing");
    let p = problems_after(|m| {
        m["bsp/run.json"].as_object_mut().unwrap().remove("linux");
    });
    assert_problem(&p, "bsp/run.json", "needs \"linux\" and \"initrd\"");
    let p = problems_after(|m| {
        m["device.json"]["groups"][1]
            .as_object_mut()
            .unwrap()
            .remove("name");
    });
    assert_problem(&p, "device.json", "groups[1]: missing field `name`");
}

#[test]
fn rejects_bad_enum_values_naming_the_field() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "status_goal",
            json!("RUNNING"),
            "status_goal: unknown variant `RUNNING`",
        ),
        (
            "restart_policy",
            json!("sometimes"),
            "restart_policy: unknown variant `sometimes`",
        ),
        ("type", json!("docker"), "type: unknown variant `docker`"),
        ("roles", json!(["root"]), "roles[0]: unknown variant `root`"),
        (
            "storage",
            json!({"lxc-overlay": {"persistence": "forever"}}),
            "storage.lxc-overlay.persistence: unknown variant `forever`",
        ),
        (
            "auto_recovery",
            json!({"policy": "maybe"}),
            "auto_recovery.policy: unknown variant `maybe`",
        ),
        (
            "auto_recovery",
            json!({"policy": "always", "backoff_policy": "sometimes"}),
            "auto_recovery.backoff_policy: \"sometimes\" is not reboot, never or a duration",
        ),
    ];
    for (field, value, needle) in cases {
        let p = problems_after(|m| {
            m["edge-app/run.json"][field] = value;
        });
        assert_problem(&p, "edge-app/run.json", needle);
    }
    let p = problems_after(|m| {
        m["device.json"]["groups"][3]["status_goal"] = json!("UP");
    });
    assert_problem(
        &p,
        "device.json",
        "groups[3].status_goal: unknown variant `UP`",
    );
    let p = problems_after(|m| {
        m["device.json"]["disks"][0]["type"] = json!("floppy");
    });
    assert_problem(&p, "device.json", "unknown disk type \"floppy\"");
}

#[test]
fn rejects_bad_object_ids() {
    for bad in ["abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
        let p = problems_after(|m| {
            m.insert("edge-app/root.squashfs".into(), json!(bad));
        });
        assert_problem(
            &p,
            "edge-app/root.squashfs",
            "is not an object id (64 lowercase hex",
        );
    }
    let p = problems_after(|m| {
        m.insert("bsp/kernel.img".into(), json!({"not": "an id"}));
    });
    assert_problem(&p, "bsp/kernel.img", "expected an object id");
}

#[test]
fn rejects_references_to_files_the_state_lacks() {
    let p = problems_after(|m| {
        m.remove("edge-app/root.squashfs");
    });
    assert_problem(
        &p,
        "edge-app/run.json",
        "root-volume: refers to \"edge-app/root.squashfs\"",
    );
    let p = problems_after(|m| {
        m.remove("opcua-adapter/config.json");
    });
    assert_problem(
        &p,
        "opcua-adapter/run.json",
        "config: refers to \"opcua-adapter/config.json\"",
    );
    let p = problems_after(|m| {
        m["os/run.json"]["volumes"] = json!(["data.squashfs"]);
    });
    assert_problem(&p, "os/run.json", "volumes: refers to \"os/data.squashfs\"");
    let p = problems_after(|m| {
        m.remove("bsp/modules.squashfs");
    });
    assert_problem(
        &p,
        "bsp/run.json",
        "modules: refers to \"bsp/modules.squashfs\"",
    );
    let p = problems_after(|m| {
        m["edge-app/run.json"]["root-volume"] = json!("../os/root.squashfs");
    });
    assert_problem(
        &p,
        "edge-app/run.json",
        "root-volume: \"../os/root.squashfs\": contains a '..'",
    );
    let p = problems_after(|m| {
        m["mqtt-broker/run.json"]["storage"]["docker--var-lib-mosquitto"]["disk"] = json!("nvme");
    });
    assert_problem(&p, "mqtt-broker/run.json", "no disk named \"nvme\"");
}

#[test]
fn rejects_names_and_keys_that_escape_their_directory() {
    let run = |name: &str| {
        json!({"#spec": "service-manifest-run@1", "name": name, "type": "oci", "config": "config.json",
               "root-volume": "root.squashfs", "storage": {}})
    };
    for (key, needle) in [
        ("../x/run.json", "'..' component"),
        ("/abs/run.json", "absolute path"),
        ("a//run.json", "empty component ('//')"),
        ("nul\u{0}/run.json", "NUL"),
        ("./x/run.json", "'.' component"),
    ] {
        let p = problems_after(|m| {
            m.insert(key.into(), run("x"));
        });
        assert_problem(&p, key, needle);
    }
    let p = problems_after(|m| {
        m["edge-app/run.json"]["name"] = json!("../x");
    });
    assert_problem(
        &p,
        "edge-app/run.json",
        "name: \"../x\" does not match its directory",
    );
    let p = problems_after(|m| {
        m.insert("_x/root.squashfs".into(), json!("0".repeat(64)));
        m.insert("bad name/run.json".into(), run("bad name"));
    });
    assert_problem(&p, "bad name/run.json", "container name contains ' '");
    let p = problems_after(|m| {
        m["edge-app/run.json"]["storage"] = json!({"../../etc": {"persistence": "permanent"}});
    });
    assert_problem(&p, "edge-app/run.json", "storage: \"../../etc\"");
}

#[test]
fn rejects_a_container_in_a_group_that_does_not_exist() {
    let p = problems_after(|m| {
        m["edge-app/run.json"]["group"] = json!("apps");
    });
    assert_problem(
        &p,
        "edge-app/run.json",
        "group: \"apps\" does not exist; the state's groups are data, root, platform, app",
    );
    // With Pantavisor's default groups too.
    let mut v: Value = serde_json::from_str(DOCS_REVISION).unwrap();
    v["awconnect/run.json"]["group"] = json!("middleware");
    assert_problem(
        &problems_of(&bytes(&v)),
        "awconnect/run.json",
        "the default groups are",
    );
}

#[test]
fn rejects_duplicate_names() {
    // A key written twice in the state JSON.
    let text = GATEWAY.replacen(
        "\"#spec\": \"pantavisor-service-system@1\",",
        "\"#spec\": \"pantavisor-service-system@1\", \"bsp/kernel.img\": \"0000000000000000000000000000000000000000000000000000000000000000\",",
        1,
    );
    assert_problem(
        &problems_of(text.as_bytes()),
        "bsp/kernel.img",
        "duplicate key",
    );
    // Two containers claiming the same name.
    let p = problems_after(|m| {
        m["opcua-adapter/run.json"]["name"] = json!("modbus-adapter");
    });
    assert_problem(
        &p,
        "opcua-adapter/run.json",
        "\"modbus-adapter\" does not match its directory",
    );
    let p = problems_after(|m| {
        m["device.json"]["groups"][2]["name"] = json!("root");
    });
    assert_problem(&p, "device.json", "duplicate group name \"root\"");
    let p = problems_after(|m| {
        m["device.json"]["disks"] =
            json!([{"name": "d", "type": "volume-disk"}, {"name": "d", "type": "swap-disk"}]);
    });
    assert_problem(&p, "device.json", "duplicate disk name or alias \"d\"");
    let p = problems_after(|m| {
        m["mqtt-broker/services.json"]["services"] = json!([{"name": "mqtt"}, {"name": "mqtt"}]);
    });
    assert_problem(
        &p,
        "mqtt-broker/services.json",
        "duplicate service name \"mqtt\"",
    );
    // A required service nobody provides is a missing dependency; the
    // gateway's own (mqtt from mqtt-broker) is not.
    let p = problems_after(|m| {
        m["mqtt-broker/services.json"]["services"][0]["name"] = json!("amqp");
    });
    assert_problem(
        &p,
        "edge-app/run.json",
        "services.required: \"mqtt\": no container of the state provides it",
    );
    assert!(
        problems_after(|_| {}).is_empty(),
        "the gateway's own state validates"
    );
}

#[test]
fn rejects_bad_signature_documents() {
    let p = problems_after(|m| {
        m["_sigs/edge-app.json"]["protected"] = json!("%%%");
    });
    assert_problem(&p, "_sigs/edge-app.json", "protected: not base64url");
    let p = problems_after(|m| {
        m["_sigs/edge-app.json"]["#spec"] = json!("pvs@1");
    });
    assert_problem(&p, "_sigs/edge-app.json", "#spec: expected \"pvs@2\"");
    let p = problems_after(|m| {
        // {"alg":"HS256"}
        m["_sigs/edge-app.json"]["protected"] = json!("eyJhbGciOiJIUzI1NiJ9");
    });
    assert_problem(&p, "_sigs/edge-app.json", "protected.alg: \"HS256\"");
}

#[test]
fn reports_every_problem_not_only_the_first() {
    let p = problems_after(|m| {
        m["edge-app/run.json"]["status_goal"] = json!("RUNNING");
        m.remove("os/root.squashfs");
        m.insert("bsp/kernel.img".into(), json!("xyz"));
    });
    assert_problem(&p, "edge-app/run.json", "status_goal");
    assert_problem(&p, "os/run.json", "root-volume");
    assert_problem(&p, "bsp/kernel.img", "not an object id");
}

#[test]
fn not_json_is_a_clear_error() {
    let err = State::parse(b"{\"#spec\": ").unwrap_err();
    assert!(
        err.to_string().starts_with("state: not valid JSON"),
        "{err}"
    );
    let err = State::parse(b"[1,2]").unwrap_err();
    assert!(err.to_string().contains("expected a JSON object"), "{err}");
}

#[test]
fn accepts_what_pvr_writes_for_data_containers() {
    // pvr's template leaves out `config` for MOUNTED containers and writes
    // `built-in` persistence. (A `dm:` root volume needs its manifest:
    // a_dm_volume_needs_its_verity_manifest_and_hash_device.)
    let p = problems_after(|m| {
        let run = m["os/run.json"].as_object_mut().unwrap();
        run.remove("config");
        run.insert("group".into(), json!("data"));
        run.insert(
            "storage".into(),
            json!({"docker--data": {"persistence": "built-in"}}),
        );
    });
    assert!(p.is_empty(), "{p:#?}");
    // A started container still needs its config.
    let p = problems_after(|m| {
        m["os/run.json"].as_object_mut().unwrap().remove("config");
    });
    assert_problem(&p, "os/run.json", "missing field `config`");
}

#[test]
fn a_dm_volume_needs_its_verity_manifest_and_hash_device() {
    let dm = |m: &mut serde_json::Map<String, Value>| {
        m["edge-app/run.json"]["root-volume"] = json!("dm:root.squashfs");
    };
    let p = problems_after(dm);
    assert_problem(
        &p,
        "edge-app/run.json",
        "needs its dm-verity manifest \"edge-app/_dm/root.squashfs.json\"",
    );
    let manifest = json!({
        "type": "dm-verity", "data_device": "root.squashfs",
        "hash_device": "root.squashfs.hash", "root_hash": "ab".repeat(32),
        "salt": "cd".repeat(32), "uuid": "00000000-0000-4000-8000-000000000000"
    });
    let p = problems_after(|m| {
        dm(m);
        m.insert("edge-app/_dm/root.squashfs.json".into(), manifest.clone());
    });
    assert_problem(
        &p,
        "edge-app/_dm/root.squashfs.json",
        "hash_device: refers to \"edge-app/root.squashfs.hash\"",
    );
    let p = problems_after(|m| {
        dm(m);
        let mut bad = manifest.clone();
        bad["root_hash"] = json!("xyz");
        m.insert("edge-app/_dm/root.squashfs.json".into(), bad);
    });
    assert_problem(&p, "edge-app/_dm/root.squashfs.json", "root_hash");
    let p = problems_after(|m| {
        dm(m);
        m.insert("edge-app/_dm/root.squashfs.json".into(), manifest.clone());
        m.insert("edge-app/root.squashfs.hash".into(), json!("0".repeat(64)));
    });
    assert!(p.is_empty(), "{p:#?}");
}
