#![allow(dead_code)]
//! A gateway for the daemon's integration tests: busybox containers composed
//! with the composer into a pvroot, the daemon run on it as a root process,
//! and a client of its control socket.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pvcompose::report::{Mode, Reporter};
use pvcompose::squash::{Compressor, Mksquashfs, SquashOptions};
use serde_json::Value;

pub fn require_root() {
    assert_eq!(
        unsafe { libc_geteuid() },
        0,
        "the daemon's tests need root (mounts, namespaces, cgroups); CI runs them as root"
    );
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "ls", "mkdir", "touch", "date", "echo", "test", "rm", "wc",
];

/// A root filesystem with Debian's static busybox and our pvcontrol (with the
/// shared libraries it links).
pub fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox missing: install Debian's busybox-static (ci/test does)"
    );
    for d in [
        "bin",
        "usr/bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "pantavisor",
        "data",
        "scratch",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
    let pvcontrol = Path::new(env!("CARGO_BIN_EXE_pvcontrol"));
    fs::copy(pvcontrol, dir.join("usr/bin/pvcontrol")).unwrap();
    copy_libraries(dir, pvcontrol);
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
}

/// Host program `path` into the root filesystem `dir` at the same path,
/// with the shared libraries it links.
pub fn copy_program(dir: &Path, path: &str) {
    let src = Path::new(path);
    assert!(src.exists(), "{path} missing: ci/test installs it");
    let dest = dir.join(path.trim_start_matches('/'));
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::copy(src, &dest).unwrap();
    copy_libraries(dir, src);
}

/// The shared libraries `program` needs, copied into `dir` at their paths.
fn copy_libraries(dir: &Path, program: &Path) {
    let out = Command::new("ldd").arg(program).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split("=>")
            .nth(1)
            .unwrap_or(line)
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            let dest = dir.join(path.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(path, &dest).unwrap();
        }
    }
}

/// A daemon running on a composed pvroot.
pub struct Gateway {
    pub tmp: tempfile::TempDir,
    pub storage: PathBuf,
    pub socket: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup: String,
    pub daemon: Option<Child>,
    /// Environment variables the daemon is started with.
    pub env: Vec<(String, String)>,
}

/// Compose a pvroot from a manifest whose containers are `rootfs: rootfs/<name>`.
pub fn gateway(manifest: &str, names: &[&str]) -> Gateway {
    gateway_in(manifest, names, |_| {})
}

/// Like [`gateway`], with `prepare` run on the directory before composing
/// (to write files the manifest names).
pub fn gateway_in(manifest: &str, names: &[&str], prepare: impl FnOnce(&Path)) -> Gateway {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for n in names {
        busybox_rootfs(&tmp.path().join("rootfs").join(n));
    }
    fs::write(tmp.path().join("kernel"), "k").unwrap();
    prepare(tmp.path());
    let manifest_path = tmp.path().join("gateway.yaml");
    fs::write(
        &manifest_path,
        format!("bsp: {{kernel: kernel, initrd: kernel}}\n{manifest}"),
    )
    .unwrap();
    let storage = tmp.path().join("pvroot");
    let opts = SquashOptions {
        comp: Compressor::Lz4,
        mtime: Some(1_700_000_000),
        ..Default::default()
    };
    pvcompose::pvroot::assemble(
        &manifest_path,
        &storage,
        &opts,
        &Mksquashfs::find().unwrap(),
        2,
        &Reporter::new(Mode::Quiet),
    )
    .unwrap_or_else(|e| panic!("compose: {e}"));
    let cgroup = format!(
        "pvtest-{}",
        tmp.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('.')
    );
    Gateway {
        socket: tmp.path().join("pv-ctrl"),
        run_dir: tmp.path().join("run"),
        storage,
        cgroup,
        tmp,
        daemon: None,
        env: Vec::new(),
    }
}

impl Gateway {
    /// The daemon's command line for this gateway (config: `pantavisor.config`
    /// in its directory).
    pub fn daemon_command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pantavisor"));
        c.arg("--storage")
            .arg(&self.storage)
            .arg("--ctrl-socket")
            .arg(&self.socket)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--cgroup-parent")
            .arg(&self.cgroup)
            .arg("--config")
            .arg(self.tmp.path().join("pantavisor.config"))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn start(&mut self) {
        let config = self.tmp.path().join("pantavisor.config");
        if !config.exists() {
            // Short stop timeouts keep the tests quick; busybox sh as a
            // container's init ignores SIGTERM and is killed after it.
            fs::write(&config, "stop.timeout=3\nlog.maxsize=65536\nupdate.commit_delay=1\nupdate.goals_timeout=6\n").unwrap();
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("daemon.out"))
            .unwrap();
        let child = self
            .daemon_command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        wait_for(Duration::from_secs(10), || {
            self.socket.exists().then_some(())
        })
        .expect("control socket");
    }

