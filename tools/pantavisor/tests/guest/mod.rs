#![allow(dead_code)]
//! Helpers of the QEMU tests: paths, commands, workspace binaries, and the
//! device's remote API through a forwarded port (token `tok`).

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_pantavisor")).with_file_name(name);
    if !path.exists() {
        run(Command::new(env!("CARGO")).args(["build", "-p", package]));
    }
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The device's remote API through the forwarded port.
pub fn api(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let client = pvctrl::Client::new(pvctrl::Target::Tcp(format!("127.0.0.1:{port}")))
        .with_token(Some("tok".into()))
        .with_timeout(Duration::from_secs(10));
    match client.call(method, path, body.as_bytes()) {
        Ok(reply) => (reply.status, reply.json()),
        Err(_) => (0, Value::Null),
    }
}

pub fn pvr(dir: &Path, args: &[&str]) -> String {
    run(Command::new(workspace_bin("pvr", "pvr"))
        .arg("-C")
        .arg(dir)
        .args(args))
}

/// The test fails with `what` and the guest's console; the guest is killed.
pub fn fail(g: &mut Guest, what: &str) -> ! {
    let c = g.console();
    g.kill();
    panic!("{what}:\n{c}")
}

/// `pvr clone` of the device on `port` (token `tok`) into `d/ws`.
pub fn clone_remote(d: &Path, port: u16) -> PathBuf {
    let ws = d.join("ws");
    pvr(
        d,
        &[
            "--token",
            "tok",
            "clone",
            &format!("http://127.0.0.1:{port}"),
            ws.to_str().unwrap(),
        ],
    );
    ws
}

/// The file name `bsp/run.json`'s `member` (linux, initrd) names in `ws`.
pub fn bsp_file(ws: &Path, member: &str) -> String {
    let run: Value =
        serde_json::from_str(&fs::read_to_string(ws.join("bsp/run.json")).unwrap()).unwrap();
    run[member].as_str().unwrap().to_string()
}

