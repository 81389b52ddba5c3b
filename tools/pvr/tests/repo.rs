//! Repository commands without a device: app add/rm/info, --type pvr, get.

use std::fs;
use std::path::Path;
use std::process::Command;

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

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = pvr(dir, args);
    assert_eq!(code, 0, "pvr {args:?}: {out}{err}");
    out
}

fn repo_with_apps(root: &Path) -> std::path::PathBuf {
    let repo = root.join("a");
    fs::create_dir(&repo).unwrap();
    ok(&repo, &["init"]);
    for app in ["web", "mqtt"] {
        let rootfs = root.join(format!("rootfs-{app}"));
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/name"), app).unwrap();
        ok(
            &repo,
            &[
                "app",
                "add",
                app,
                "--from",
                rootfs.to_str().unwrap(),
                "--group",
                "app",
                "--mtime",
                "1",
            ],
        );
    }
    ok(&repo, &["commit"]);
    repo
}

#[test]
fn apps_move_between_repositories() {
    let tmp = tempfile::tempdir().unwrap();
    let a = repo_with_apps(tmp.path());
    let info = ok(&a, &["app", "info", "web"]);
    assert!(
        info.contains("\"group\": \"app\"") && info.contains("web/root.squashfs"),
        "{info}"
    );
    let (code, _, err) = pvr(&a, &["app", "add", "web", "--from", "/nonexistent"]);
    assert!(
        code != 0 && err.contains("exists; use pvr app update"),
        "{err}"
    );
    let (code, _, err) = pvr(&a, &["app", "update", "ghost", "--from", "/x"]);
    assert!(
        code != 0 && err.contains("unknown container \"ghost\""),
        "{err}"
    );

    // --type pvr from a repository and from a pvrexport.
    let b = tmp.path().join("b");
    fs::create_dir(&b).unwrap();
    ok(&b, &["init"]);
    ok(
        &b,
        &[
            "app",
            "add",
            "web",
            "--type",
            "pvr",
            "--from",
            a.to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::read(b.join("web/root.squashfs")).unwrap(),
        fs::read(a.join("web/root.squashfs")).unwrap()
    );
    let export = tmp.path().join("mqtt.tgz");
    ok(&a, &["export", "--parts", "mqtt", export.to_str().unwrap()]);
    ok(
        &b,
        &[
            "app",
            "add",
            "mqtt",
            "--type",
            "pvr",
            "--from",
            export.to_str().unwrap(),
        ],
    );
    assert!(b.join("mqtt/run.json").is_file());
    let (code, _, err) = pvr(
        &b,
        &[
            "app",
            "add",
            "x",
            "--type",
            "pvr",
            "--from",
            &format!("{}#web", a.display()),
        ],
    );
    assert!(code != 0 && err.contains("keeps its name"), "{err}");
    ok(&b, &["commit"]);

    // rm
    ok(&b, &["app", "rm", "mqtt"]);
    assert_eq!(
        ok(&b, &["status"])
            .lines()
            .filter(|l| l.starts_with("D mqtt/"))
            .count(),
        4
    );
    ok(&b, &["commit"]);

    // get: one part, then the whole state; an unknown part is an error.
    let c = tmp.path().join("c");
    fs::create_dir(&c).unwrap();
    ok(&c, &["init"]);
    ok(&c, &["get", &format!("{}#mqtt", a.display())]);
    let apps = ok(&c, &["app", "ls"]);
    assert!(apps.contains("mqtt") && !apps.contains("web"), "{apps}");
    let (code, _, err) = pvr(&c, &["get", &format!("{}#nothing", a.display())]);
    assert!(
        code != 0 && err.contains("unknown part \"nothing\""),
        "{err}"
    );
    ok(&c, &["get", a.to_str().unwrap()]);
    assert_eq!(
        fs::read(c.join(".pvr/json")).unwrap(),
        fs::read(a.join(".pvr/json")).unwrap()
    );
}

/// Defect: `pvr status | head -1` exited 101 with a backtrace (println! on
/// a closed pipe). The pipe's read end is closed before pvr writes, so its
/// first write meets EPIPE for certain.
#[test]
fn a_closed_pipe_is_not_a_panic() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo_with_apps(tmp.path());
    fs::write(repo.join("web/extra.json"), "{}").unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array with two new descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just made and are owned only here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = Command::new(env!("CARGO_BIN_EXE_pvr"))
        .arg("-C")
        .arg(&repo)
        .arg("status")
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{err}");
}

/// Defect: `pvr diff --plan` and `pvr diff` did the same, and DEVICE had no
/// help. Without --plan it is the working tree's diff (no device needed).
#[test]
fn diff_is_local_and_plan_asks_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo_with_apps(tmp.path());
    let out = ok(&repo, &["diff"]);
    assert_eq!(out.trim(), "{}", "nothing changed yet");
    fs::write(repo.join("web/extra.json"), "{\"a\": 1}").unwrap();
    let out = ok(&repo, &["diff"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["web/extra.json"]["working"]["a"], 1, "{out}");
    assert!(v["web/extra.json"]["committed"].is_null(), "{out}");
    // --plan needs a device: this repository was not cloned from one.
    let (code, _, err) = pvr(&repo, &["diff", "--plan"]);
    assert_ne!(code, 0);
    assert!(err.contains("no device given"), "{err}");
    // A device without --plan is a usage error, not silently ignored.
    let (code, _, err) = pvr(&repo, &["diff", "unix:/nonexistent"]);
    assert_eq!(code, 2, "{err}");
    let help = ok(&repo, &["diff", "--help"]);
    assert!(help.contains("http://HOST:PORT"), "{help}");
}
