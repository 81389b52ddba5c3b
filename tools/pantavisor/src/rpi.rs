//! Raspberry Pi A/B tryboot, the partition side. The firmware reads
//! `autoboot.txt` from the first (FAT) partition: `[all] boot_partition=A`
//! is what it boots, `[tryboot] boot_partition=B` what it boots once after a
//! reboot with the `tryboot` flag. A revision tried through a reboot has its
//! BSP — kernel, initramfs, device trees, overlays, firmware files,
//! `config.txt`, `cmdline.txt` — written to the boot partition that is not
//! committed ([`RpiTryboot::stage`]); its commit makes that partition the
//! committed one by rewriting `autoboot.txt` ([`RpiTryboot::commit_partition`]).
//! A try whose kernel never starts, or a power cut during it, leaves the
//! firmware on the committed partition, and the daemon that comes up there
//! sees the try did not boot ([`booted_partition`]).
//!
//! `autoboot` is a block device (`/dev/mmcblk0p1`: the partition holding
//! `autoboot.txt`; the boot partitions are its siblings, `/dev/mmcblk0p2`
//! and `…p3`), mounted (vfat) only while it is read or written; or, for
//! tests and development, a plain `autoboot.txt` path whose boot
//! partitions are the directories `p2`, `p3` beside it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::bootloader::RpiTryboot;
use crate::error::{Error, Result};

/// The kernel argument every `cmdline.txt` we write carries: the boot
/// partition the kernel came from.
pub const PART_ARG: &str = "pv_rpi_part";
/// On a boot partition: the files the daemon wrote there, one per line
/// (the next write removes those the new BSP no longer has).
const MANIFEST: &str = "pv-bsp-files.txt";

/// The boot partition this kernel came from: `pv_rpi_part=N` on its command
/// line (our `cmdline.txt`), else the firmware's device-tree entry
/// `chosen/bootloader/partition` under `dt` (`/proc/device-tree`).
pub fn booted_partition(cmdline: &str, dt: &Path) -> Option<u32> {
    let prefix = format!("{PART_ARG}=");
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix(&prefix)?.parse().ok())
        .or_else(|| {
            let b = fs::read(dt.join("chosen/bootloader/partition")).ok()?;
            Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
        })
}

/// The running kernel's boot partition (see [`booted_partition`]).
pub fn running_partition() -> Option<u32> {
    booted_partition(
        &fs::read_to_string("/proc/cmdline").unwrap_or_default(),
        Path::new("/proc/device-tree"),
    )
}

/// `text` (a kernel command line) with `pv_rpi_part=part` in place of any
/// it had.
pub fn with_part_arg(text: &str, part: u32) -> String {
    let prefix = format!("{PART_ARG}=");
    let mut args: Vec<&str> = text
        .split_whitespace()
        .filter(|a| !a.starts_with(&prefix))
        .collect();
    let mine = format!("{prefix}{part}");
    args.push(&mine);
    args.join(" ") + "\n"
}

/// Which file system of the tryboot layout.
#[derive(Clone, Copy)]
enum Fs {
    Autoboot,
    Boot(u32),
}

/// What a boot partition receives from a revision's BSP.
pub struct BspFiles {
    /// Partition-relative name (`vmlinuz`, `overlays/x.dtbo`) → its object.
    pub files: Vec<(String, PathBuf)>,
    /// `bsp/run.json`'s kernel, initramfs and device tree, for a
    /// `config.txt` when the BSP brings none.
    pub linux: Option<String>,
    pub initrd: Option<String>,
    pub fdt: Option<String>,
}

