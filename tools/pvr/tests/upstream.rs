//! Issue 18: the command forms of Pantavisor's pvr, typed as its README and
//! `--help` write them, against our pvr: options on `pvr sig` before the
//! subcommand, the short flags and aliases, `--x5c no`, `sig up NAME`,
//! `post -f`, and device addresses as bare hosts.

use std::fs;
use std::path::Path;
use std::process::Command;

fn pvr(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pvr"))
        .current_dir(dir)
        .args(args)
        .env("HOME", dir)
        .env_remove("PVR_SIG_KEY")
        .env_remove("PVR_X5C_PATH")
        .env_remove("PVR_SIG_CACERTS")
        .env_remove("PVR_SIG_PUBKEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "{}{}", r.1, r.2);
    r.1
}

/// A repository with one container, `web`, committed; a P-256 key pair.
fn repo(d: &Path) -> std::path::PathBuf {
    for args in [
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "k.pem",
        ][..],
        &["ec", "-in", "k.pem", "-pubout", "-out", "k.pub"][..],
    ] {
        let out = Command::new("openssl")
            .current_dir(d)
            .args(args)
            .output()
            .expect("openssl (ci/test installs it)");
        assert!(out.status.success());
    }
    let repo = d.join("repo");
    fs::create_dir(&repo).unwrap();
    ok(pvr(&repo, &["init"]));
    let rootfs = d.join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/content"), "v1").unwrap();
    ok(pvr(
        &repo,
        &[
            "app",
            "add",
            "web",
            "--from",
            rootfs.to_str().unwrap(),
            "--mtime",
            "1700000000",
        ],
    ));
    ok(pvr(&repo, &["commit"]));
    repo
}