    /// SIGTERM the daemon and wait for it; returns its exit code.
    pub fn stop(&mut self) -> i32 {
        let mut child = self.daemon.take().expect("running");
        unsafe { kill(child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("daemon.out")).unwrap_or_default()
    }

    /// Replace the state of revision 0 (for states the composer does not make).
    pub fn edit_state(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>, &Path)) {
        let path = self.storage.join("trails/0/.pvr/json");
        let mut v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        edit(v.as_object_mut().unwrap(), &self.storage.join("objects"));
        let state = pvstate::State::parse(&serde_json::to_vec(&v).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(&path, state.to_canonical()).unwrap();
    }

    pub fn container_log(&self, name: &str) -> String {
        fs::read_to_string(self.storage.join("logs/0").join(name).join("stdout.log"))
            .unwrap_or_default()
    }

    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.request_bytes(method, path, body.as_bytes())
    }

    pub fn request_bytes(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let reply = pvctrl::Client::socket(&self.socket)
            .with_timeout(Duration::from_secs(30))
            .call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\ndaemon log:\n{}", self.daemon_log()));
        (reply.status, reply.json())
    }

    /// The container `name` as /containers reports it.
    pub fn container(&self, name: &str) -> Value {
        pvctrl::Client::socket(&self.socket)
            .containers()
            .unwrap_or_else(|e| panic!("GET /containers: {e}\ndaemon log:\n{}", self.daemon_log()))
            .into_iter()
            .find(|c| c["name"] == name)
            .unwrap_or(Value::Null)
    }

    pub fn status(&self, name: &str) -> String {
        self.container(name)["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn wait_status(&self, name: &str, want: &str, within: Duration) {
        if wait_for(within, || (self.status(name) == want).then_some(())).is_none() {
            panic!(
                "{name} never became {want} (is {}):\n{}",
                self.status(name),
                self.daemon_log()
            );
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let _ = self.stop();
        }
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Poll `f` every 50 ms until it gives a value or `within` passes.
pub fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seconds (with milliseconds) of the daemon log lines that contain `needle`.
pub fn log_times(log: &str, needle: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

/// A new version of container `name`: its rootfs (already under
/// rootfs/<name>) changed by `change`, composed with `settings` (YAML of the
/// manifest's container settings), objects uploaded to the daemon. Returns
/// the part's state entries.
pub fn new_version(
    g: &Gateway,
    name: &str,
    settings: &str,
    change: impl FnOnce(&Path),
) -> serde_json::Map<String, Value> {
    let rootfs = g.tmp.path().join("rootfs").join(name);
    change(&rootfs);
    let settings: pvcompose::spec::ContainerSettings = serde_yaml::from_str(settings).unwrap();
    let job = pvcompose::container::ContainerJob {
        name: name.to_string(),
        rootfs,
        settings,
        config_dir: None,
        squash: SquashOptions {
            comp: Compressor::Lz4,
            mtime: Some(1_700_000_000),
            ..Default::default()
        },
        src_extra: Default::default(),
    };
    let work = tempfile::tempdir().unwrap();
    let store = pvstate::ObjectStore::open(work.path().join("objects")).unwrap();
    let (state, _) = pvcompose::container::compose(
        &job,
        &Mksquashfs::find().unwrap(),
        &store,
        work.path(),
        &Reporter::new(Mode::Quiet),
    )
    .unwrap();
    for id in state.object_ids() {
        let bytes = fs::read(store.path(&id)).unwrap();
        let (code, body) = g.request_bytes("PUT", &format!("/objects/{id}"), &bytes);
        assert_eq!(code, 200, "upload {id}: {body}");
    }
    state.to_value().as_object().unwrap().clone()
}

impl Gateway {
    /// The state of a revision, from the daemon.
    pub fn step(&self, rev: &str) -> serde_json::Map<String, Value> {
        let (code, v) = self.request("GET", &format!("/steps/{rev}"), "");
        assert_eq!(code, 200, "{v}");
        v.as_object().unwrap().clone()
    }

    /// Install `state` as locals/NAME.
    pub fn install(&self, name: &str, state: &serde_json::Map<String, Value>) -> (u16, Value) {
        self.request(
            "PUT",
            &format!("/steps/locals/{name}"),
            &Value::Object(state.clone()).to_string(),
        )
    }

    pub fn command(&self, op: &str, payload: &str) -> (u16, Value) {
        self.request(
            "POST",
            "/commands",
            &serde_json::json!({"op": op, "payload": payload}).to_string(),
        )
    }

    pub fn progress(&self, rev: &str) -> Value {
        self.request("GET", &format!("/steps/{rev}/progress"), "").1
    }

    /// Wait until the progress of `rev` is `status`.
    pub fn wait_progress(&self, rev: &str, status: &str, within: Duration) -> Value {
        wait_for(within, || {
            let p = self.progress(rev);
            (p["status"] == status).then_some(p)
        })
        .unwrap_or_else(|| {
            panic!(
                "{rev} never {status} (is {}):\n{}",
                self.progress(rev),
                self.daemon_log()
            )
        })
    }

    pub fn pid(&self, name: &str) -> i64 {
        self.container(name)["pid"].as_i64().unwrap_or(-1)
    }

    pub fn boot_env(&self) -> String {
        fs::read_to_string(self.storage.join("boot/pv.env")).unwrap_or_default()
    }
}
