//! pvr against a running daemon: clone, app update, commit, sig add, post,
//! LOCAL_RUN — only the updated container restarts and only the changed
//! object and the JSON cross the socket. Needs root, like the daemon.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use pvcompose::report::{Mode, Reporter};
use pvcompose::squash::{Compressor, Mksquashfs, SquashOptions};
use serde_json::Value;

/// A binary of another package of the workspace, built if needed.
fn workspace_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_pvr")).with_file_name(name);
    if !path.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", name])
            .status()
            .unwrap();
        assert!(ok.success(), "cargo build -p {name}");
    }
    path
}

fn pvr(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pvr"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn request(sock: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let reply = pvctrl::Client::socket(sock)
        .call(method, path, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (reply.status, reply.json())
}

fn containers(sock: &Path) -> Vec<Value> {
    // Nothing while the daemon is not up yet.
    pvctrl::Client::socket(sock)
        .containers()
        .unwrap_or_default()
}

fn pid(sock: &Path, name: &str) -> i64 {
    containers(sock)
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["pid"].as_i64())
        .unwrap_or(-1)
}

fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rootfs(dir: &Path) {
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "pantavisor",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static; ci/test installs it)");
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sleep")).unwrap();
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc_kill(self.0.id() as i32, 15) };
        let _ = self.0.wait();
    }
}
extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

struct Setup {
    tmp: tempfile::TempDir,
    sock: PathBuf,
    key_pem: PathBuf,
    _daemon: Daemon,
}

