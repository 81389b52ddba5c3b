//! Where the boot handshake variables (`pv_rev`, `pv_try`, `pv_trying`) live,
//! behind one trait, so the try-boot latch of [`crate::bootenv`] works the
//! same with every bootloader:
//!
//! - [`PlainEnv`]: `KEY=VALUE` lines in a file on the data partition, read by
//!   our initramfs (QEMU direct kernel boot); replaced atomically.
//! - [`UbootEnv`]: U-Boot's binary environment as `fw_setenv` writes it — a
//!   CRC32 then `name=value\0` pairs — in one copy or two redundant copies
//!   (files, or offsets of one device), the newer valid copy read and the
//!   older one overwritten, so a cut write leaves the other intact.
//! - [`GrubEnv`]: GRUB's 1024-byte environment block (`grub-editenv`'s format).
//! - [`RpiTryboot`]: the variables in a plain file, plus the Raspberry Pi
//!   firmware's `autoboot.txt` A/B switch and the one-shot `tryboot` reboot.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub type Vars = BTreeMap<String, String>;

pub trait EnvStore: Send {
    /// For logs: which backend, where.
    fn describe(&self) -> String;
    /// The variables (empty when there is no environment yet).
    fn read(&self) -> Result<Vars>;
    /// Replace the variables; when it returns, they survive a power cut.
    fn write(&self, vars: &Vars) -> Result<()>;
}

fn invalid(path: &Path, why: impl Into<String>) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, why.into()),
    )
}

fn check_var(k: &str, v: &str) -> Result<()> {
    if k.is_empty() || k.contains(['=', '\n', '\0']) || v.contains(['\n', '\0']) {
        return Err(Error::Other(format!(
            "bootloader variable {k:?}={v:?}: names and values cannot hold '=', newlines or NULs"
        )));
    }
    Ok(())
}

/// `KEY=VALUE` lines (`boot/pv.env`, or Pantavisor's `boot/uboot.txt`).
pub struct PlainEnv {
    pub path: PathBuf,
}

impl EnvStore for PlainEnv {
    fn describe(&self) -> String {
        format!("plain env {}", self.path.display())
    }

    fn read(&self) -> Result<Vars> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vars::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect())
    }

    fn write(&self, vars: &Vars) -> Result<()> {
        let mut text = String::new();
        for (k, v) in vars {
            check_var(k, v)?;
            text.push_str(&format!("{k}={v}\n"));
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        pvstate::store::write_atomic(&self.path, text.as_bytes())?;
        Ok(())
    }
}

/// One copy of a U-Boot environment: a file or block device, at an offset.
#[derive(Debug, Clone)]
pub struct EnvCopy {
    pub path: PathBuf,
    pub offset: u64,
}

/// U-Boot's environment (`fw_printenv`/`fw_setenv` compatible).
pub struct UbootEnv {
    pub copies: Vec<EnvCopy>,
    /// Bytes of each copy, header included (CONFIG_ENV_SIZE).
    pub size: usize,
}

/// A copy as read: its flags byte (redundant only) and variables, if its CRC holds.
struct CopyState {
    flags: u8,
    vars: Vars,
}

impl UbootEnv {
    fn redundant(&self) -> bool {
        self.copies.len() == 2
    }

    fn header(&self) -> usize {
        if self.redundant() {
            5
        } else {
            4
        }
    }

    fn read_copy(&self, c: &EnvCopy) -> Result<Option<CopyState>> {
        let mut f = match fs::File::open(&c.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&c.path, e)),
        };
        let mut buf = vec![0u8; self.size];
        f.seek(SeekFrom::Start(c.offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| Error::io(&c.path, e))
            .or_else(|e| match e {
                Error::Io { ref source, .. }
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    buf.clear();
                    Ok(())
                }
                e => Err(e),
            })?;
        if buf.len() != self.size {
            return Ok(None); // shorter than an environment: none written yet
        }
        let crc = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let data = &buf[self.header()..];
        if crc32fast::hash(data) != crc {
            return Ok(None);
        }
        let mut vars = Vars::new();
        for entry in data.split(|b| *b == 0) {
            if entry.is_empty() {
                break; // the double NUL ends the list
            }
            let text = String::from_utf8_lossy(entry);
            if let Some((k, v)) = text.split_once('=') {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        Ok(Some(CopyState {
            flags: if self.redundant() { buf[4] } else { 0 },
            vars,
        }))
    }

    /// Index of the copy in use, and its state (fw_env's rule for copies
    /// on block devices and files: the incremented flag wins, 0 after 255).
    fn current(&self) -> Result<Option<(usize, CopyState)>> {
        let mut states = Vec::new();
        for c in &self.copies {
            states.push(self.read_copy(c)?);
        }
        let mut it = states.into_iter();
        let first = it.next().flatten();
        let second = it.next().flatten();
        Ok(match (first, second) {
            (Some(a), Some(b)) => {
                let second_newer = match (a.flags, b.flags) {
                    (x, y) if x == y => false,
                    (0xff, 0) => true,
                    (0, 0xff) => false,
                    (x, y) => y > x,
                };
                if second_newer {
                    Some((1, b))
                } else {
                    Some((0, a))
                }
            }
            (Some(a), None) => Some((0, a)),
            (None, Some(b)) => Some((1, b)),
            (None, None) => None,
        })
    }
}