/// In the pvr workspace `ws`: commit with `message`, post it to the device
/// on `port` as `rev` and ask it to run that revision (LOCAL_RUN). Returns
/// what `pvr post` printed.
pub fn commit_post_run(ws: &Path, port: u16, message: &str, rev: &str) -> String {
    pvr(ws, &["commit", "-m", message]);
    let posted = pvr(ws, &["--token", "tok", "post", "--rev", rev]);
    let (code, body) = api(
        port,
        "POST",
        "/commands",
        &format!(r#"{{"op":"LOCAL_RUN","payload":"{rev}"}}"#),
    );
    assert_eq!(code, 200, "LOCAL_RUN {rev}: {body}");
    posted
}

/// A QEMU guest booting the BSP of `dir` (ci/mkimage bsp) from `disk`,
/// its serial console in a file, its monitor on a socket; killed when dropped.
pub struct Guest {
    pub child: Child,
    pub serial: PathBuf,
    pub monitor: PathBuf,
    pub kvm: bool,
}

impl Guest {
    pub fn boot(dir: &Path, disk: &Path, kvm: bool) -> Guest {
        Self::boot_with(dir, disk, kvm, &["-no-reboot"])
    }

    pub fn boot_with(dir: &Path, disk: &Path, kvm: bool, extra: &[&str]) -> Guest {
        Self::boot_cmdline(dir, disk, kvm, extra, "")
    }

    /// [`Guest::boot_with`], with `cmdline` added to the kernel command line.
    pub fn boot_cmdline(
        dir: &Path,
        disk: &Path,
        kvm: bool,
        extra: &[&str],
        cmdline: &str,
    ) -> Guest {
        let bsp = dir.join("bsp");
        Self::boot_kernel(
            dir,
            &bsp.join("vmlinuz"),
            &bsp.join("initramfs.cpio.gz"),
            &format!("console=ttyS0 pv_storage=LABEL=pvdata panic=-1 quiet {cmdline}"),
            disk,
            kvm,
            extra,
        )
    }

    /// A guest booting `kernel` and `initrd` with command line `append`.
    pub fn boot_kernel(
        dir: &Path,
        kernel: &Path,
        initrd: &Path,
        append: &str,
        disk: &Path,
        kvm: bool,
        extra: &[&str],
    ) -> Guest {
        let boot = [
            "-kernel".as_ref(),
            kernel.as_os_str(),
            "-initrd".as_ref(),
            initrd.as_os_str(),
            "-append".as_ref(),
            append.as_ref(),
        ];
        Self::spawn(dir, disk, kvm, extra, &boot)
    }

    /// A guest whose firmware is `bios` (U-Boot's ROM): it finds its own
    /// way to a kernel on `disk`.
    pub fn boot_bios(dir: &Path, bios: &Path, disk: &Path, extra: &[&str]) -> Guest {
        Self::spawn(
            dir,
            disk,
            false,
            extra,
            &["-bios".as_ref(), bios.as_os_str()],
        )
    }

    fn spawn(
        dir: &Path,
        disk: &Path,
        kvm: bool,
        extra: &[&str],
        boot: &[&std::ffi::OsStr],
    ) -> Guest {
        let serial = dir.join(if kvm { "serial-kvm.log" } else { "serial.log" });
        let monitor = dir.join("monitor.sock");
        let _ = fs::remove_file(&monitor);
        // A console left by an earlier boot would be read as this one's
        // until QEMU truncates it.
        let _ = fs::remove_file(&serial);
        let mut cmd = Command::new("qemu-system-x86_64");
        if kvm {
            cmd.args(["-enable-kvm", "-cpu", "host"]);
        }
        cmd.args(["-m", "1024", "-smp", "2", "-display", "none"])
            .args(extra)
            .args(boot)
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", disk.display()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Guest {
            child: cmd
                .spawn()
                .expect("qemu-system-x86_64 (ci/test installs qemu-system-x86)"),
            serial,
            monitor,
            kvm,
        }
    }

    /// The serial console so far (a kernel or a container may print bytes
    /// that are not UTF-8: they do not hide the rest).
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    pub fn wait_for(&mut self, text: &str, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.console().contains(text) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.console().contains(text);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    pub fn monitor(&self, command: &str) {
        let mut s = UnixStream::connect(&self.monitor).expect("QEMU monitor");
        writeln!(s, "{command}").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The start of every QEMU test: root (asserted), a temporary directory
/// with the BSP `ci/mkimage bsp` makes.
pub fn bsp_dir() -> tempfile::TempDir {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "needs root (ci/test runs it as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new("bash")
        .arg(root().join("ci/mkimage"))
        .arg("bsp")
        .arg(tmp.path()));
    tmp
}

/// A container root file system at `dir` from Debian's static busybox,
/// with `applets` linked in `bin/`.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static (ci/test installs it)");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}

/// `dir/gateway.yaml`: the BSP of [`bsp_dir`] and `body` (containers, core,
/// config, squashfs).
pub fn gateway_manifest(dir: &Path, body: &str) {
    fs::write(
        dir.join("gateway.yaml"),
        format!(
            "bsp:\n  kernel: bsp/vmlinuz\n  initrd: bsp/initramfs.cpio.gz\n  modules: bsp/modules\n{body}"
        ),
    )
    .unwrap();
}

/// `pvcompose pvroot` of `dir/gateway.yaml` into `dir/pvroot`, then
/// `ci/mkimage disk` of it into `disk` (`size_mb` MiB).
pub fn compose_disk(dir: &Path, disk: &Path, size_mb: &str) {
    run(Command::new(workspace_bin("pvcompose", "pvcompose"))
        .args(["pvroot", "--quiet", "--manifest"])
        .arg(dir.join("gateway.yaml"))
        .arg("--out")
        .arg(dir.join("pvroot")));
    disk_image(&dir.join("pvroot"), disk, size_mb);
}

/// `ci/mkimage disk` of `pvroot` into `disk` (`size_mb` MiB).
pub fn disk_image(pvroot: &Path, disk: &Path, size_mb: &str) {
    run(Command::new("bash")
        .arg(root().join("ci/mkimage"))
        .arg("disk")
        .arg(pvroot)
        .arg(disk)
        .arg(size_mb));
}

/// The Raspberry Pi firmware's part in the tryboot layout (`ci/mkimage
/// rpi-disk`): `autoboot.txt` on partition 1 names the boot partition, its
/// `[tryboot]` section the one taken once after a reboot with the tryboot
/// flag; that partition's `config.txt` names the kernel and initramfs,
/// its `cmdline.txt` the command line. Read with mtools, straight from the
/// disk image.
pub struct Firmware {
    pub disk: PathBuf,
    /// The start of each partition, in bytes (index 0: partition 1).
    starts: Vec<u64>,
}

impl Firmware {
    pub fn new(disk: &Path) -> Firmware {
        let out = run(Command::new("sfdisk").arg("-J").arg(disk));
        let table: Value = serde_json::from_str(&out).unwrap();
        let starts = table["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["start"].as_u64().unwrap() * 512)
            .collect();
        Firmware {
            disk: disk.to_path_buf(),
            starts,
        }
    }

    /// The text of `name` on FAT partition `part`, if there.
    pub fn read(&self, part: u32, name: &str) -> Option<String> {
        let image = format!(
            "{}@@{}",
            self.disk.display(),
            self.starts[part as usize - 1]
        );
        let out = Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &image, &format!("::{name}")])
            .output()
            .expect("mtools (ci/test installs it)");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `name` of partition `part` copied out to `to`.
    pub fn copy_out(&self, part: u32, name: &str, to: &Path) {
        let image = format!(
            "{}@@{}",
            self.disk.display(),
            self.starts[part as usize - 1]
        );
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-n", "-i", &image, &format!("::{name}")])
            .arg(to));
    }

    /// The boot partition `autoboot.txt` names: under `[tryboot]` with the
    /// flag, else under `[all]`.
    pub fn partition(&self, tryboot: bool) -> u32 {
        let text = self.read(1, "autoboot.txt").expect("autoboot.txt");
        let want = if tryboot { "[tryboot]" } else { "[all]" };
        let mut section = "";
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if let Some(v) = line.strip_prefix("boot_partition=") {
                if section == want {
                    return v.parse().unwrap();
                }
            }
        }
        panic!("autoboot.txt names no boot partition under {want}:\n{text}")
    }

    /// Boot as the firmware would (with the tryboot flag or not): the
    /// partition, its kernel, initramfs and command line; QEMU's reboot
    /// ends the guest (-no-reboot) and the caller plays the next boot.
    pub fn boot(&self, dir: &Path, tryboot: bool, extra: &[&str]) -> (Guest, u32) {
        let part = self.partition(tryboot);
        let config = self.read(part, "config.txt").unwrap_or_default();
        let kernel = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("kernel="))
            .unwrap_or("kernel8.img")
            .to_string();
        let initrd = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("initramfs "))
            .and_then(|l| l.split_whitespace().next())
            .expect("config.txt names an initramfs")
            .to_string();
        let cmdline = self.read(part, "cmdline.txt").unwrap_or_default();
        let fw = dir.join("firmware-loaded");
        fs::create_dir_all(&fw).unwrap();
        self.copy_out(part, &kernel, &fw.join("kernel"));
        self.copy_out(part, &initrd, &fw.join("initrd"));
        eprintln!(
            "firmware: partition {part} (tryboot {tryboot}): kernel {kernel} ({} bytes), initramfs {initrd}, command line {:?}",
            fs::metadata(fw.join("kernel")).map(|m| m.len()).unwrap_or(0),
            cmdline.trim()
        );
        let mut args = vec!["-no-reboot"];
        args.extend_from_slice(extra);
        let guest = Guest::boot_kernel(
            dir,
            &fw.join("kernel"),
            &fw.join("initrd"),
            cmdline.trim(),
            &self.disk,
            false,
            &args,
        );
        (guest, part)
    }
}
