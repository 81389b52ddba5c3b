//! `pvcompose bsp` and `pvcompose pvroot`: a 6-container gateway.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use pvstate::diff::plan;
use pvstate::pvrexport::import_file;
use pvstate::{ObjectStore, State};

struct Gateway {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

/// Inputs of a gateway: BSP files, rootfs trees, two prebuilt parts, a
/// device.json and the manifest.
fn gateway() -> Gateway {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_path_buf();
    fs::create_dir_all(d.join("bsp/modules/lib/modules/6.1.0/kernel")).unwrap();
    fs::write(
        d.join("bsp/modules/lib/modules/6.1.0/kernel/e1000.ko"),
        vec![1u8; 50_000],
    )
    .unwrap();
    fs::create_dir_all(d.join("bsp/firmware/brcm")).unwrap();
    fs::write(d.join("bsp/firmware/brcm/wifi.bin"), vec![2u8; 20_000]).unwrap();
    fs::write(d.join("bsp/bzImage"), vec![3u8; 100_000]).unwrap();
    fs::write(d.join("bsp/initrd.cpio.gz"), vec![4u8; 10_000]).unwrap();
    fs::write(d.join("bsp/board.dtb"), vec![5u8; 1_000]).unwrap();
    for c in [
        "os",
        "pv-tailscale",
        "mqtt-broker",
        "edge-app",
        "modbus-adapter",
        "opcua-adapter",
    ] {
        small_tree(&d.join(format!("rootfs/{c}")), c);
    }
    fs::create_dir_all(d.join("config/edge-app/etc")).unwrap();
    fs::write(d.join("config/edge-app/etc/edge.toml"), "threshold = 85\n").unwrap();
    fs::write(
        d.join("device.json"),
        r#"{"groups": [
            {"name": "root", "status_goal": "STARTED", "restart_policy": "system", "timeout": 60},
            {"name": "platform", "status_goal": "STARTED", "restart_policy": "system"},
            {"name": "app", "status_goal": "STARTED", "restart_policy": "container"}]}"#,
    )
    .unwrap();
    fs::create_dir_all(d.join("parts")).unwrap();
    // Two parts built beforehand, as the Yocto container class deploys them.
    let (code, o, e) = pvcompose(&[
        "container",
        "--quiet",
        "--name",
        "pv-tailscale",
        "--group",
        "platform",
        "--mtime",
        "1700000000",
        "--rootfs",
        d.join("rootfs/pv-tailscale").to_str().unwrap(),
        "--out",
        d.join("parts/pv-tailscale").to_str().unwrap(),
        "--pvrexport",
        d.join("parts/pv-tailscale.pvrexport.tgz").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let (code, o, e) = pvcompose(&[
        "container",
        "--quiet",
        "--name",
        "opcua-adapter",
        "--group",
        "app",
        "--mtime",
        "1700000000",
        "--rootfs",
        d.join("rootfs/opcua-adapter").to_str().unwrap(),
        "--out",
        d.join("parts/opcua-adapter").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    fs::write(
        d.join("gateway.yaml"),
        r#"
bsp:
  kernel: bsp/bzImage
  initrd: bsp/initrd.cpio.gz
  fdt: [bsp/board.dtb]
  modules: bsp/modules
  firmware: bsp/firmware
containers:
  os:
    rootfs: rootfs/os
    group: root
    host_network: true
  pv-tailscale:
    part: parts/pv-tailscale.pvrexport.tgz
  mqtt-broker:
    rootfs: rootfs/mqtt-broker
    group: platform
    volumes: ["/var/lib/mosquitto:permanent"]
    entrypoint: [/usr/sbin/mosquitto]
    args: [-c, /etc/mosquitto/mosquitto.conf]
  edge-app:
    rootfs: rootfs/edge-app
    group: app
    status_goal: READY
    config_dir: config/edge-app
    squashfs: {comp: zstd}
  modbus-adapter:
    rootfs: rootfs/modbus-adapter
    group: app
  opcua-adapter:
    part: parts/opcua-adapter
core: [os, pv-tailscale, mqtt-broker, edge-app]
optional: [modbus-adapter, opcua-adapter]
device: device.json
config:
  PV_LOG_LEVEL: "3"
squashfs:
  comp: xz
  mtime: 1700000000
"#,
    )
    .unwrap();
    Gateway { _tmp: tmp, dir: d }
}

fn assemble(g: &Gateway, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let manifest = g.dir.join("gateway.yaml");
    let mut args = vec![
        "pvroot",
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    pvcompose(&args)
}

fn rev0(out: &Path) -> State {
    State::parse(&fs::read(out.join("trails/0/.pvr/json")).unwrap()).unwrap()
}

#[test]
fn a_six_container_gateway_pvroot() {
    require_root();
    let g = gateway();
    let out = g.dir.join("pvroot");
    let (code, stdout, stderr) = assemble(&g, &out, &["--jobs", "2", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // One JSON line per packed tree: 2 BSP trees and 4 containers composed here.
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bsp/firmware",
            "bsp/modules",
            "edge-app",
            "modbus-adapter",
            "mqtt-broker",
            "os"
        ]
    );
    for l in &lines {
        assert!(
            l["files"].as_u64().unwrap() > 0 && l["bytes_out"].as_u64().unwrap() > 0,
            "{l}"
        );
        assert!(
            l["ratio"].as_f64().is_some() && l["seconds"].as_f64().is_some(),
            "{l}"
        );
    }

    // The storage validates, objects included.
    let (code, report, _) = pvcompose(&["validate", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("objects checked"), "{report}");

    // Revision 0 holds the BSP and the core containers only.
    let state = rev0(&out);
    let containers: Vec<&str> = state.containers().keys().copied().collect();
    assert_eq!(
        containers,
        ["edge-app", "mqtt-broker", "os", "pv-tailscale"]
    );
    let bsp = state.bsp().unwrap();
    assert_eq!(bsp.fdt.as_deref(), Some("board.dtb"));
    assert_eq!(bsp.modules.as_deref(), Some("modules.squashfs"));
    assert_eq!(state.effective("mqtt-broker").unwrap().group, "platform");
    assert!(state.contains("_config/edge-app/etc/edge.toml"));
    assert_eq!(
        state
            .get("edge-app/src.json")
            .map(|e| e.to_value()["squashfs"]["comp"].clone()),
        Some(serde_json::json!("zstd"))
    );
    let store = ObjectStore::open(out.join("objects")).unwrap();
    assert_eq!(
        store.list().unwrap(),
        state.object_ids(),
        "objects/ holds exactly revision 0's objects"
    );

    // Optional containers are factory packages, not part of revision 0.
    assert_eq!(
        listing(&out.join("factory-pkgs.d")),
        [
            "modbus-adapter.pvrexport.tgz",
            "opcua-adapter.pvrexport.tgz"
        ]
    );
    for name in ["modbus-adapter", "opcua-adapter"] {
        let imported = import_file(
            &out.join(format!("factory-pkgs.d/{name}.pvrexport.tgz")),
            None,
        )
        .unwrap();
        assert_eq!(
            imported
                .state
                .containers()
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [name]
        );
        for id in imported.state.object_ids() {
            assert!(
                !state.object_ids().contains(&id),
                "{name}'s object {id} leaked into revision 0"
            );
        }
    }
    assert_eq!(
        fs::read_to_string(out.join("boot/pv.env")).unwrap(),
        "pv_rev=0\npv_try=\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("config/pantavisor.config")).unwrap(),
        "PV_LOG_LEVEL=3\n"
    );
    // Nothing but the pvroot is left beside it.
    assert!(
        listing(&g.dir).iter().all(|n| !n.starts_with('.')),
        "{:?}",
        listing(&g.dir)
    );
    assert!(
        listing(&out).iter().all(|n| !n.starts_with('.')),
        "{:?}",
        listing(&out)
    );
}

#[test]
fn a_changed_file_changes_only_its_container() {
    require_root();
    let g = gateway();
    let (a, b) = (g.dir.join("pvroot-a"), g.dir.join("pvroot-b"));
    assert_eq!(assemble(&g, &a, &["--quiet"]).0, 0);
    // Assembled again from the same inputs: the same bytes.
    assert_eq!(assemble(&g, &b, &["--quiet"]).0, 0);
    assert_eq!(
        fs::read(a.join("trails/0/.pvr/json")).unwrap(),
        fs::read(b.join("trails/0/.pvr/json")).unwrap()
    );
    assert_eq!(listing(&a.join("objects")), listing(&b.join("objects")));
    assert_eq!(
        fs::read(a.join("factory-pkgs.d/modbus-adapter.pvrexport.tgz")).unwrap(),
        fs::read(b.join("factory-pkgs.d/modbus-adapter.pvrexport.tgz")).unwrap()
    );
    // One file of one container changes: only that container's object does.
    fs::write(
        g.dir.join("rootfs/mqtt-broker/etc/os-release"),
        "NAME=mqtt-broker 2.0.18\n",
    )
    .unwrap();
    assert_eq!(assemble(&g, &b, &["--quiet"]).0, 0);
    let (old, new) = (rev0(&a), rev0(&b));
    assert_ne!(old.id(), new.id());
    let (d, _) = plan(&old, &new);
    assert!(d.bsp.is_empty() && d.root.is_empty(), "{d:?}");
    assert_eq!(d.containers.keys().collect::<Vec<_>>(), ["mqtt-broker"]);
    assert_eq!(
        d.containers["mqtt-broker"].keys,
        ["mqtt-broker/root.squashfs"]
    );
}

#[test]
fn a_prebuilt_bsp_part_can_be_used() {
    require_root();
    let g = gateway();
    let bsp = g.dir.join("parts/bsp");
    let d = &g.dir;
    let (code, o, e) = pvcompose(&[
        "bsp",
        "--quiet",
        "--mtime",
        "1700000000",
        "--kernel",
        d.join("bsp/bzImage").to_str().unwrap(),
        "--initrd",
        d.join("bsp/initrd.cpio.gz").to_str().unwrap(),
        "--fdt",
        d.join("bsp/board.dtb").to_str().unwrap(),
        "--modules",
        d.join("bsp/modules").to_str().unwrap(),
        "--firmware",
        d.join("bsp/firmware").to_str().unwrap(),
        "--out",
        bsp.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    // The image's root is the release's directory: it is mounted on
    // /lib/modules/$(uname -r).
    let modules = Mounted::new(&part_object(&bsp, "bsp/modules.squashfs"));
    assert_eq!(
        fs::read(modules.path().join("kernel/e1000.ko")).unwrap(),
        vec![1u8; 50_000]
    );
    drop(modules);
    // Modules of two kernels: which one is meant must be said.
    fs::create_dir_all(d.join("bsp/modules/lib/modules/6.6.0/kernel")).unwrap();
    let (code, o, e) = pvcompose(&[
        "bsp",
        "--kernel",
        d.join("bsp/bzImage").to_str().unwrap(),
        "--initrd",
        d.join("bsp/initrd.cpio.gz").to_str().unwrap(),
        "--modules",
        d.join("bsp/modules").to_str().unwrap(),
        "--out",
        d.join("parts/bsp2").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{o}{e}");
    assert!(e.contains("modules of 2 kernels (6.1.0, 6.6.0)"), "{e}");
    assert!(!d.join("parts/bsp2/pvrexport.tgz").exists());
    fs::remove_dir_all(d.join("bsp/modules/lib/modules/6.6.0")).unwrap();
    let manifest = fs::read_to_string(d.join("gateway.yaml")).unwrap();
    let start = manifest.find("bsp:").unwrap();
    let end = manifest.find("containers:").unwrap();
    let manifest = format!(
        "{}bsp:\n  part: parts/bsp\n{}",
        &manifest[..start],
        &manifest[end..]
    );
    fs::write(d.join("gateway.yaml"), manifest).unwrap();
    let out = d.join("pvroot");
    let (code, o, e) = assemble(&g, &out, &["--quiet"]);
    assert_eq!(code, 0, "{o}{e}");
    // The same BSP as composing it inside the pvroot.
    let inline = d.join("pvroot-inline");
    let built: State = {
        let g2 = gateway();
        assert_eq!(assemble(&g2, &inline, &["--quiet"]).0, 0);
        rev0(&inline)
    };
    let state = rev0(&out);
    for key in [
        "bsp/kernel.img",
        "bsp/pantavisor",
        "bsp/board.dtb",
        "bsp/modules.squashfs",
        "bsp/firmware.squashfs",
        "bsp/run.json",
    ] {
        assert_eq!(state.get(key), built.get(key), "{key}");
    }
}

#[test]
fn a_signed_pvroot_verifies_strictly_and_a_bad_key_is_refused() {
    require_root();
    let g = gateway();
    let d = &g.dir;
    let run = |args: &[&str]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (ci/test installs it)");
        assert!(st.success(), "openssl {args:?}");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        "dev.key",
    ]);
    run(&["pkey", "-in", "dev.key", "-pubout", "-out", "dev.pub"]);
    let manifest = fs::read_to_string(d.join("gateway.yaml")).unwrap();
    fs::write(
        d.join("gateway.yaml"),
        format!("{manifest}sign:\n  key: dev.key\n"),
    )
    .unwrap();
    let out = d.join("pvroot");
    let (code, o, e) = assemble(&g, &out, &["--quiet"]);
    assert_eq!(code, 0, "{o}{e}");
    let trusted =
        pvstate::sig::trust_store_from_pem(&fs::read_to_string(d.join("dev.pub")).unwrap())
            .unwrap();
    let state = rev0(&out);
    for part in ["bsp", "os", "pv-tailscale", "mqtt-broker", "edge-app"] {
        assert!(
            state.entries().contains_key(&format!("_sigs/{part}.json")),
            "no signature for {part}"
        );
    }
    // Strict: every key but device.json is covered (device.json belongs to no part).
    let (problems, _) = pvstate::sig::check(&state, pvstate::sig::Mode::Lenient, &trusted);
    assert!(problems.is_empty(), "{problems:?}");
    // Each factory package carries its own signature.
    let store = ObjectStore::open(d.join("scratch-objects")).unwrap();
    let pkg = import_file(
        &out.join("factory-pkgs.d/modbus-adapter.pvrexport.tgz"),
        Some(&store),
    )
    .unwrap()
    .state;
    assert!(pkg.entries().contains_key("_sigs/modbus-adapter.json"));
    let (problems, _) = pvstate::sig::check(&pkg, pvstate::sig::Mode::Strict, &trusted);
    assert!(problems.is_empty(), "{problems:?}");
    // (Verified with the P-384 public key: ES384.) An RSA key signs with RS256.
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "dev.key",
    ]);
    run(&["pkey", "-in", "dev.key", "-pubout", "-out", "dev.pub"]);
    let out_rsa = d.join("pvroot-rsa");
    let (code, o, e) = assemble(&g, &out_rsa, &["--quiet"]);
    assert_eq!(code, 0, "{o}{e}");
    let trusted =
        pvstate::sig::trust_store_from_pem(&fs::read_to_string(d.join("dev.pub")).unwrap())
            .unwrap();
    let (problems, _) = pvstate::sig::check(&rev0(&out_rsa), pvstate::sig::Mode::Lenient, &trusted);
    assert!(problems.is_empty(), "{problems:?}");
    // Not a private key (a public one): a clear error and no output.
    fs::copy(d.join("dev.pub"), d.join("dev.key")).unwrap();
    let out2 = d.join("pvroot2");
    let (code, _, e) = assemble(&g, &out2, &["--quiet"]);
    assert_ne!(code, 0);
    assert!(e.contains("sign.key") && e.contains("private key"), "{e}");
    assert!(!out2.exists());
}
