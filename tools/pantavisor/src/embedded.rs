//! Embedded mode: what `pantavisor` does as PID 1 of an initramfs before the
//! supervisor takes over — the kernel command line, the early file systems,
//! the modules needed to reach storage, finding and mounting the data
//! partition, the revision's module and firmware images and the modules it
//! needs (see `kmod`) — and what it does at the end: stop, sync, reboot(2).
//! The pieces that only read files are plain functions, tested on their own.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Where the data partition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Label(String),
    Uuid(String),
    Path(PathBuf),
}

/// What the kernel command line tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// `pv_storage=LABEL=pvdata | UUID=… | /dev/vda2` (default LABEL=pvdata).
    pub storage: DeviceSpec,
    /// `pv_storage.fstype=ext4`.
    pub fstype: String,
    /// `pv_storage.wait=SECONDS` for the device to appear (default 10).
    pub wait: Duration,
    /// `pv_modules=a,b,c`: modules to load from the initramfs before looking
    /// for the device (with their dependencies).
    pub modules: Vec<String>,
    /// `pv_rev=`/`pv_try=` as a bootloader passed them (informational: the
    /// boot environment on storage is what counts).
    pub rev: Option<String>,
    pub try_rev: Option<String>,
    /// `pv_config=PATH` on storage (default config/pantavisor.config).
    pub config: PathBuf,
}

/// The kernel command line words that are boot arguments, not configuration
/// keys: those [`parse_cmdline`] reads, and the bootloader's reports. (The
/// kernel hands PID 1 the words it does not know as environment variables
/// too.)
pub const BOOT_ARGS: &[&str] = &[
    "pv_storage",
    "pv_storage.fstype",
    "pv_storage.wait",
    "pv_modules",
    "pv_rev",
    "pv_try",
    "pv_config",
    // Read by the daemon: the revision whose kernel the bootloader booted
    // (our U-Boot script), the Raspberry Pi boot partition (our cmdline.txt).
    "pv_bootrev",
    "pv_rpi_part",
];

pub fn parse_cmdline(cmdline: &str) -> Result<BootArgs> {
    let mut args = BootArgs {
        storage: DeviceSpec::Label("pvdata".into()),
        fstype: "ext4".into(),
        wait: Duration::from_secs(10),
        modules: Vec::new(),
        rev: None,
        try_rev: None,
        config: PathBuf::from("config/pantavisor.config"),
    };
    for word in cmdline.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else {
            continue;
        };
        match k {
            "pv_storage" => {
                args.storage = if let Some(l) = v.strip_prefix("LABEL=") {
                    DeviceSpec::Label(l.into())
                } else if let Some(u) = v.strip_prefix("UUID=") {
                    DeviceSpec::Uuid(u.to_ascii_lowercase())
                } else if v.starts_with('/') {
                    DeviceSpec::Path(v.into())
                } else {
                    return Err(Error::Other(format!(
                        "pv_storage={v}: use LABEL=…, UUID=… or /dev/…"
                    )));
                }
            }
            "pv_storage.fstype" => args.fstype = v.into(),
            "pv_storage.wait" => {
                args.wait = Duration::from_secs(v.parse().map_err(|_| {
                    Error::Other(format!("pv_storage.wait={v}: not a number of seconds"))
                })?)
            }
            "pv_modules" => {
                args.modules = v
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "pv_rev" => args.rev = Some(v.into()),
            "pv_try" => args.try_rev = Some(v.into()).filter(|t: &String| !t.is_empty()),
            "pv_config" => args.config = v.into(),
            _ => {}
        }
    }
    Ok(args)
}

/// Label and UUID of an ext2/3/4 file system (its superblock at 1024).
pub fn ext4_identity(dev: &Path) -> Option<(String, String)> {
    let mut f = fs::File::open(dev).ok()?;
    let mut sb = [0u8; 256];
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    if u16::from_le_bytes([sb[56], sb[57]]) != 0xef53 {
        return None;
    }
    let u = &sb[104..120];
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex(&u[0..4]),
        hex(&u[4..6]),
        hex(&u[6..8]),
        hex(&u[8..10]),
        hex(&u[10..16])
    );
    let label = String::from_utf8_lossy(&sb[120..136])
        .trim_end_matches('\0')
        .to_string();
    Some((label, uuid))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The block device `spec` names, looking at `/dev/NAME` for every entry of
