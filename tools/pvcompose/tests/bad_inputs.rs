//! Bad input gives one actionable line, a non-zero exit and writes nothing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// Run pvcompose, expect failure with one line containing `needle`, and
/// check that nothing was left in `parent` besides what was there.
fn fails(args: &[&str], needle: &str, parent: &Path) {
    let before = listing(parent);
    let (code, out, err) = pvcompose(args);
    assert_eq!(code, 1, "exit code for {args:?}: {out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line for {args:?}, got {err:?}");
    assert!(
        lines[0].starts_with("pvcompose: error: ") && lines[0].contains(needle),
        "{:?} lacks {needle:?}",
        lines[0]
    );
    assert!(!err.contains("panicked"));
    assert_eq!(listing(parent), before, "{args:?} left files behind");
}

fn setup() -> (tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    small_tree(&tmp.path().join("rootfs"), "x");
    let rootfs = tmp.path().join("rootfs").to_str().unwrap().to_string();
    let out = tmp.path().join("out").to_str().unwrap().to_string();
    (tmp, rootfs, out)
}

#[test]
fn missing_rootfs() {
    let (tmp, _, out) = setup();
    fails(
        &[
            "container",
            "--rootfs",
            "/nonexistent/rootfs",
            "--name",
            "app",
            "--out",
            &out,
        ],
        "rootfs /nonexistent/rootfs of container app: No such file or directory",
        tmp.path(),
    );
}

#[test]
fn unknown_compressor() {
    let (tmp, rootfs, out) = setup();
    fails(
        &[
            "container",
            "--rootfs",
            &rootfs,
            "--name",
            "app",
            "--out",
            &out,
            "--comp",
            "brotli",
        ],
        "unknown compressor \"brotli\"; use xz, zstd, lz4 or gzip",
        tmp.path(),
    );
}

#[test]
fn a_container_named_dotdot_x() {
    let (tmp, rootfs, out) = setup();
    fails(
        &[
            "container",
            "--rootfs",
            &rootfs,
            "--name",
            "../x",
            "--out",
            &out,
        ],
        "container name \"../x\"",
        tmp.path(),
    );
}

#[test]
fn bad_settings_fail_before_packing() {
    let (tmp, rootfs, out) = setup();
    fails(
        &[
            "container",
            "--rootfs",
            &rootfs,
            "--name",
            "app",
            "--out",
            &out,
            "--volume",
            "/data:forever",
        ],
        "persistence \"forever\" is not permanent, revision or boot",
        tmp.path(),
    );
    fails(
        &[
            "container",
            "--rootfs",
            &rootfs,
            "--name",
            "app",
            "--out",
            &out,
            "--user",
            "ghost",
        ],
        "user \"ghost\" is not in the rootfs' /etc/passwd",
        tmp.path(),
    );
    let args = tmp.path().join("args.json");
    fs::write(
        &args,
        r#"{"PV_GROUP": "app", "PV_LXC_EXTRA_CONF": "lxc.x = 1"}"#,
    )
    .unwrap();
    fails(
        &[
            "container",
            "--rootfs",
            &rootfs,
            "--name",
            "app",
            "--out",
            &out,
            "--args-json",
            args.to_str().unwrap(),
        ],
        "key \"PV_LXC_EXTRA_CONF\" is not supported",
        tmp.path(),
    );
}