impl EnvStore for UbootEnv {
    fn describe(&self) -> String {
        let copies: Vec<String> = self
            .copies
            .iter()
            .map(|c| format!("{}@{:#x}", c.path.display(), c.offset))
            .collect();
        format!("U-Boot env {} ({} bytes)", copies.join(" + "), self.size)
    }

    fn read(&self) -> Result<Vars> {
        Ok(self.current()?.map(|(_, s)| s.vars).unwrap_or_default())
    }

    fn write(&self, vars: &Vars) -> Result<()> {
        if self.copies.is_empty() || self.copies.len() > 2 {
            return Err(Error::Other(
                "U-Boot env: give one copy, or two redundant ones".into(),
            ));
        }
        let header = self.header();
        let mut data = Vec::new();
        for (k, v) in vars {
            check_var(k, v)?;
            data.extend_from_slice(format!("{k}={v}").as_bytes());
            data.push(0);
        }
        data.push(0);
        if data.len() > self.size - header {
            return Err(Error::Other(format!(
                "U-Boot env: {} bytes of variables do not fit in {} bytes",
                data.len(),
                self.size - header
            )));
        }
        data.resize(self.size - header, 0);
        let (target, flags) = match self.current()? {
            Some((i, s)) if self.redundant() => (1 - i, s.flags.wrapping_add(1)),
            _ => (0, 1),
        };
        let mut buf = crc32fast::hash(&data).to_le_bytes().to_vec();
        if self.redundant() {
            buf.push(flags);
        }
        buf.extend_from_slice(&data);
        let c = &self.copies[target];
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&c.path)
            .map_err(|e| Error::io(&c.path, e))?;
        f.seek(SeekFrom::Start(c.offset))
            .and_then(|_| f.write_all(&buf))
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&c.path, e))?;
        Ok(())
    }
}

/// GRUB's environment block (`grub-editenv`, `load_env`/`save_env`).
pub struct GrubEnv {
    pub path: PathBuf,
}

const GRUB_HEADER: &str = "# GRUB Environment Block\n";
const GRUB_SIZE: usize = 1024;

impl EnvStore for GrubEnv {
    fn describe(&self) -> String {
        format!("GRUB env block {}", self.path.display())
    }

    fn read(&self) -> Result<Vars> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vars::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        let body = text
            .strip_prefix(GRUB_HEADER)
            .ok_or_else(|| invalid(&self.path, "not a GRUB environment block"))?;
        let mut vars = Vars::new();
        for line in body.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                // grub-editenv escapes backslashes and newlines.
                vars.insert(k.to_string(), v.replace("\\\\", "\\"));
            }
        }
        Ok(vars)
    }

    fn write(&self, vars: &Vars) -> Result<()> {
        let mut text = String::from(GRUB_HEADER);
        for (k, v) in vars {
            check_var(k, v)?;
            text.push_str(&format!("{k}={}\n", v.replace('\\', "\\\\")));
        }
        if text.len() > GRUB_SIZE {
            return Err(Error::Other(format!(
                "GRUB env block: {} bytes do not fit in {GRUB_SIZE}",
                text.len()
            )));
        }
        let mut bytes = text.into_bytes();
        bytes.resize(GRUB_SIZE, b'#');
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        pvstate::store::write_atomic(&self.path, &bytes)?;
        Ok(())
    }
}

/// Raspberry Pi A/B tryboot: the variables in a plain file on the data
/// partition; `autoboot.txt` (on the small FAT partition the firmware reads
/// first) names the committed boot partition under `[all]` and the other one
/// under `[tryboot]`, which the firmware boots once after a reboot with the
/// `tryboot` flag — never twice, which is the try latch.
pub struct RpiTryboot {
    pub vars: PlainEnv,
    pub autoboot: PathBuf,
    /// The two boot partitions (A, B), e.g. 2 and 3.
    pub partitions: (u32, u32),
}