/// `sys_block` (/sys/class/block), until `wait` passes.
pub fn find_device(
    spec: &DeviceSpec,
    sys_block: &Path,
    dev: &Path,
    wait: Duration,
) -> Result<PathBuf> {
    let deadline = Instant::now() + wait;
    loop {
        if let DeviceSpec::Path(p) = spec {
            if p.exists() {
                return Ok(p.clone());
            }
        } else if let Ok(entries) = fs::read_dir(sys_block) {
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let node = dev.join(&name);
                if let Some((label, uuid)) = ext4_identity(&node) {
                    let hit = match spec {
                        DeviceSpec::Label(l) => *l == label,
                        DeviceSpec::Uuid(u) => *u == uuid,
                        DeviceSpec::Path(_) => false,
                    };
                    if hit {
                        return Ok(node);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "no block device {spec:?} within {wait:?} (is its driver loaded? pv_modules=)"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// proc, sys, devtmpfs, devpts, /run and the cgroup2 hierarchy, as an init
/// must mount them; each skipped when already there.
pub fn early_mounts() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let table: [(&str, &str, &str, MsFlags, Option<&str>); 6] = [
        ("proc", "/proc", "proc", nodev, None),
        ("sysfs", "/sys", "sysfs", nodev, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=666"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, None),
    ];
    for (src, target, fstype, flags, data) in table {
        fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        if is_mountpoint(Path::new(target)) {
            continue;
        }
        mount(Some(src), target, Some(fstype), flags, data)
            .map_err(|e| Error::sys(format!("mount {fstype} on {target}"), e))?;
    }
    Ok(())
}

fn is_mountpoint(p: &Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(4) == Some(&p.to_string_lossy()))
        })
        .unwrap_or(false)
}

/// Copy the initramfs (a `rootfs` mount, which pivot_root cannot leave)
/// into a tmpfs and make that the root, as switch_root does; containers can
/// then pivot_root into their own roots.
fn leave_rootfs() -> Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    fs::create_dir_all("/proc").map_err(|e| Error::io("/proc", e))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount proc", e))?;
    let on_rootfs = fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines().any(|l| l.starts_with("rootfs / "))
                && !m
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some("/") && !l.starts_with("rootfs "))
        })
        .unwrap_or(false);
    let _ = umount2("/proc", MntFlags::MNT_DETACH);
    if !on_rootfs {
        return Ok(());
    }
    let new = Path::new("/.newroot");
    fs::create_dir_all(new).map_err(|e| Error::io(new, e))?;
    mount(
        Some("tmpfs"),
        new,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(|e| Error::sys("mount tmpfs for the new root", e))?;
    for entry in fs::read_dir("/").map_err(|e| Error::io("/", e))?.flatten() {
        let name = entry.file_name();
        if [".newroot", "proc", "sys", "dev", "run"]
            .iter()
            .any(|n| name == *n)
        {
            continue;
        }
        copy_tree(&entry.path(), &new.join(&name))?;
    }
    std::env::set_current_dir(new).map_err(|e| Error::io(new, e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| Error::sys("move the new root", e))?;
    nix::unistd::chroot(".").map_err(|e| Error::sys("chroot", e))?;
    std::env::set_current_dir("/").map_err(|e| Error::io("/", e))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let meta = fs::symlink_metadata(from).map_err(|e| Error::io(from, e))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(from).map_err(|e| Error::io(from, e))?;
        symlink(target, to).map_err(|e| Error::io(to, e))?;
    } else if meta.is_dir() {
        fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
        for entry in fs::read_dir(from)
            .map_err(|e| Error::io(from, e))?
            .flatten()
        {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, fs::Permissions::from_mode(meta.permissions().mode()))
            .map_err(|e| Error::io(to, e))?;
    } else if meta.is_file() {
        fs::copy(from, to).map_err(|e| Error::io(to, e))?;
    }
    Ok(())
}