#[test]
fn an_unreadable_file() {
    require_root();
    // Root reads everything; the composer runs as an unprivileged user here
    // (as it does in a build) over a tree with one file it may not read.
    let (tmp, rootfs, _) = setup();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let secret = Path::new(&rootfs).join("etc/secret");
    fs::write(&secret, "key").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let outdir = tmp.path().join("outputs");
    fs::create_dir(&outdir).unwrap();
    std::os::unix::fs::chown(&outdir, Some(65534), Some(65534)).unwrap();
    // A copy of the binary the unprivileged user can reach wherever the
    // checkout lives.
    let binary = tmp.path().join("pvcompose");
    fs::copy(env!("CARGO_BIN_EXE_pvcompose"), &binary).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .args(["container", "--name", "app", "--rootfs", &rootfs, "--out"])
        .arg(outdir.join("part"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("etc/secret: Permission denied"), "{err}");
    assert!(listing(&outdir).is_empty(), "{:?}", listing(&outdir));
}

fn manifest_fails(yaml: &str, needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    small_tree(&tmp.path().join("rootfs/a"), "a");
    small_tree(&tmp.path().join("rootfs/b"), "b");
    fs::write(tmp.path().join("bzImage"), "k").unwrap();
    fs::write(tmp.path().join("initrd"), "i").unwrap();
    let manifest = tmp.path().join("m.yaml");
    fs::write(
        &manifest,
        format!("bsp: {{kernel: bzImage, initrd: initrd}}\n{yaml}"),
    )
    .unwrap();
    let out = tmp.path().join("pvroot");
    fails(
        &[
            "pvroot",
            "--manifest",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        needle,
        tmp.path(),
    );
}

#[test]
fn manifest_naming_an_undefined_container() {
    manifest_fails(
        "containers:\n  a: {rootfs: rootfs/a}\ncore: [a, ghost]\n",
        "core: container \"ghost\" is not defined under containers",
    );
}

#[test]
fn duplicate_container_names() {
    manifest_fails(
        "containers:\n  a: {rootfs: rootfs/a}\n  a: {rootfs: rootfs/b}\ncore: [a]\n",
        "container \"a\" is defined twice",
    );
    manifest_fails(
        "containers:\n  a: {rootfs: rootfs/a}\ncore: [a]\noptional: [a]\n",
        "optional: container \"a\" is listed twice",
    );
}

#[test]
fn manifest_with_a_container_named_dotdot_x() {
    manifest_fails(
        "containers:\n  ../x: {rootfs: rootfs/a}\ncore: [../x]\n",
        "core: container name \"../x\"",
    );
}

#[test]
fn manifest_part_that_holds_another_container() {
    let tmp = tempfile::tempdir().unwrap();
    small_tree(&tmp.path().join("rootfs"), "a");
    let (code, o, e) = pvcompose(&[
        "container",
        "--quiet",
        "--name",
        "real-name",
        "--rootfs",
        tmp.path().join("rootfs").to_str().unwrap(),
        "--out",
        tmp.path().join("part").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    fs::write(tmp.path().join("k"), "k").unwrap();
    fs::write(
        tmp.path().join("m.yaml"),
        "bsp: {kernel: k, initrd: k}\ncontainers:\n  other: {part: part}\ncore: [other]\n",
    )
    .unwrap();
    fails(
        &[
            "pvroot",
            "--manifest",
            tmp.path().join("m.yaml").to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ],
        "the manifest calls it \"other\" but the part holds container(s) [\"real-name\"]",
        tmp.path(),
    );
}

#[test]
fn help_explains() {
    for cmd in ["container", "bsp", "pvroot", "validate"] {
        let (code, out, _) = pvcompose(&[cmd, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("Usage: pvcompose"), "{out}");
    }
    let (_, out, _) = pvcompose(&["container", "--help"]);
    for flag in [
        "--rootfs",
        "--name",
        "--out",
        "--comp",
        "--exclude",
        "--mtime",
        "--bcj",
        "--mem",
        "--json",
    ] {
        assert!(out.contains(flag), "container --help lacks {flag}");
    }
}

#[test]
fn a_missing_or_old_mksquashfs_is_named() {
    let (tmp, rootfs, out) = setup();
    let run = |mksquashfs: &Path| {
        Command::new(env!("CARGO_BIN_EXE_pvcompose"))
            .args([
                "container",
                "--name",
                "app",
                "--rootfs",
                &rootfs,
                "--out",
                &out,
            ])
            .env("MKSQUASHFS", mksquashfs)
            .output()
            .unwrap()
    };
    let missing = run(Path::new("/nonexistent/mksquashfs"));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        err.contains("cannot run /nonexistent/mksquashfs")
            && err.contains("install squashfs-tools 4.5 or later"),
        "{err}"
    );
    // A stand-in that reports an old version, as squashfs-tools 4.4 does.
    let old = tmp.path().join("old-mksquashfs");
    fs::write(
        &old,
        "#!/bin/sh\necho 'mksquashfs version 4.4 (2019/08/29)'\n",
    )
    .unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
    let too_old = run(&old);
    let err = String::from_utf8_lossy(&too_old.stderr);
    assert_eq!(too_old.status.code(), Some(1));
    assert!(
        err.contains("is version 4.4.0; 4.5 or later is needed"),
        "{err}"
    );
    assert!(!Path::new(&out).exists());
}

#[test]
fn xconnect_declarations_go_to_services_json_and_run_json_or_fail_by_name() {
    let (tmp, rootfs, out) = setup();
    let (code, stdout, err) = pvcompose(&[
        "container",
        "--quiet",
        "--rootfs",
        &rootfs,
        "--name",
        "broker",
        "--out",
        &out,
        "--provide",
        "mqtt:unix:/run/mosquitto/mqtt.sock",
        "--provide",
        "metrics:rest:/run/metrics.sock",
        "--require",
        "system-bus:dbus:/run/dbus/system_bus_socket:operator",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    let state = part_json(Path::new(&out));
    assert_eq!(
        state["broker/services.json"],
        serde_json::json!({"#spec": "service-manifest-xconnect@1", "services": [
            {"name": "mqtt", "type": "unix", "socket": "/run/mosquitto/mqtt.sock"},
            {"name": "metrics", "type": "rest", "socket": "/run/metrics.sock"}]})
    );
    assert_eq!(
        state["broker/run.json"]["services"],
        serde_json::json!({"required": [{"name": "system-bus", "type": "dbus",
            "target": "/run/dbus/system_bus_socket", "role": "operator"}]})
    );
    fs::remove_dir_all(&out).unwrap();
    for (flag, value, needle) in [
        (
            "--provide",
            "mqtt:wayland:/run/w",
            "type \"wayland\" is not supported (unix, rest and dbus are)",
        ),
        ("--provide", "mqtt:unix", "expected NAME:TYPE:SOCKET"),
        (
            "--require",
            "mqtt:unix:run/x.sock",
            "\"run/x.sock\" is not an absolute path",
        ),
        (
            "--require",
            "mqtt:unix:/run/../x",
            "is not an absolute path",
        ),
    ] {
        fails(
            &[
                "container",
                "--rootfs",
                &rootfs,
                "--name",
                "app",
                "--out",
                &out,
                flag,
                value,
            ],
            needle,
            tmp.path(),
        );
    }
    // Upstream's args.json key for the consumer side.
    let args = tmp.path().join("args.json");
    fs::write(
        &args,
        r#"{"PV_SERVICES_REQUIRED": [{"name": "raw-unix", "type": "unix", "target": "/run/pv/services/raw-unix.sock"}]}"#,
    )
    .unwrap();
    let (code, stdout, err) = pvcompose(&[
        "container",
        "--quiet",
        "--rootfs",
        &rootfs,
        "--name",
        "app",
        "--out",
        &out,
        "--args-json",
        args.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert_eq!(
        part_json(Path::new(&out))["app/run.json"]["services"]["required"][0]["target"],
        "/run/pv/services/raw-unix.sock"
    );
    fs::remove_dir_all(&out).unwrap();
    fs::write(
        &args,
        r#"{"PV_SERVICES_REQUIRED": [{"name": "gpu", "type": "drm", "target": "/dev/dri/card0"}]}"#,
    )
    .unwrap();
    fails(
        &[
            "container",
            "--rootfs",
            &rootfs,
            "--name",
            "app",
            "--out",
            &out,
            "--args-json",
            args.to_str().unwrap(),
        ],
        "PV_SERVICES_REQUIRED: \"gpu\": type \"drm\" is not supported",
        tmp.path(),
    );
}