/// Three busybox containers composed into a pvroot, a device trusting a
/// fresh developer key, and the daemon running on it with `extra_config`.
fn setup(extra_config: &str) -> Setup {
    assert_eq!(
        unsafe { libc_geteuid() },
        0,
        "needs root (the daemon mounts and runs containers); CI runs as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for c in ["sys", "app1", "app2"] {
        rootfs(&t.join("rootfs").join(c));
    }
    fs::write(t.join("k"), "k").unwrap();
    fs::write(
        t.join("device.json"),
        r#"{"groups": [{"name": "platform", "restart_policy": "system"}, {"name": "app", "restart_policy": "container"}]}"#,
    )
    .unwrap();
    let run = "[/bin/sh, -c, \"trap 'exit 0' TERM; sleep 1000 & wait\"]";
    fs::write(
        t.join("m.yaml"),
        format!(
            "bsp: {{kernel: k, initrd: k}}\ndevice: device.json\ncontainers:\n  sys: {{rootfs: rootfs/sys, group: platform, args: {run}}}\n  app1: {{rootfs: rootfs/app1, group: app, args: {run}}}\n  app2: {{rootfs: rootfs/app2, group: app, args: {run}}}\ncore: [sys, app1, app2]\n"
        ),
    )
    .unwrap();
    let storage = t.join("pvroot");
    let opts = SquashOptions {
        comp: Compressor::Lz4,
        mtime: Some(1_700_000_000),
        ..Default::default()
    };
    pvcompose::pvroot::assemble(
        &t.join("m.yaml"),
        &storage,
        &opts,
        &Mksquashfs::find().unwrap(),
        2,
        &Reporter::new(Mode::Quiet),
    )
    .unwrap();
    // The device trusts the developer key.
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    fs::create_dir_all(t.join("certs")).unwrap();
    fs::write(
        t.join("certs/dev.pem"),
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let key_pem = t.join("dev.key");
    fs::write(
        &key_pem,
        key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    fs::write(
        t.join("pv.conf"),
        format!(
            "stop.timeout=3\nupdate.commit_delay=1\nupdate.signatures=lenient\n\
             secureboot.truststore={}\n{extra_config}",
            t.join("certs").display()
        ),
    )
    .unwrap();
    let sock = t.join("pv-ctrl");
    let log = fs::File::create(t.join("daemon.log")).unwrap();
    let daemon = Daemon(
        Command::new(workspace_bin("pantavisor"))
            .arg("--storage")
            .arg(&storage)
            .arg("--ctrl-socket")
            .arg(&sock)
            .arg("--run-dir")
            .arg(t.join("run"))
            .arg("--cgroup-parent")
            .arg(format!(
                "pvr-e2e-{}",
                t.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches('.')
            ))
            .arg("--config")
            .arg(t.join("pv.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for(Duration::from_secs(15), || {
        (containers(&sock).len() == 3 && containers(&sock).iter().all(|c| c["status"] == "STARTED"))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "daemon: {}",
            fs::read_to_string(t.join("daemon.log")).unwrap()
        )
    });
    Setup {
        sock,
        key_pem,
        _daemon: daemon,
        tmp,
    }
}

/// `pvr clone` of the device on `sock` into `t/ws`.
fn clone_ws(t: &Path, sock: &Path) -> PathBuf {
    let ws = t.join("ws");
    let (code, out, err) = pvr(
        t,
        &[
            "clone",
            &format!("unix:{}", sock.display()),
            ws.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    ws
}

/// A copy of app1's root file system whose etc/version says `tag`.
fn app1_version(t: &Path, tag: &str) -> PathBuf {
    let newfs = t.join(format!("rootfs/app1-{tag}"));
    let ok = Command::new("cp")
        .arg("-a")
        .arg(t.join("rootfs/app1"))
        .arg(&newfs)
        .status()
        .unwrap();
    assert!(ok.success());
    fs::write(newfs.join("etc/version"), format!("{tag}\n")).unwrap();
    newfs
}

#[test]
fn clone_update_sign_post_run() {
    let s = setup("");
    let (t, sock, key_pem) = (s.tmp.path(), &s.sock, &s.key_pem);
    let (sys, app2, app1) = (pid(sock, "sys"), pid(sock, "app2"), pid(sock, "app1"));

    // clone
    let ws = clone_ws(t, sock);
    assert!(ws.join("app1/run.json").is_file() && ws.join("app1/root.squashfs").is_file());
    let (_, status, _) = pvr(&ws, &["status"]);
    assert!(status.is_empty(), "a fresh clone has no changes: {status}");

    // app update from a new rootfs, commit, sign
    let newfs = app1_version(t, "2");
    let (code, out, err) = pvr(
        &ws,
        &[
            "app",
            "update",
            "app1",
            "--from",
            newfs.to_str().unwrap(),
            "--comp",
            "lz4",
            "--mtime",
            "1700000000",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (_, status, _) = pvr(&ws, &["status"]);
    assert_eq!(
        status.trim(),
        "C app1/root.squashfs",
        "settings kept, only the image changed: {status}"
    );
    let (code, out, err) = pvr(&ws, &["commit", "-m", "app1 v2"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = pvr(
        &ws,
        &[
            "sig",
            "add",
            "--part",
            "ghost",
            "--key",
            key_pem.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("unknown part \"ghost\""), "{err}");
    let (code, out, err) = pvr(
        &ws,
        &[
            "sig",
            "add",
            "--part",
            "app1",
            "--key",
            key_pem.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, plan, err) = pvr(&ws, &["diff", "--plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        plan.contains("no reboot")
            && plan.contains("restart: [\"app1\"]")
            && plan.contains("objects to send: 1 (")
            && plan.contains("with chunk deltas: ")
            && plan.contains("(1 object(s) against the device's copy of their predecessor)"),
        "{plan}"
    );

    // post: only the new object and the JSON travel
    let committed = fs::read(ws.join(".pvr/json")).unwrap();
    let state: Value = serde_json::from_slice(&committed).unwrap();
    let new_root = state["app1/root.squashfs"].as_str().unwrap();
    let object_size = fs::metadata(ws.join(".pvr/objects").join(new_root))
        .unwrap()
        .len();
    let (code, out, err) = pvr(&ws, &["post", "--rev", "locals/x"]);
    assert_eq!(code, 0, "{out}{err}");
    let sent: u64 = out
        .split("sent ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The new image differs from the one the device runs by a file: it
    // goes as a chunk delta, which the device builds and checks.
    let by_chunks: Vec<u64> = out
        .split("by chunk deltas: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no chunk delta: {out}"))
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    assert_eq!(by_chunks[1], object_size, "{out}");
    assert!(by_chunks[0] * 2 < object_size, "{out}");
    assert_eq!(sent, by_chunks[0] + committed.len() as u64, "{out}");
    assert!(out.contains("(1 of "), "{out}");
    // Posting again (as after an interruption) sends no object again.
    let (_, out, _) = pvr(&ws, &["post", "--rev", "locals/x"]);
    assert!(
        out.contains(&format!("sent {} bytes (0 of", committed.len())),
        "{out}"
    );

    // export a part, and import/merge it elsewhere
    let archive = t.join("app1.tgz");
    let (code, _, err) = pvr(
        &ws,
        &[
            "export",
            "--parts",
            "app1,_sigs/app1.json",
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pvr(
        &ws,
        &[
            "export",
            "--parts",
            "nothing",
            t.join("x.tgz").to_str().unwrap(),
        ],
    );
    assert_eq!(
        (code, err.contains("unknown part \"nothing\"")),
        (1, true),
        "{err}"
    );
    let other = t.join("other");
    fs::create_dir(&other).unwrap();
    assert_eq!(pvr(&other, &["init"]).0, 0);
    let (code, _, err) = pvr(&other, &["import", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read(other.join("app1/root.squashfs")).unwrap(),
        fs::read(ws.join("app1/root.squashfs")).unwrap()
    );
    let (_, json, _) = pvr(&other, &["json"]);
    assert!(
        json.contains("_sigs/app1.json") && !json.contains("app2/run.json"),
        "{json}"
    );

    // sig ls verifies with the device's trust store and lists what is not covered
    let trust = t.join("certs/dev.pem");
    let (code, out, err) = pvr(&ws, &["sig", "ls", "--cacerts", trust.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("_sigs/app1.json: verified") && out.contains("    app1/run.json"),
        "{out}"
    );
    assert!(
        out.contains("key(s) no signature covers") && out.contains("    app2/run.json"),
        "{out}"
    );

    // deploy the exported part into a storage's revision 0, as an image build does
    let storage2 = t.join("storage2");
    let (code, out, err) = pvr(
        t,
        &[
            "deploy",
            storage2.to_str().unwrap(),
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let deployed: Value =
        serde_json::from_slice(&fs::read(storage2.join("trails/0/.pvr/json")).unwrap()).unwrap();
    let root = deployed["app1/root.squashfs"].as_str().unwrap();
    assert!(storage2.join("objects").join(root).is_file());

    // run it: only app1 restarts
    let (code, body) = request(
        sock,
        "POST",
        "/commands",
        r#"{"op":"LOCAL_RUN","payload":"locals/x"}"#,
    );
    assert_eq!(code, 200, "{body}");
    wait_for(Duration::from_secs(30), || {
        (request(sock, "GET", "/steps/locals/x/progress", "").1["status"] == "UPDATED")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not UPDATED: {}",
            fs::read_to_string(t.join("daemon.log")).unwrap()
        )
    });
    assert_ne!(pid(sock, "app1"), app1);
    assert_eq!((pid(sock, "sys"), pid(sock, "app2")), (sys, app2));

    // An interrupted post resumes: of two new objects, one reached the
    // device before the cut; the next post sends only the other.
    for (app, version) in [("app1", "3"), ("app2", "2")] {
        let dir = t.join(format!("rootfs/{app}-v{version}"));
        assert!(Command::new("cp")
            .arg("-a")
            .arg(t.join(format!("rootfs/{app}")))
            .arg(&dir)
            .status()
            .unwrap()
            .success());
        fs::write(dir.join("etc/version"), format!("{version}\n")).unwrap();
        let (code, out, err) = pvr(
            &ws,
            &[
                "app",
                "update",
                app,
                "--from",
                dir.to_str().unwrap(),
                "--mtime",
                "1700000000",
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = pvr(&ws, &["commit", "-m", "both"]);
    assert_eq!(code, 0, "{out}{err}");
    // app1's signature no longer matches (the device refuses such a state);
    // sign again.
    let (code, out, err) = pvr(&ws, &["sig", "up", "--key", key_pem.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let committed = fs::read(ws.join(".pvr/json")).unwrap();
    let state: Value = serde_json::from_slice(&committed).unwrap();
    let first = state["app1/root.squashfs"].as_str().unwrap().to_string();
    let second = state["app2/root.squashfs"].as_str().unwrap().to_string();
    let bytes = fs::read(ws.join(".pvr/objects").join(&first)).unwrap();
    let reply = pvctrl::Client::socket(sock)
        .call("PUT", &format!("/objects/{first}"), &bytes)
        .unwrap();
    assert!(reply.ok(), "{}", reply.message());
    let (code, out, err) = pvr(&ws, &["post", "--rev", "locals/y"]);
    assert_eq!(code, 0, "{out}{err}");
    let second_size = fs::metadata(ws.join(".pvr/objects").join(&second))
        .unwrap()
        .len();
    assert!(
        out.contains(&format!(
            "sent {} bytes (1 of ",
            second_size + committed.len() as u64
        )),
        "only the object that had not arrived: {out}"
    );
    assert!(
        err.contains(&second[..12]) && !err.contains(&first[..12]),
        "{err}"
    );
}

/// Issue 16: an update whose new objects do not fit beyond the device's
/// reserve (`storage` in its device metadata, as Pantavisor reports it) is
/// refused by `pvr post` before any byte of it is sent.
#[test]
fn an_update_that_does_not_fit_is_refused_before_any_byte_is_sent() {
    // All of storage reserved: nothing new fits.
    let s = setup("storage.gc.reserved=100\n");
    let (t, sock) = (s.tmp.path(), &s.sock);
    let (_, meta) = request(sock, "GET", "/device-meta", "");
    assert_eq!(meta["storage"]["real_free"], 0, "{meta}");
    assert!(meta["storage"]["total"].as_u64().unwrap() > 0, "{meta}");
    let ws = clone_ws(t, sock);
    let newfs = app1_version(t, "big");
    let (code, out, err) = pvr(
        &ws,
        &[
            "app",
            "update",
            "app1",
            "--from",
            newfs.to_str().unwrap(),
            "--comp",
            "lz4",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(pvr(&ws, &["commit", "-m", "big"]).0, 0);
    let (_, before) = request(sock, "GET", "/objects", "");
    let (code, out, err) = pvr(&ws, &["post", "--rev", "locals/big"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("not enough space on the device: the update needs")
            && err.contains("nothing was sent"),
        "{err}"
    );
    let (_, after) = request(sock, "GET", "/objects", "");
    assert_eq!(before, after, "no object arrived");
    let (code, _) = request(sock, "GET", "/steps/locals/big", "");
    assert_eq!(code, 404);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_remote_api_needs_its_token() {
    let port = free_port();
    let s = setup(&format!(
        "remote.listen=127.0.0.1:{port}\nremote.token=s3cret-token\n"
    ));
    let t = s.tmp.path();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, err) = pvr(t, &["clone", &url, t.join("a").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("401: a bearer token is required"), "{err}");
    let (code, _, err) = pvr(
        t,
        &[
            "--token",
            "guess",
            "clone",
            &url,
            t.join("b").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("401: wrong token"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_pvr"))
        .args(["clone", &url, t.join("c").to_str().unwrap()])
        .env("PVR_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ws = t.join("c");
    assert!(ws.join("app2/run.json").is_file());
    // The remote is remembered; a post needs the token again.
    let (code, _, err) = pvr(&ws, &["post", "--rev", "locals/r"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = pvr(
        &ws,
        &["--token", "s3cret-token", "post", "--rev", "locals/r"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("(0 of "),
        "the device has every object already: {out}"
    );
}

/// Issue 18: `pvr post --run --wait` runs the revision and follows it to
/// its end, the exit code saying how it ended; an update whose container
/// never gets READY ends non-zero with the device's reason on the terminal;
/// `pvr device logs` prints a container's output.
#[test]
fn post_run_wait_follows_the_update_to_its_end_and_device_logs_shows_the_output() {
    let s = setup("update.goals_timeout=6\n");
    let (t, sock) = (s.tmp.path(), &s.sock);
    let ws = clone_ws(t, sock);
    let newfs = app1_version(t, "v2");
    fs::write(
        t.join("talk.json"),
        r#"{"Entrypoint": ["/bin/sh", "-c", "read v < /etc/version; echo hello from app1 $v; trap 'exit 0' TERM; sleep 1000 & wait"]}"#,
    )
    .unwrap();
    let update = |extra: &[&str]| {
        let mut args = vec![
            "app",
            "update",
            "app1",
            "--from",
            newfs.to_str().unwrap(),
            "--comp",
            "lz4",
            "--arg-json",
        ];
        let talk = t.join("talk.json");
        let talk = talk.to_str().unwrap().to_string();
        args.push(&talk);
        args.extend_from_slice(extra);
        let (code, out, err) = pvr(&ws, &args);
        assert_eq!(code, 0, "{out}{err}");
    };
    update(&[]);
    assert_eq!(pvr(&ws, &["commit", "-m", "talks"]).0, 0);
    let (code, out, err) = pvr(
        &ws,
        &[
            "post",
            "--rev",
            "locals/good",
            "--run",
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("locals/good: INPROGRESS") || out.contains("locals/good: TESTING"),
        "{out}"
    );
    assert!(out.contains("locals/good: UPDATED (100%)"), "{out}");
    let (code, out, err) = pvr(&ws, &["device", "logs", "app1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello from app1 v2"), "{out}");
    // pvr -d: each request and its answer's status on stderr.
    let (code, _, err) = pvr(&ws, &["-d", "device", "logs", "app1"]);
    assert_eq!(code, 0);
    assert!(
        err.contains("GET unix:") && err.contains("/logs/app1?max=16384") && err.contains("-> 200"),
        "{err}"
    );
    // The daemon's own log, without a container name.
    let (code, out, _) = pvr(&ws, &["device", "logs"]);
    assert_eq!(code, 0);
    assert!(out.contains("revision locals/good"), "{out}");
    let (code, _, err) = pvr(&ws, &["device", "logs", "nosuch"]);
    assert_ne!(code, 0);
    assert!(err.contains("no container nosuch"), "{err}");
    // READY never comes (nothing signals it): rolled back, exit 3.
    update(&["--status-goal", "READY"]);
    assert_eq!(pvr(&ws, &["commit", "-m", "never ready"]).0, 0);
    let (code, out, err) = pvr(
        &ws,
        &[
            "post",
            "--rev",
            "locals/never",
            "--run",
            "--wait",
            "--timeout",
            "60",
        ],
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("locals/never: ERROR: Status goal not reached: app1")
            && err.contains("the device runs locals/good"),
        "{err}"
    );
}