/// The running kernel's release (for /lib/modules/RELEASE).
fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Boot to the supervisor: file systems, modules, the data partition, the
/// revision's BSP modules and firmware, then run until told to stop.
fn boot(
    make_options: &dyn Fn(&Path, &str) -> Result<crate::config::Options>,
) -> Result<crate::daemon::Stop> {
    leave_rootfs()?;
    early_mounts()?;
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let args = parse_cmdline(&cmdline)?;
    let release = kernel_release();
    let modules_dir = Path::new("/lib/modules").join(&release);
    let mut wanted: Vec<String> = fs::read_to_string("/etc/pantavisor/modules")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    wanted.extend(args.modules.iter().cloned());
    let loaded = if wanted.is_empty() {
        Vec::new()
    } else {
        crate::kmod::ModuleTree::open(&modules_dir)?.load_all(&wanted)?
    };
    eprintln!(
        "pantavisor: kernel {release}; modules loaded: {}",
        loaded.join(" ")
    );
    let dev = find_device(
        &args.storage,
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        args.wait,
    )?;
    let storage = Path::new("/storage");
    fs::create_dir_all(storage).map_err(|e| Error::io(storage, e))?;
    nix::mount::mount(
        Some(&dev),
        storage,
        Some(args.fstype.as_str()),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            format!("mount {} ({}) on /storage", dev.display(), args.fstype),
            e,
        )
    })?;
    eprintln!("pantavisor: storage {} mounted", dev.display());
    let text = fs::read_to_string(storage.join(&args.config)).unwrap_or_default();
    let opts = make_options(storage, &text)?;
    if let Some(dir) = opts.ctrl_socket.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // The daemon chooses the revision and checks it (signatures, objects)
    // before anything of it is used — its BSP modules included.
    let daemon = crate::daemon::Daemon::new(opts)?;
    let (rev, state) = daemon.revision();
    let rev = rev.to_string();
    // The revision's kernel modules and firmware, from its BSP part.
    let mut have_modules = false;
    {
        for (key, target) in bsp_volumes(state, &release) {
            if let Some(pvstate::Entry::Object(id)) = state.get(&key) {
                let image = storage.join("objects").join(id.to_string());
                fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
                match crate::mounts::mount_squashfs(&image, &target) {
                    Ok(()) => {
                        eprintln!(
                            "pantavisor: {key} of revision {rev} on {}",
                            target.display()
                        );
                        have_modules |= key.starts_with("bsp/modules");
                    }
                    Err(e) => eprintln!("pantavisor: {key} of revision {rev}: {e}"),
                }
            }
        }
    }
    if have_modules {
        revision_modules(&modules_dir, &rev);
    }
    // The module tables were read and dropped: give the C library's freed
    // heap back, as PID 1 stays resident from here on.
    crate::sys::trim_heap();
    daemon.run()
}

/// The BSP's module and firmware images of a revision and where they go,
/// as `bsp/run.json` names them: `modules_RELEASE` (one image per kernel,
/// as Raspberry Pi A/B BSPs have) before `modules`, then `firmware`.
pub fn bsp_volumes(state: &pvstate::State, release: &str) -> Vec<(String, PathBuf)> {
    let run = match state.get("bsp/run.json") {
        Some(pvstate::Entry::BspRun(r)) => Some(r),
        _ => None,
    };
    let modules = run.and_then(|r| {
        r.extra
            .get(&format!("modules_{release}"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| r.modules.clone())
    });
    let firmware = run.and_then(|r| r.firmware.clone());
    let mut out = Vec::new();
    if let Some(m) = modules.filter(|m| !m.is_empty()) {
        out.push((format!("bsp/{m}"), Path::new("/lib/modules").join(release)));
    }
    if let Some(f) = firmware.filter(|f| !f.is_empty()) {
        out.push((format!("bsp/{f}"), PathBuf::from("/lib/firmware")));
    }
    out
}

/// The modules the running revision needs: those its module tree lists
/// (`modules-load.d/*.conf`) and those of the devices no driver has claimed
/// yet. One that fails is reported and the boot goes on: the containers
/// that need it fail their goals, and a try revision is rolled back.
fn revision_modules(dir: &Path, rev: &str) {
    let mut tree = match crate::kmod::ModuleTree::open(dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pantavisor: modules of revision {rev}: {e}");
            return;
        }
    };
    let listed = crate::kmod::listed_modules(dir);
    let devices = crate::kmod::unclaimed_modaliases(Path::new("/sys/devices"));
    let for_devices = tree.for_devices(&devices);
    let mut wanted = listed.clone();
    wanted.extend(for_devices.iter().filter(|m| !listed.contains(m)).cloned());
    let done = tree.load_each(&wanted);
    eprintln!(
        "pantavisor: modules of revision {rev}: listed [{}], for {} unclaimed devices [{}]; loaded [{}]",
        listed.join(" "),
        devices.len(),
        for_devices.join(" "),
        done.loaded.join(" ")
    );
    for f in done.failed {
        eprintln!("pantavisor: module {f}");
    }
}

/// Unmount the data partition before a reboot (its journal is then clean).
fn umount_storage() -> Result<()> {
    crate::mounts::umount_all_below(Path::new("/storage"));
    nix::mount::umount2("/storage", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys("umount /storage", e))
}

