//! Device-mapper through its ioctls (no dmsetup or veritysetup): dm-verity
//! devices over loop devices, for `dm:` volumes. A device is created,
//! loaded with one `verity` target, resumed, and — once mounted — marked for
//! deferred removal, so it goes away by itself when unmounted.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use pvstate::verity::{Manifest, Superblock};

use crate::error::{Error, Result};
use crate::sys::{dm_ioctl, DM_IOCTL_SIZE};

const CONTROL: &str = "/dev/mapper/control";
const DM_DEV_CREATE: u8 = 3;
const DM_DEV_REMOVE: u8 = 4;
const DM_DEV_SUSPEND: u8 = 6;
const DM_TABLE_LOAD: u8 = 9;
const DM_READONLY_FLAG: u32 = 1 << 0;
const DM_DEFERRED_REMOVE: u32 = 1 << 17;
const NAME_LEN: usize = 128;
/// `struct dm_target_spec`: start, length, status, next, type[16].
const TARGET_SPEC_SIZE: usize = 40;

/// A request: the `struct dm_ioctl` header for device `name` and `extra`
/// bytes after it, in an 8-byte aligned buffer.
struct Request {
    buf: Vec<u64>,
}

impl Request {
    fn new(name: &str, flags: u32, target_count: u32, extra: &[u8]) -> Request {
        let size = (DM_IOCTL_SIZE + extra.len()).div_ceil(8) * 8;
        let mut b = vec![0u8; size];
        // version 4.0.0: the interface every kernel since 2.6 speaks.
        b[0..4].copy_from_slice(&4u32.to_ne_bytes());
        b[12..16].copy_from_slice(&(size as u32).to_ne_bytes());
        b[16..20].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_ne_bytes());
        b[20..24].copy_from_slice(&target_count.to_ne_bytes());
        b[28..32].copy_from_slice(&flags.to_ne_bytes());
        let n = name.len().min(NAME_LEN - 1);
        b[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
        b[DM_IOCTL_SIZE..DM_IOCTL_SIZE + extra.len()].copy_from_slice(extra);
        let buf = b
            .chunks(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Request { buf }
    }

    /// The `dev` field of the answer (the kernel's huge_encode_dev).
    fn dev(&self) -> u64 {
        self.buf[5]
    }
}

struct Control(File);

impl Control {
    fn open() -> Result<Control> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(CONTROL)
            .map(Control)
            .map_err(|e| {
                Error::io(
                    CONTROL,
                    std::io::Error::new(
                        e.kind(),
                        format!("{e} (a kernel with device-mapper: CONFIG_BLK_DEV_DM, CONFIG_DM_VERITY)"),
                    ),
                )
            })
    }

    fn call(&self, what: &str, cmd: u8, req: &mut Request) -> Result<()> {
        if dm_ioctl(self.0.as_fd(), cmd, &mut req.buf) < 0 {
            return Err(Error::Other(format!(
                "device-mapper {what}: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    fn remove(&self, name: &str, flags: u32) -> Result<()> {
        self.call(
            &format!("remove {name}"),
            DM_DEV_REMOVE,
            &mut Request::new(name, flags, 0, &[]),
        )
    }
}

/// The name Pantavisor gives a container volume's verity device.
pub fn verity_name(container: &str, volume: &str) -> String {
    let stem = volume.rsplit_once('.').map_or(volume, |(s, _)| s);
    format!("pv--dmverity--{container}-{stem}")
}

/// Read the superblock of a hash device file.
pub fn superblock(hash: &Path) -> Result<Superblock> {
    use std::io::Read;
    let mut head = vec![0u8; 512];
    File::open(hash)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| Error::io(hash, e))?;
    Superblock::parse(&head).map_err(|e| Error::Other(format!("{}: {e}", hash.display())))
}

/// An active verity device.
pub struct Device {
    pub name: String,
    /// Its block device node.
    pub node: PathBuf,
}

impl Device {
    /// Mark the device for removal when its last user (the mount) goes.
    pub fn remove_when_unused(&self) -> Result<()> {
        Control::open()?.remove(&self.name, DM_DEFERRED_REMOVE)
    }
}

/// Set up `name`, a read-only dm-verity device checking the data device
/// `data` (a block device path) against the tree on `hash` (a block device)
/// with the manifest's root hash and salt; geometry from `sb`. `nodes` is a
/// directory for the device node when devtmpfs has not made one.
pub fn open_verity(
    name: &str,
    data: &Path,
    hash: &Path,
    sb: &Superblock,
    manifest: &Manifest,
    nodes: &Path,
) -> Result<Device> {
    if sb.salt != manifest.salt {
        return Err(Error::Other(format!(
            "{name}: the hash device's salt is not the manifest's"
        )));
    }
    let ctl = Control::open()?;
    // A device of that name left over (a daemon restarted while it was
    // mounted goes on using it; one no longer in use is replaced).
    let _ = ctl.remove(name, 0);
    ctl.call(
        &format!("create {name}"),
        DM_DEV_CREATE,
        &mut Request::new(name, 0, 0, &[]),
    )?;
    let loaded = (|| {
        let params = sb.table(
            &data.to_string_lossy(),
            &hash.to_string_lossy(),
            &manifest.root_hash,
        );
        let mut spec = vec![0u8; TARGET_SPEC_SIZE];
        let sectors = sb.data_bytes() / 512;
        spec[8..16].copy_from_slice(&sectors.to_ne_bytes());
        spec[24..30].copy_from_slice(b"verity");
        spec.extend_from_slice(params.as_bytes());
        spec.push(0);
        spec.resize(spec.len().div_ceil(8) * 8, 0);
        ctl.call(
            &format!("load the verity table of {name}"),
            DM_TABLE_LOAD,
            &mut Request::new(name, DM_READONLY_FLAG, 1, &spec),
        )?;
        let mut resume = Request::new(name, 0, 0, &[]);
        ctl.call(&format!("resume {name}"), DM_DEV_SUSPEND, &mut resume)?;
        Ok(resume.dev())
    })();
    let dev = match loaded {
        Ok(d) => d,
        Err(e) => {
            let _ = ctl.remove(name, 0);
            return Err(e);
        }
    };
    let (major, minor) = (
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t),
    );
    let devtmpfs = PathBuf::from(format!("/dev/dm-{minor}"));
    let is_it = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.file_type().is_block_device() && m.rdev() == libc::makedev(major, minor)
        })
    };
    let node = if is_it(&devtmpfs) {
        devtmpfs
    } else {
        std::fs::create_dir_all(nodes).map_err(|e| Error::io(nodes, e))?;
        let node = nodes.join(name);
        let _ = std::fs::remove_file(&node);
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            libc::makedev(major, minor),
        )
        .map_err(|e| Error::sys(format!("mknod {}", node.display()), e))?;
        node
    };
    Ok(Device {
        name: name.to_string(),
        node,
    })
}