#[test]
fn sig_takes_its_options_before_the_subcommand_as_upstream_does() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repo = repo(d);
    let key = d.join("k.pem");
    let public = d.join("k.pub");
    // pvr sig --key K --x5c no add --part P
    let out = ok(pvr(
        &repo,
        &[
            "sig",
            "--key",
            key.to_str().unwrap(),
            "--x5c",
            "no",
            "add",
            "--part",
            "web",
        ],
    ));
    assert!(out.contains("as _sigs/web.json (ES256)"), "{out}");
    // pvr sig --pubkey P ls
    let out = ok(pvr(
        &repo,
        &["sig", "--pubkey", public.to_str().unwrap(), "ls"],
    ));
    assert!(out.contains("_sigs/web.json: verified"), "{out}");
    // The short forms: pvr sig -k K a -p P -n; pvr sig -p P ls.
    let out = ok(pvr(
        &repo,
        &["sig", "-k", key.to_str().unwrap(), "a", "-p", "web", "-n"],
    ));
    assert!(out.contains("_sigs/web.json"), "{out}");
    ok(pvr(&repo, &["sig", "-p", public.to_str().unwrap(), "ls"]));
    // pvr sig update NAME (alias up), and a name that is no signature.
    let out = ok(pvr(
        &repo,
        &["sig", "-k", key.to_str().unwrap(), "update", "web"],
    ));
    assert!(out.contains("re-signed _sigs/web.json"), "{out}");
    let (code, _, err) = pvr(
        &repo,
        &["sig", "-k", key.to_str().unwrap(), "up", "_sigs/nope.json"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("_sigs/nope.json: no such signature"), "{err}");
    // pvr -c DIR: the key from DIR/pvs/key.default.pem.
    fs::create_dir_all(d.join("cfg/pvs")).unwrap();
    fs::copy(&key, d.join("cfg/pvs/key.default.pem")).unwrap();
    let out = ok(pvr(
        &repo,
        &[
            "-c",
            d.join("cfg").to_str().unwrap(),
            "sig",
            "add",
            "--part",
            "web",
        ],
    ));
    assert!(out.contains("_sigs/web.json"), "{out}");
    // The subcommand's own option wins over the parent's.
    let (code, _, err) = pvr(
        &repo,
        &[
            "sig",
            "--key",
            "/nonexistent.pem",
            "add",
            "--key",
            key.to_str().unwrap(),
            "--part",
            "web",
        ],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_bare_address_is_a_device_on_port_12368_and_a_failed_clone_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Nothing listens on 127.0.0.1:12368 here (the tests' devices use other
    // ports): the address is read as that, and the clone fails cleanly.
    let (code, _, err) = pvr(d, &["clone", "127.0.0.1", "ws"]);
    assert_ne!(code, 0);
    assert!(err.contains("127.0.0.1:12368"), "{err}");
    assert!(!d.join("ws").exists(), "a failed clone left ws behind");
    // Into an existing empty directory: it is left empty.
    fs::create_dir(d.join("ws2")).unwrap();
    let (code, _, _) = pvr(d, &["clone", "http://127.0.0.1:1/cgi-bin/pvr", "ws2"]);
    assert_ne!(code, 0);
    assert_eq!(fs::read_dir(d.join("ws2")).unwrap().count(), 0);
    // The retry is not told "not empty".
    let (_, _, err) = pvr(d, &["clone", "http://127.0.0.1:1", "ws2"]);
    assert!(!err.contains("not empty"), "{err}");
    let (code, _, err) = pvr(d, &["clone", "https://127.0.0.1", "ws3"]);
    assert_ne!(code, 0);
    assert!(err.contains("https is not supported"), "{err}");
}

#[test]
fn app_add_takes_upstreams_flags_and_the_short_command_names_work() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repo = repo(d);
    let rootfs = d.join("rootfs");
    // A Docker image config, as `docker inspect`/the registry give it.
    fs::write(
        d.join("image.json"),
        r#"{"architecture": "amd64", "config": {"Entrypoint": ["/bin/web"], "Cmd": ["--port", "80"], "Env": ["A=1"]}}"#,
    )
    .unwrap();
    // pvr app add --force -t rootfs -o "-comp gzip" --config-json F --arg K=V
    let out = ok(pvr(
        &repo,
        &[
            "app",
            "add",
            "web",
            "--force",
            "-t",
            "rootfs",
            "--from",
            rootfs.to_str().unwrap(),
            "-o",
            "-comp gzip",
            "--config-json",
            d.join("image.json").to_str().unwrap(),
            "--arg",
            "PV_RESTART_POLICY=system",
            "--mtime",
            "1700000000",
        ],
    ));
    assert!(!out.is_empty());
    let run: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(repo.join("web/run.json")).unwrap()).unwrap();
    assert_eq!(run["restart_policy"], "system", "{run}");
    // The OCI config the container runs with: the image config's process.
    let config = fs::read_to_string(repo.join("web/config.json")).unwrap();
    assert!(
        config.contains("/bin/web") && config.contains("--port") && config.contains("A=1"),
        "{config}"
    );
    // Without --force an existing name is refused.
    let (code, _, err) = pvr(
        &repo,
        &["app", "add", "web", "--from", rootfs.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");
    let (code, _, err) = pvr(
        &repo,
        &[
            "app",
            "update",
            "web",
            "--from",
            rootfs.to_str().unwrap(),
            "--arg",
            "nokeyvalue",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    // pvr s (status), pvr co (checkout), pvr export -p PART FILE.
    let out = ok(pvr(&repo, &["s"]));
    assert!(out.contains("web/run.json"), "{out}");
    ok(pvr(&repo, &["co"]));
    assert_eq!(ok(pvr(&repo, &["s"])), "");
    ok(pvr(&repo, &["export", "-p", "web", "web.tgz"]));
    assert!(repo.join("web.tgz").is_file());
}

#[test]
fn format_options_pass_what_keeps_the_image_valid_and_refuse_the_rest_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repo = repo(d);
    let rootfs = d.join("rootfs");
    fs::write(rootfs.join("etc/secret"), "x").unwrap();
    ok(pvr(
        &repo,
        &[
            "app",
            "update",
            "web",
            "--from",
            rootfs.to_str().unwrap(),
            "-o",
            "-comp gzip -e etc/secret -noappend -processors 1 -mem 64M",
            "--mtime",
            "1700000000",
        ],
    ));
    let listing = Command::new("unsquashfs")
        .args(["-l", "-d", ""])
        .arg(repo.join("web/root.squashfs"))
        .output()
        .expect("unsquashfs (ci/test installs squashfs-tools)");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("etc/content"), "{listing}");
    assert!(!listing.contains("etc/secret"), "{listing}");
    for (opts, named) in [
        ("-Xhc", "-Xhc"),
        ("-comp gzip -all-root", "-all-root"),
        ("-e", "-e"),
    ] {
        let (code, _, err) = pvr(
            &repo,
            &[
                "app",
                "update",
                "web",
                "--from",
                rootfs.to_str().unwrap(),
                "-o",
                opts,
            ],
        );
        assert_ne!(code, 0, "{opts}");
        assert!(err.contains(named), "{opts}: {err}");
    }
}

#[test]
fn app_add_format_lxc_writes_pantavisors_lxc_part_and_update_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repo = repo(d);
    let rootfs = d.join("rootfs");
    ok(pvr(
        &repo,
        &[
            "app",
            "add",
            "legacy",
            "--format",
            "lxc",
            "--from",
            rootfs.to_str().unwrap(),
            "--volume",
            "/var/lib/legacy:permanent",
        ],
    ));
    let run: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(repo.join("legacy/run.json")).unwrap()).unwrap();
    assert_eq!(
        (run["type"].as_str(), run["config"].as_str()),
        (Some("lxc"), Some("lxc.container.conf"))
    );
    let conf = fs::read_to_string(repo.join("legacy/lxc.container.conf")).unwrap();
    assert!(
        conf.contains("lxc.rootfs.path = overlayfs:/volumes/legacy/root.squashfs:/volumes/legacy/lxc-overlay/upper")
            && conf.contains("lxc.mount.entry = /volumes/legacy/docker--var-lib-legacy var/lib/legacy none bind,rw,create=dir 0 0"),
        "{conf}"
    );
    assert!(!repo.join("legacy/config.json").exists());
    // An update without --format keeps the LXC format.
    fs::write(rootfs.join("etc/content"), "v2").unwrap();
    ok(pvr(
        &repo,
        &[
            "app",
            "update",
            "legacy",
            "--from",
            rootfs.to_str().unwrap(),
        ],
    ));
    assert!(repo.join("legacy/lxc.container.conf").is_file());
    // Devices need their numbers from the device: not in the LXC format.
    let (code, _, err) = pvr(
        &repo,
        &[
            "app",
            "add",
            "serial",
            "--format",
            "lxc",
            "--from",
            rootfs.to_str().unwrap(),
            "--arg",
            r#"PV_DEVICES=["/dev/ttyS1"]"#,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not carried by the LXC format"), "{err}");
}