impl BspFiles {
    /// The files of `state`'s BSP that belong on a boot partition: every
    /// object under `bsp/` but the module and firmware images the daemon
    /// mounts itself; `object` gives an object's path.
    pub fn of_state(
        state: &pvstate::State,
        object: impl Fn(&pvstate::ObjectId) -> PathBuf,
    ) -> Self {
        let run = match state.get("bsp/run.json") {
            Some(pvstate::Entry::BspRun(r)) => Some(r.clone()),
            _ => None,
        };
        let mut images: Vec<String> = Vec::new();
        if let Some(r) = &run {
            images.extend(r.modules.iter().chain(r.firmware.iter()).cloned());
            images.extend(
                r.extra
                    .iter()
                    .filter(|(k, _)| k.starts_with("modules_"))
                    .filter_map(|(_, v)| v.as_str().map(str::to_string)),
            );
        }
        let files = state
            .entries()
            .iter()
            .filter_map(|(key, entry)| {
                let name = key.strip_prefix("bsp/")?;
                let id = entry.object_id()?;
                (!images.iter().any(|i| i == name)).then(|| (name.to_string(), object(id)))
            })
            .collect();
        let run = run.unwrap_or_default();
        BspFiles {
            files,
            linux: run.linux,
            initrd: run.initrd,
            fdt: run.fdt,
        }
    }

    /// The `config.txt` for a BSP that brings none: its kernel, initramfs
    /// and device tree.
    fn config_txt(&self, rev: &str) -> String {
        let mut text = format!("# written by pantavisor for revision {rev}\n[all]\n");
        if let Some(k) = &self.linux {
            text.push_str(&format!("kernel={k}\n"));
        }
        if let Some(i) = &self.initrd {
            text.push_str(&format!("initramfs {i} followkernel\n"));
        }
        if let Some(f) = &self.fdt {
            text.push_str(&format!("device_tree={f}\n"));
        }
        text
    }
}

