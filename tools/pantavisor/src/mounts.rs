//! Mounts the daemon makes: squashfs images through loop devices, overlays,
//! tmpfs and binds. Loop devices are set to clear themselves when unmounted.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

use crate::sys::{
    ioctl_int, loop_set_status, LoopInfo64, LOOP_CLR_FD, LOOP_CTL_GET_FREE, LOOP_SET_FD,
    LO_FLAGS_AUTOCLEAR, LO_FLAGS_READ_ONLY,
};

/// Attach `file` read-only to a free loop device; returns its path and an
/// open handle. The device clears itself when its last user goes, so the
/// handle must be held until the device is mounted.
pub fn loop_attach(file: &Path) -> Result<(PathBuf, File)> {
    let backing = File::open(file).map_err(|e| Error::io(file, e))?;
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| Error::io("/dev/loop-control", e))?;
    // Another process may take the free device between the two calls: retry.
    for _ in 0..16 {
        let n = ioctl_int(ctl.as_fd(), LOOP_CTL_GET_FREE, 0);
        if n < 0 {
            return Err(Error::io(
                "/dev/loop-control",
                std::io::Error::last_os_error(),
            ));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let loopf = match OpenOptions::new().read(true).open(&dev) {
            Ok(f) => f,
            Err(e) => return Err(Error::io(&dev, e)),
        };
        if ioctl_int(loopf.as_fd(), LOOP_SET_FD, backing.as_raw_fd() as _) < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            return Err(Error::io(&dev, err));
        }
        let mut info = LoopInfo64 {
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            ..Default::default()
        };
        let name = file.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        if loop_set_status(loopf.as_fd(), &info) < 0 {
            let err = std::io::Error::last_os_error();
            ioctl_int(loopf.as_fd(), LOOP_CLR_FD, 0);
            return Err(Error::io(&dev, err));
        }
        return Ok((dev, loopf));
    }
    Err(Error::Other(format!(
        "{}: no free loop device",
        file.display()
    )))
}

fn ensure_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// Mount a squashfs image read-only at `target`.
pub fn mount_squashfs(image: &Path, target: &Path) -> Result<()> {
    ensure_dir(target)?;
    let (dev, handle) = loop_attach(image)?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    let mounted = mount(Some(&dev), target, Some("squashfs"), flags, None::<&str>).map_err(|e| {
        Error::sys(
            format!("mount {} on {}", image.display(), target.display()),
            e,
        )
    });
    // Closing the last handle clears the device unless the mount holds it.
    drop(handle);
    mounted
}

/// Mount the squashfs `data` read-only at `target` through a dm-verity
/// device `name` that checks it against the tree in `hash` and the
/// manifest's root hash: a block that does not match fails its read. There
/// is no plain fallback: without device-mapper the mount fails. The device
/// goes away when unmounted. `nodes` holds device nodes devtmpfs did not make.
pub fn mount_verity(
    name: &str,
    data: &Path,
    hash: &Path,
    manifest: &pvstate::verity::Manifest,
    target: &Path,
    nodes: &Path,
) -> Result<()> {
    ensure_dir(target)?;
    let sb = crate::dm::superblock(hash)?;
    let size = fs::metadata(data).map_err(|e| Error::io(data, e))?.len();
    if sb.data_bytes() > size {
        return Err(Error::Other(format!(
            "{}: the hash tree covers {} bytes, the image has {size}",
            data.display(),
            sb.data_bytes()
        )));
    }
    let (data_dev, data_handle) = loop_attach(data)?;
    let (hash_dev, hash_handle) = loop_attach(hash)?;
    let dev = crate::dm::open_verity(name, &data_dev, &hash_dev, &sb, manifest, nodes)?;
    // The verity device holds both loop devices now.
    drop((data_handle, hash_handle));
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    let mounted = mount(
        Some(&dev.node),
        target,
        Some("squashfs"),
        flags,
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            format!(
                "mount {} (dm-verity {name}) on {}",
                data.display(),
                target.display()
            ),
            e,
        )
    });
    let removal = dev.remove_when_unused();
    mounted?;
    removal
}

/// Mount an overlay of `lower` (topmost first) with `upper`/`work` at `target`.
pub fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    for d in [upper, work, target] {
        ensure_dir(d)?;
    }
    let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| Error::sys(format!("overlay on {}", target.display()), e))
}

pub fn mount_tmpfs(target: &Path, options: &str) -> Result<()> {
    ensure_dir(target)?;
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(options),
    )
    .map_err(|e| Error::sys(format!("tmpfs on {}", target.display()), e))
}

/// Bind `source` (a file, socket or directory) onto the existing `target`.
pub fn bind(source: &Path, target: &Path) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Error::sys(
            format!("bind {} on {}", source.display(), target.display()),
            e,
        )
    })
}

/// Unmount `target` (lazily, so a busy mount cannot block shutdown).
pub fn umount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(Error::sys(format!("umount {}", target.display()), e)),
    }
}

/// Every mount point at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Unmount everything at or below `dir`.
pub fn umount_all_below(dir: &Path) {
    for m in mounts_below(dir) {
        let _ = umount(&m);
    }
}
