//! `pvr app add|update --type docker` against a real registry on loopback:
//! Debian's docker-registry (distribution 2.8), images built with umoci and
//! pushed with skopeo (ci/test installs all three). Needs root (umoci unpacks
//! with owners).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn require_root() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "these tests need root (umoci unpacks images with their owners); ci/test runs them as root"
    );
}

fn tool(name: &str) -> &str {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success(),
        "{name} is not installed (ci/test installs docker-registry, skopeo and umoci)"
    );
    name
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pvr(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pvr"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("PVR_REGISTRY_USER")
        .env_remove("PVR_REGISTRY_PASSWORD")
        .env("HOME", dir) // no ~/.docker/config.json of the machine
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pvr_ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = pvr(dir, args);
    assert_eq!(code, 0, "pvr {args:?}: {out}{err}");
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the registry wants clients to log in.
enum Auth<'a> {
    None,
    /// An htpasswd line.
    Basic(&'a str),
    /// Bearer tokens from our token service (ci/lib/token_server.py) for USER/PASSWORD.
    Token(&'a str, &'a str),
}

/// A docker-registry serving from a temporary directory on a free port.
struct Registry {
    child: Child,
    token_service: Option<Child>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(auth: Auth) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let mut token_service = None;
        match auth {
            Auth::None => {}
            Auth::Basic(line) => {
                fs::write(dir.path().join("htpasswd"), format!("{line}\n")).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                ));
            }
            Auth::Token(user, password) => {
                let d = dir.path();
                let out = Command::new("openssl")
                    .current_dir(d)
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                        "-nodes",
                        "-keyout",
                        "token.key",
                        "-out",
                        "token.pem",
                        "-subj",
                        "/CN=token signer",
                        "-days",
                        "30",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "openssl: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let port = free_port();
                let mut child = Command::new("python3")
                    .arg(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../ci/lib/token_server.py"
                    ))
                    .arg(port.to_string())
                    .arg("test-issuer")
                    .arg(d.join("token.key"))
                    .arg(d.join("token.pem"))
                    .args([user, password])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut line = String::new();
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                    &mut line,
                )
                .unwrap();
                assert_eq!(line.trim(), "listening", "token service (needs jwcrypto)");
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                    d.join("token.pem").display()
                ));
                token_service = Some(child);
            }
        }
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            match ureq::get(&format!("http://{addr}/v2/")).call() {
                Ok(_) | Err(ureq::Error::Status(401, _)) => break,
                Err(_) if start.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("docker-registry did not come up on {addr}: {e}"),
            }
        }
        Registry {
            child,
            token_service,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = &mut self.token_service {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

/// An OCI layout where images are built with umoci.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        let dir = root.join("layout");
        run(Command::new(tool("umoci"))
            .args(["init", "--layout"])
            .arg(&dir));
        run(Command::new("umoci")
            .args(["new", "--image"])
            .arg(format!("{}:base", dir.display())));
        Layout { dir }
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    fn unpack(&self, tag: &str, bundle: &Path) {
        run(Command::new("umoci")
            .args(["unpack", "--image", &self.image(tag)])
            .arg(bundle));
    }

    /// One more layer: what changed in the bundle since it was unpacked.
    fn repack(&self, tag: &str, bundle: &Path) {
        run(Command::new("umoci")
            .args(["repack", "--refresh-bundle", "--image", &self.image(tag)])
            .arg(bundle));
    }

    fn config(&self, tag: &str, args: &[&str]) {
        run(Command::new("umoci")
            .args(["config", "--image", &self.image(tag)])
            .args(args));
    }

    fn push(&self, tag: &str, registry: &str, to: &str) {
        run(Command::new(tool("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}", self.image(tag)))
            .arg(format!("docker://{registry}/{to}")));
    }
}

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// The manifest digest and size of REPO:TAG as the registry serves it.
fn manifest_of(registry: &str, repo_tag: &str) -> (String, usize) {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let body = ureq::get(&format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .set("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    (
        format!("sha256:{}", hex::encode(Sha256::digest(body.as_bytes()))),
        body.len(),
    )
}

/// A file inside a squashfs object of the repository.
fn cat(squashfs: &Path, path: &str) -> Option<String> {
    let out = Command::new("unsquashfs")
        .args(["-cat"])
        .arg(squashfs)
        .arg(path)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Build the test images: demo:v1 (amd64, two layers with whiteouts),
/// demo:v2 (one file changed), demo:arm (arm64), demo:multi (an index of
/// v1 and arm).
fn build_images(tmp: &Path, registry: &str) {
    let layout = Layout::new(tmp);
    let bundle = tmp.join("bundle");
    layout.unpack("base", &bundle);
    let rootfs = bundle.join("rootfs");
    write(&rootfs, "etc/a", "a\n");
    write(&rootfs, "etc/b", "b\n");
    write(&rootfs, "opt/dir/x", "x\n");
    write(&rootfs, "opt/dir/y", "y\n");
    write(&rootfs, "etc/arch", "amd64\n");
    write(&rootfs, "bin/app", "#!/bin/sh\nexec sleep 1000\n");
    layout.repack("v1", &bundle);
    // Layer 2: a deleted file and a directory replaced by a new one.
    fs::remove_file(rootfs.join("etc/b")).unwrap();
    fs::remove_dir_all(rootfs.join("opt/dir")).unwrap();
    write(&rootfs, "opt/dir/z", "z\n");
    write(&rootfs, "etc/version", "1\n");
    layout.repack("v1", &bundle);
    layout.config(
        "v1",
        &[
            "--os",
            "linux",
            "--architecture",
            "amd64",
            "--config.entrypoint",
            "/bin/app",
            "--config.env",
            "FOO=bar",
            "--config.workingdir",
            "/opt",
        ],
    );
    layout.push("v1", registry, "demo:v1");
    // v2: one file changed.
    write(&rootfs, "etc/version", "2\n");
    layout.repack("v2", &bundle);
    layout.config("v2", &["--architecture", "amd64"]);
    layout.push("v2", registry, "demo:v2");
    // arm: another architecture, told apart by a file.
    let bundle_arm = tmp.join("bundle-arm");
    layout.unpack("v1", &bundle_arm);
    write(&bundle_arm.join("rootfs"), "etc/arch", "arm64\n");
    layout.repack("arm", &bundle_arm);
    layout.config("arm", &["--architecture", "arm64"]);
    layout.push("arm", registry, "demo:arm");
    // multi: an OCI index of the amd64 and arm64 images.
    let (amd, amd_size) = manifest_of(registry, "demo:v1");
    let (arm, arm_size) = manifest_of(registry, "demo:arm");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": amd_size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_size,
             "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    });
    ureq::put(&format!("http://{registry}/v2/demo/manifests/multi"))
        .set("Content-Type", "application/vnd.oci.image.index.v1+json")
        .send_string(&index.to_string())
        .unwrap();
}

#[test]
fn docker_images_from_a_registry() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(Auth::None);
    build_images(tmp.path(), &reg.addr);
    let repo = tmp.path().join("repo");
    fs::create_dir(&repo).unwrap();
    pvr_ok(&repo, &["init"]);
    let from = |tag: &str| format!("{}/demo:{tag}", reg.addr);

    // Two layers applied with their whiteouts; the image config carried over.
    pvr_ok(
        &repo,
        &[
            "app",
            "add",
            "web",
            "--type",
            "docker",
            "--from",
            &from("v1"),
        ],
    );
    let sq = repo.join("web/root.squashfs");
    assert_eq!(cat(&sq, "etc/a").as_deref(), Some("a\n"));
    assert_eq!(cat(&sq, "etc/b"), None, "whiteout .wh.b");
    assert_eq!(cat(&sq, "opt/dir/x"), None, "directory replaced in layer 2");
    assert_eq!(cat(&sq, "opt/dir/z").as_deref(), Some("z\n"));
    assert_eq!(cat(&sq, "etc/version").as_deref(), Some("1\n"));
    assert_eq!(cat(&sq, "etc/arch").as_deref(), Some("amd64\n"));
    let src = json_file(&repo.join("web/src.json"));
    assert_eq!(src["docker_platform"], "linux/amd64");
    assert_eq!(src["docker_tag"], "v1");
    assert_eq!(src["docker_digest"], manifest_of(&reg.addr, "demo:v1").0);
    let oci = json_file(&repo.join("web/config.json"));
    assert_eq!(oci["process"]["args"][0], "/bin/app");
    assert!(oci["process"]["env"]
        .as_array()
        .unwrap()
        .contains(&json!("FOO=bar")));
    assert_eq!(oci["process"]["cwd"], "/opt");

    // A multi-arch index: the host's platform, or the one asked for.
    pvr_ok(
        &repo,
        &[
            "app",
            "add",
            "multi",
            "--type",
            "docker",
            "--from",
            &from("multi"),
        ],
    );
    assert_eq!(
        cat(&repo.join("multi/root.squashfs"), "etc/arch").as_deref(),
        Some("amd64\n")
    );
    pvr_ok(
        &repo,
        &[
            "app",
            "add",
            "multi-arm",
            "--type",
            "docker",
            "--from",
            &from("multi"),
            "--platform",
            "linux/arm64",
        ],
    );
    assert_eq!(
        cat(&repo.join("multi-arm/root.squashfs"), "etc/arch").as_deref(),
        Some("arm64\n")
    );
    let (code, _, err) = pvr(
        &repo,
        &[
            "app",
            "add",
            "multi-riscv",
            "--type",
            "docker",
            "--from",
            &from("multi"),
            "--platform",
            "linux/riscv64",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("no image for linux/riscv64") && err.contains("linux/arm64"),
        "{err}"
    );
    pvr_ok(&repo, &["commit", "-m", "three apps"]);
    let committed = fs::read(repo.join(".pvr/json")).unwrap();

    // The same digest again: nothing to do, nothing changes.
    let out = pvr_ok(
        &repo,
        &[
            "app",
            "update",
            "web",
            "--type",
            "docker",
            "--from",
            &from("v1"),
        ],
    );
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(
        pvr_ok(&repo, &["status"]).trim(),
        "",
        "no change after a no-op update"
    );

    // A new tag: only that container's keys change.
    pvr_ok(
        &repo,
        &[
            "app",
            "update",
            "web",
            "--type",
            "docker",
            "--from",
            &from("v2"),
        ],
    );
    assert_eq!(
        cat(&repo.join("web/root.squashfs"), "etc/version").as_deref(),
        Some("2\n")
    );
    let status = pvr_ok(&repo, &["status"]);
    let changed: Vec<&str> = status.lines().collect();
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|l| l.contains(" web/")),
        "only web's keys change: {status}"
    );
    assert!(status.contains("web/root.squashfs"), "{status}");
    pvr_ok(&repo, &["commit"]);
    assert_ne!(fs::read(repo.join(".pvr/json")).unwrap(), committed);

    // An image for another architecture, an unknown tag.
    let (code, _, err) = pvr(
        &repo,
        &[
            "app",
            "add",
            "arm",
            "--type",
            "docker",
            "--from",
            &from("arm"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("linux/arm64") && err.contains("not linux/amd64"),
        "{err}"
    );
    assert!(
        !repo.join("arm").exists(),
        "nothing written for a refused image"
    );
    let (code, _, err) = pvr(
        &repo,
        &[
            "app",
            "add",
            "nope",
            "--type",
            "docker",
            "--from",
            &from("nope"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("404") && err.contains("manifest unknown"),
        "{err}"
    );
}

#[test]
fn a_registry_that_wants_a_login() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    // bcrypt, as docker-registry's htpasswd wants it (python3-bcrypt from PyPI, ci/test).
    let hash = run(Command::new("python3").args([
        "-c",
        "import bcrypt; print(bcrypt.hashpw(b's3cret', bcrypt.gensalt(rounds=5)).decode())",
    ]));
    let reg = Registry::start(Auth::Basic(&format!("ops:{}", hash.trim())));
    let layout = Layout::new(tmp.path());
    let bundle = tmp.path().join("bundle");
    layout.unpack("base", &bundle);
    write(&bundle.join("rootfs"), "etc/hello", "hi\n");
    layout.repack("v1", &bundle);
    layout.config("v1", &["--architecture", "amd64"]);
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "ops:s3cret",
        ])
        .arg(format!("oci:{}", layout.image("v1")))
        .arg(format!("docker://{}/private:v1", reg.addr)));
    let repo = tmp.path().join("repo");
    fs::create_dir(&repo).unwrap();
    pvr_ok(&repo, &["init"]);
    let from = format!("{}/private:v1", reg.addr);

    let (code, _, err) = pvr(
        &repo,
        &["app", "add", "p", "--type", "docker", "--from", &from],
    );
    assert_ne!(code, 0);
    assert!(err.contains("401") && err.contains("--username"), "{err}");
    let (code, _, err) = pvr(
        &repo,
        &[
            "app",
            "add",
            "p",
            "--type",
            "docker",
            "--from",
            &from,
            "--username",
            "ops",
            "--password",
            "wrong",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("401") && err.contains("refused"), "{err}");
    assert!(!repo.join("p").exists());
    pvr_ok(
        &repo,
        &[
            "app",
            "add",
            "p",
            "--type",
            "docker",
            "--from",
            &from,
            "--username",
            "ops",
            "--password",
            "s3cret",
        ],
    );
    assert_eq!(
        cat(&repo.join("p/root.squashfs"), "etc/hello").as_deref(),
        Some("hi\n")
    );
}

#[test]
fn a_registry_with_bearer_tokens() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(Auth::Token("ci", "t0ken-pass"));
    let layout = Layout::new(tmp.path());
    let bundle = tmp.path().join("bundle");
    layout.unpack("base", &bundle);
    write(&bundle.join("rootfs"), "etc/hello", "bearer\n");
    layout.repack("v1", &bundle);
    layout.config("v1", &["--architecture", "amd64"]);
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "ci:t0ken-pass",
        ])
        .arg(format!("oci:{}", layout.image("v1")))
        .arg(format!("docker://{}/tok:v1", reg.addr)));
    let repo = tmp.path().join("repo");
    fs::create_dir(&repo).unwrap();
    pvr_ok(&repo, &["init"]);
    let from = format!("{}/tok:v1", reg.addr);
    // No credentials: the token service refuses, and pvr says so.
    let (code, _, err) = pvr(
        &repo,
        &["app", "add", "t", "--type", "docker", "--from", &from],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("401") && err.contains("token service"),
        "{err}"
    );
    // Credentials from docker's config file, as `docker login` leaves them.
    fs::create_dir_all(repo.join(".docker")).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ci:t0ken-pass");
    fs::write(
        repo.join(".docker/config.json"),
        json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    pvr_ok(
        &repo,
        &["app", "add", "t", "--type", "docker", "--from", &from],
    );
    assert_eq!(
        cat(&repo.join("t/root.squashfs"), "etc/hello").as_deref(),
        Some("bearer\n")
    );
}