impl EnvStore for RpiTryboot {
    fn describe(&self) -> String {
        format!(
            "Raspberry Pi tryboot ({}, {})",
            self.autoboot.display(),
            self.vars.path.display()
        )
    }

    fn read(&self) -> Result<Vars> {
        self.vars.read()
    }

    fn write(&self, vars: &Vars) -> Result<()> {
        self.vars.write(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_and_grub_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let v = vars(&[("pv_rev", "3"), ("pv_try", "locals/x"), ("path", "a\\b")]);
        let plain = PlainEnv {
            path: tmp.path().join("boot/pv.env"),
        };
        assert!(plain.read().unwrap().is_empty());
        plain.write(&v).unwrap();
        assert_eq!(plain.read().unwrap(), v);
        let grub = GrubEnv {
            path: tmp.path().join("grubenv"),
        };
        grub.write(&v).unwrap();
        let bytes = fs::read(tmp.path().join("grubenv")).unwrap();
        assert_eq!(bytes.len(), 1024);
        assert!(bytes.starts_with(b"# GRUB Environment Block\npath=a\\\\b\npv_rev=3\n"));
        assert_eq!(*bytes.last().unwrap(), b'#');
        assert_eq!(grub.read().unwrap(), v);
        let big = vars(&[("x", &"y".repeat(1100))]);
        assert!(grub.write(&big).unwrap_err().to_string().contains("1024"));
        assert!(plain.write(&vars(&[("a", "b\nc")])).is_err());
    }

    /// What `mkenvimage -s 0x4000 -r` / `fw_setenv` make: CRC32 LE of the
    /// data, a flags byte, `k=v\0...\0\0`.
    #[test]
    fn uboot_env_matches_fw_env_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let env = UbootEnv {
            copies: vec![EnvCopy {
                path: tmp.path().join("uboot.env"),
                offset: 0,
            }],
            size: 0x4000,
        };
        env.write(&vars(&[("pv_rev", "0"), ("bootcmd", "run pv")]))
            .unwrap();
        let bytes = fs::read(tmp.path().join("uboot.env")).unwrap();
        assert_eq!(bytes.len(), 0x4000);
        assert_eq!(&bytes[4..28], b"bootcmd=run pv\0pv_rev=0\0");
        assert_eq!(bytes[28], 0);
        let crc = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&bytes[4..]));
        assert_eq!(env.read().unwrap()["bootcmd"], "run pv");
        // A flipped byte: the CRC no longer holds; no environment.
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        fs::write(tmp.path().join("uboot.env"), bad).unwrap();
        assert!(env.read().unwrap().is_empty());
    }

    #[test]
    fn redundant_uboot_env_survives_a_torn_write() {
        let tmp = tempfile::tempdir().unwrap();
        // Both copies in one "device", as fw_env.config's two lines.
        let dev = tmp.path().join("mmcblk0");
        fs::write(&dev, vec![0xffu8; 0x3000]).unwrap();
        let env = UbootEnv {
            copies: vec![
                EnvCopy {
                    path: dev.clone(),
                    offset: 0x1000,
                },
                EnvCopy {
                    path: dev.clone(),
                    offset: 0x2000,
                },
            ],
            size: 0x1000,
        };
        assert!(env.read().unwrap().is_empty());
        env.write(&vars(&[("pv_rev", "0")])).unwrap(); // copy 0, flags 1
        env.write(&vars(&[("pv_rev", "1")])).unwrap(); // copy 1, flags 2
        env.write(&vars(&[("pv_rev", "2")])).unwrap(); // copy 0, flags 3
        let bytes = fs::read(&dev).unwrap();
        assert_eq!((bytes[0x1004], bytes[0x2004]), (3, 2));
        assert_eq!(env.read().unwrap()["pv_rev"], "2");
        // The next write goes to copy 1; cut it half way: copy 0 still reads.
        let mut torn = bytes.clone();
        torn[0x2004] = 4;
        torn[0x2005..0x2010].copy_from_slice(b"pv_rev=3\0\0\0");
        fs::write(&dev, &torn).unwrap();
        assert_eq!(env.read().unwrap()["pv_rev"], "2");
        // Flags wrap: 0 is newer than 255.
        let env2 = UbootEnv {
            copies: env.copies.clone(),
            size: 0x1000,
        };
        for _ in 0..300 {
            env2.write(&vars(&[("n", "x")])).unwrap();
        }
        env2.write(&vars(&[("pv_rev", "9")])).unwrap();
        assert_eq!(env2.read().unwrap()["pv_rev"], "9");
    }
}