/// `src` copied to `dst` so that a cut leaves the old `dst` or the new one:
/// a temporary file, synced, renamed over it.
fn copy_durable(src: &Path, dst: &Path) -> Result<()> {
    if let Some(dir) = dst.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = dst.with_extension("pvtmp");
    fs::copy(src, &tmp).map_err(|e| Error::io(src, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, dst).map_err(|e| Error::io(dst, e))
}

/// A partition-relative name that stays inside the partition.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl RpiTryboot {
    fn is_device(&self) -> bool {
        self.autoboot.starts_with("/dev")
    }

    /// The block device of boot partition `n`: `autoboot`'s disk, partition `n`
    /// (`/dev/mmcblk0p1` → `/dev/mmcblk0p3`, `/dev/vda1` → `/dev/vda3`).
    fn device(&self, n: u32) -> PathBuf {
        let s = self.autoboot.to_string_lossy();
        PathBuf::from(format!(
            "{}{n}",
            s.trim_end_matches(|c: char| c.is_ascii_digit())
        ))
    }

    /// The file `autoboot.txt` within the root of its file system.
    fn autoboot_name(&self) -> PathBuf {
        if self.is_device() {
            PathBuf::from("autoboot.txt")
        } else {
            PathBuf::from(self.autoboot.file_name().unwrap_or_default())
        }
    }

    /// Run `f` on the root of file system `which`: mounted for the call
    /// (a device), or a directory.
    fn on_fs<T>(&self, which: Fs, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        if !self.is_device() {
            let dir = self
                .autoboot
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let root = match which {
                Fs::Autoboot => dir.to_path_buf(),
                Fs::Boot(n) => dir.join(format!("p{n}")),
            };
            fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
            return f(&root);
        }
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let (dev, mnt) = match which {
            Fs::Autoboot => (self.autoboot.clone(), "autoboot".to_string()),
            Fs::Boot(n) => (self.device(n), format!("boot{n}")),
        };
        let mnt = Path::new("/run/pantavisor/rpi").join(mnt);
        fs::create_dir_all(&mnt).map_err(|e| Error::io(&mnt, e))?;
        mount(
            Some(&dev),
            &mnt,
            Some("vfat"),
            MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("mount {} (vfat)", dev.display()), e))?;
        let out = f(&mnt);
        // umount writes back what is left; a failed one is reported.
        let done = umount2(&mnt, MntFlags::empty())
            .map_err(|e| Error::sys(format!("umount {}", mnt.display()), e));
        let out = out?;
        done?;
        Ok(out)
    }

    /// The boot partition `autoboot.txt` boots normally (A when there is
    /// none yet).
    pub fn committed_partition(&self) -> Result<u32> {
        let name = self.autoboot_name();
        let text = self.on_fs(Fs::Autoboot, |root| {
            let path = root.join(&name);
            match fs::read_to_string(&path) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(&path, e)),
            }
        })?;
        let Some(text) = text else {
            return Ok(self.partitions.0);
        };
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
            } else if let Some(v) = line.strip_prefix("boot_partition=") {
                if section == "[all]" {
                    return v.trim().parse().map_err(|_| {
                        Error::Other(format!(
                            "{}: boot_partition={v} is not a number",
                            self.autoboot.display()
                        ))
                    });
                }
            }
        }
        Ok(self.partitions.0)
    }

    /// The other one of the two boot partitions.
    pub fn other(&self, partition: u32) -> Result<u32> {
        let (a, b) = self.partitions;
        match partition {
            p if p == a => Ok(b),
            p if p == b => Ok(a),
            p => Err(Error::Other(format!(
                "tryboot: partition {p} is neither {a} nor {b}"
            ))),
        }
    }

    /// Make `partition` the committed one (after its try succeeded); the
    /// other becomes the next try slot. `autoboot.txt` is replaced whole.
    pub fn commit_partition(&self, partition: u32) -> Result<()> {
        let other = self.other(partition)?;
        let text = format!(
            "[all]\ntryboot_a_b=1\nboot_partition={partition}\n[tryboot]\nboot_partition={other}\n"
        );
        let name = self.autoboot_name();
        self.on_fs(Fs::Autoboot, |root| {
            pvstate::store::write_atomic(&root.join(&name), text.as_bytes())?;
            Ok(())
        })
    }

    /// Write `bsp` (revision `rev`'s) to the boot partition that is not
    /// committed, each file replaced atomically and synced, `config.txt`
    /// and `cmdline.txt` last; returns that partition. `cmdline` is the
    /// command line for a BSP that brings no `cmdline.txt` (the running
    /// one); either way it gains `pv_rpi_part=N`.
    pub fn stage(&self, rev: &str, bsp: &BspFiles, cmdline: &str) -> Result<u32> {
        let target = self.other(self.committed_partition()?)?;
        self.on_fs(Fs::Boot(target), |root| {
            let old: Vec<String> = fs::read_to_string(root.join(MANIFEST))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect();
            let mut config = None;
            let mut command = None;
            let mut written = Vec::new();
            for (name, src) in &bsp.files {
                if !safe_name(name) {
                    return Err(Error::Other(format!(
                        "revision {rev}: bsp/{name} cannot go on a boot partition"
                    )));
                }
                match name.as_str() {
                    "config.txt" => config = Some(src),
                    "cmdline.txt" => command = Some(src),
                    _ => {
                        copy_durable(src, &root.join(name))?;
                        written.push(name.clone());
                    }
                }
            }
            for gone in old.iter().filter(|o| !written.contains(o) && safe_name(o)) {
                let _ = fs::remove_file(root.join(gone));
            }
            match config {
                Some(src) => copy_durable(src, &root.join("config.txt"))?,
                None => pvstate::store::write_atomic(
                    &root.join("config.txt"),
                    bsp.config_txt(rev).as_bytes(),
                )?,
            }
            let base = match command {
                Some(src) => fs::read_to_string(src).map_err(|e| Error::io(src, e))?,
                None => cmdline.to_string(),
            };
            pvstate::store::write_atomic(
                &root.join("cmdline.txt"),
                with_part_arg(&base, target).as_bytes(),
            )?;
            let manifest = format!("# revision {rev}\n{}\n", written.join("\n"));
            pvstate::store::write_atomic(&root.join(MANIFEST), manifest.as_bytes())?;
            Ok(())
        })?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootloader::PlainEnv;

    fn rpi(dir: &Path) -> RpiTryboot {
        RpiTryboot {
            vars: PlainEnv {
                path: dir.join("pv.env"),
            },
            autoboot: dir.join("autoboot.txt"),
            partitions: (2, 3),
        }
    }

    #[test]
    fn commit_switches_partitions() {
        let tmp = tempfile::tempdir().unwrap();
        let rpi = rpi(tmp.path());
        assert_eq!(rpi.committed_partition().unwrap(), 2);
        rpi.commit_partition(3).unwrap();
        assert_eq!(rpi.committed_partition().unwrap(), 3);
        let text = fs::read_to_string(tmp.path().join("autoboot.txt")).unwrap();
        assert!(text.contains("[tryboot]\nboot_partition=2"), "{text}");
        assert!(rpi.commit_partition(5).is_err());
    }

    #[test]
    fn the_device_of_a_boot_partition_is_a_sibling_of_autoboots() {
        let mut r = rpi(Path::new("/x"));
        r.autoboot = PathBuf::from("/dev/mmcblk0p1");
        assert_eq!(r.device(3), Path::new("/dev/mmcblk0p3"));
        r.autoboot = PathBuf::from("/dev/vda1");
        assert_eq!(r.device(2), Path::new("/dev/vda2"));
    }

    #[test]
    fn the_booted_partition_comes_from_the_command_line_or_the_device_tree() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(booted_partition("quiet pv_rpi_part=3", tmp.path()), Some(3));
        assert_eq!(booted_partition("quiet", tmp.path()), None);
        fs::create_dir_all(tmp.path().join("chosen/bootloader")).unwrap();
        fs::write(tmp.path().join("chosen/bootloader/partition"), [0, 0, 0, 2]).unwrap();
        assert_eq!(booted_partition("quiet", tmp.path()), Some(2));
        assert_eq!(
            with_part_arg("console=ttyS0 pv_rpi_part=2  quiet\n", 3),
            "console=ttyS0 quiet pv_rpi_part=3\n"
        );
    }

    #[test]
    fn a_stage_writes_the_inactive_partition_and_drops_what_the_bsp_no_longer_has() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        for (n, body) in [
            ("k", "kernel"),
            ("i", "initrd"),
            ("o", "overlay"),
            ("c", "cmd"),
        ] {
            fs::write(src.join(n), body).unwrap();
        }
        let rpi = rpi(&tmp.path().join("sd"));
        let bsp = BspFiles {
            files: vec![
                ("vmlinuz".into(), src.join("k")),
                ("initrd.img".into(), src.join("i")),
                ("overlays/x.dtbo".into(), src.join("o")),
            ],
            linux: Some("vmlinuz".into()),
            initrd: Some("initrd.img".into()),
            fdt: None,
        };
        assert_eq!(rpi.stage("locals/a", &bsp, "console=ttyS0").unwrap(), 3);
        let p3 = tmp.path().join("sd/p3");
        assert_eq!(fs::read_to_string(p3.join("vmlinuz")).unwrap(), "kernel");
        assert_eq!(
            fs::read_to_string(p3.join("overlays/x.dtbo")).unwrap(),
            "overlay"
        );
        let config = fs::read_to_string(p3.join("config.txt")).unwrap();
        assert!(
            config.contains("kernel=vmlinuz\ninitramfs initrd.img followkernel\n"),
            "{config}"
        );
        assert_eq!(
            fs::read_to_string(p3.join("cmdline.txt")).unwrap(),
            "console=ttyS0 pv_rpi_part=3\n"
        );
        // Committed, then the next stage goes to partition 2; a BSP with its
        // own cmdline.txt and without the overlay.
        rpi.commit_partition(3).unwrap();
        let bsp2 = BspFiles {
            files: vec![
                ("vmlinuz".into(), src.join("k")),
                ("cmdline.txt".into(), src.join("c")),
            ],
            ..bsp
        };
        assert_eq!(rpi.stage("locals/b", &bsp2, "unused").unwrap(), 2);
        assert_eq!(rpi.stage("locals/b", &bsp2, "unused").unwrap(), 2);
        let p2 = tmp.path().join("sd/p2");
        assert_eq!(
            fs::read_to_string(p2.join("cmdline.txt")).unwrap(),
            "cmd pv_rpi_part=2\n"
        );
        // Over the previous contents of 3: the overlay it no longer has goes.
        rpi.commit_partition(2).unwrap();
        assert_eq!(rpi.stage("locals/c", &bsp2, "x").unwrap(), 3);
        assert!(!p3.join("overlays/x.dtbo").exists());
        assert!(p3.join("vmlinuz").exists());
        // A name leaving the partition is refused.
        let evil = BspFiles {
            files: vec![("../escape".into(), src.join("k"))],
            linux: None,
            initrd: None,
            fdt: None,
        };
        assert!(rpi.stage("locals/d", &evil, "x").is_err());
    }
}