/// PID 1: boot, run, and never return — stop, sync and power off when
/// told to stop (SIGTERM/SIGINT, or ctrl-alt-del), reboot after a fatal
/// error so that the bootloader's try latch falls back to the committed
/// revision.
pub fn pid1(make_options: impl Fn(&Path, &str) -> Result<crate::config::Options>) -> ! {
    use nix::sys::reboot::{reboot, set_cad_enabled, RebootMode};
    // ctrl-alt-del sends us SIGINT instead of resetting the machine.
    let _ = set_cad_enabled(false);
    let mode = match boot(&make_options) {
        Ok(crate::daemon::Stop::Halt) => {
            eprintln!("pantavisor: stopped; powering off");
            RebootMode::RB_POWER_OFF
        }
        Ok(crate::daemon::Stop::Reboot { why, arg }) => {
            eprintln!("pantavisor: rebooting ({why})");
            let _ = umount_storage();
            nix::unistd::sync();
            if let Some(arg) = arg {
                crate::sys::restart2(&arg);
            }
            RebootMode::RB_AUTOBOOT
        }
        Err(e) => {
            eprintln!("pantavisor: FATAL: {e}; rebooting in 5 s");
            std::thread::sleep(Duration::from_secs(5));
            RebootMode::RB_AUTOBOOT
        }
    };
    nix::unistd::sync();
    loop {
        let _ = reboot(mode);
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let a = parse_cmdline(
            "console=ttyS0 quiet pv_storage=LABEL=data pv_modules=virtio_blk,ext4 pv_try=locals/x",
        )
        .unwrap();
        assert_eq!(a.storage, DeviceSpec::Label("data".into()));
        assert_eq!(a.modules, ["virtio_blk", "ext4"]);
        assert_eq!(a.try_rev.as_deref(), Some("locals/x"));
        assert_eq!(a.fstype, "ext4");
        let a = parse_cmdline("pv_storage=UUID=ABCD-1234 pv_storage.wait=30").unwrap();
        assert_eq!(a.storage, DeviceSpec::Uuid("abcd-1234".into()));
        assert_eq!(a.wait, Duration::from_secs(30));
        assert_eq!(
            parse_cmdline("").unwrap().storage,
            DeviceSpec::Label("pvdata".into())
        );
        assert!(parse_cmdline("pv_storage=sda1").is_err());
        assert!(parse_cmdline("pv_storage.wait=soon").is_err());
    }

    #[test]
    fn the_bsp_names_its_module_and_firmware_images() {
        let id = |c: char| -> pvstate::ObjectId { c.to_string().repeat(64).parse().unwrap() };
        let run = |extra: serde_json::Value| {
            let mut r: pvstate::model::BspRun = serde_json::from_value(serde_json::json!({
                "linux": "kernel.img", "initrd": "pantavisor",
                "modules": "modules.squashfs", "firmware": "firmware.squashfs"
            }))
            .unwrap();
            if let serde_json::Value::Object(m) = extra {
                r.extra.extend(m);
            }
            let mut s = pvstate::State::new();
            s.insert("bsp/run.json", pvstate::Entry::BspRun(r));
            s.insert("bsp/modules.squashfs", pvstate::Entry::Object(id('a')));
            s
        };
        let plain = bsp_volumes(&run(serde_json::json!({})), "6.1.0-56-amd64");
        assert_eq!(
            plain,
            [
                (
                    "bsp/modules.squashfs".to_string(),
                    PathBuf::from("/lib/modules/6.1.0-56-amd64")
                ),
                (
                    "bsp/firmware.squashfs".to_string(),
                    PathBuf::from("/lib/firmware")
                )
            ]
        );
        let per_kernel =
            run(serde_json::json!({"modules_6.6.31-v8+": "modules_6.6.31-v8+.squashfs"}));
        assert_eq!(
            bsp_volumes(&per_kernel, "6.6.31-v8+")[0].0,
            "bsp/modules_6.6.31-v8+.squashfs"
        );
        assert_eq!(
            bsp_volumes(&per_kernel, "6.6.31-v7l+")[0].0,
            "bsp/modules.squashfs"
        );
        assert!(bsp_volumes(&pvstate::State::new(), "6.1").is_empty());
    }

    #[test]
    fn finds_an_ext4_file_system_by_label_and_uuid() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("dev/vdb");
        fs::create_dir_all(tmp.path().join("dev")).unwrap();
        fs::create_dir_all(tmp.path().join("sys/vda")).unwrap();
        fs::create_dir_all(tmp.path().join("sys/vdb")).unwrap();
        fs::write(tmp.path().join("dev/vda"), vec![0u8; 4096]).unwrap();
        let out = std::process::Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "pvdata",
                "-U",
                "0b5f2d3c-1111-4222-8333-944455556666",
            ])
            .arg(&img)
            .arg("4M")
            .output()
            .expect("mkfs.ext4 (e2fsprogs)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            ext4_identity(&img),
            Some((
                "pvdata".into(),
                "0b5f2d3c-1111-4222-8333-944455556666".into()
            ))
        );
        let (sys, dev) = (tmp.path().join("sys"), tmp.path().join("dev"));
        let w = Duration::from_millis(10);
        assert_eq!(
            find_device(&DeviceSpec::Label("pvdata".into()), &sys, &dev, w).unwrap(),
            img
        );
        assert_eq!(
            find_device(
                &DeviceSpec::Uuid("0b5f2d3c-1111-4222-8333-944455556666".into()),
                &sys,
                &dev,
                w
            )
            .unwrap(),
            img
        );
        let e = find_device(&DeviceSpec::Label("other".into()), &sys, &dev, w).unwrap_err();
        assert!(e.to_string().contains("pv_modules"), "{e}");
    }
}
