//! The bootloader handshake: `pv_rev` is the committed revision, `pv_try` one
//! being tried, `pv_trying` the latch saying its try has begun. A try that
//! began and was never committed is never run twice: the next start finds
//! `pv_trying == pv_try` and goes back to `pv_rev`. The variables live in a
//! [`crate::bootloader`] backend (a plain file by default: `boot/pv.env`, or
//! Pantavisor's `boot/uboot.txt`), each write power-safe. Other variables of
//! the backend (a U-Boot `bootcmd`, say) are kept.

use std::path::Path;

use crate::bootloader::{EnvCopy, EnvStore, GrubEnv, PlainEnv, RpiTryboot, UbootEnv, Vars};
use crate::error::{Error, Result};

pub struct BootEnv {
    store: Box<dyn EnvStore>,
    pub rev: String,
    pub try_rev: Option<String>,
    pub trying: Option<String>,
}

impl std::fmt::Debug for BootEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("BootEnv")
            .field("store", &self.store.describe())
            .field("rev", &self.rev)
            .field("try_rev", &self.try_rev)
            .field("trying", &self.trying)
            .finish()
    }
}

impl PartialEq for BootEnv {
    fn eq(&self, o: &Self) -> bool {
        (&self.rev, &self.try_rev, &self.trying) == (&o.rev, &o.try_rev, &o.trying)
    }
}

/// The backend a `bootloader` setting names (relative paths are on `storage`):
/// - `plain` (default): `boot/pv.env` (or `boot/uboot.txt` when only it exists);
/// - `uboot:PATH[@OFFSET][,PATH[@OFFSET]]:SIZE`: U-Boot env, one or two copies;
/// - `grub:PATH`: a GRUB environment block;
/// - `rpi-tryboot:AUTOBOOT_TXT[:A,B]`: Raspberry Pi A/B tryboot (partitions 2,3 by default).
pub fn store_from_spec(spec: &str, storage: &Path) -> Result<Box<dyn EnvStore>> {
    let bad = |why: &str| Error::Other(format!("bootloader={spec}: {why}"));
    let path = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            storage.join(p)
        }
    };
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    Ok(match kind {
        "plain" => {
            let plain = storage.join("boot/pv.env");
            let uboot = storage.join("boot/uboot.txt");
            let file = if !plain.exists() && uboot.exists() {
                uboot
            } else {
                plain
            };
            Box::new(PlainEnv { path: file })
        }
        "uboot" => {
            let (copies, size) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected uboot:PATH[@OFFSET][,PATH[@OFFSET]]:SIZE"))?;
            let number = |s: &str| -> Result<u64> {
                let s = s.trim();
                match s.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16),
                    None => s.parse(),
                }
                .map_err(|_| bad(&format!("{s} is not a number")))
            };
            let size = number(size)? as usize;
            let copies = copies
                .split(',')
                .map(|c| {
                    let (p, off) = c.split_once('@').unwrap_or((c, "0"));
                    Ok(EnvCopy {
                        path: path(p),
                        offset: number(off)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if copies.len() > 2 || size < 16 {
                return Err(bad("one or two copies, of at least 16 bytes"));
            }
            Box::new(UbootEnv { copies, size })
        }
        "grub" if !rest.is_empty() => Box::new(GrubEnv { path: path(rest) }),
        "rpi-tryboot" if !rest.is_empty() => {
            let (autoboot, parts) = match rest.rsplit_once(':') {
                Some((a, p)) if p.contains(',') => (a, Some(p)),
                _ => (rest, None),
            };
            let partitions = match parts {
                Some(p) => {
                    let (a, b) = p.split_once(',').unwrap_or(("", ""));
                    (
                        a.parse().map_err(|_| bad("partitions are A,B numbers"))?,
                        b.parse().map_err(|_| bad("partitions are A,B numbers"))?,
                    )
                }
                None => (2, 3),
            };
            Box::new(RpiTryboot {
                vars: PlainEnv {
                    path: storage.join("boot/pv.env"),
                },
                autoboot: path(autoboot),
                partitions,
            })
        }
        _ => return Err(bad(
            "use plain, uboot:PATH[@OFF][,PATH[@OFF]]:SIZE, grub:PATH or rpi-tryboot:AUTOBOOT_TXT",
        )),
    })
}

impl BootEnv {
    /// The default backend (a plain file on `storage`).
    pub fn load(storage: &Path) -> Result<Self> {
        Self::load_from(store_from_spec("plain", storage)?)
    }

    pub fn load_from(store: Box<dyn EnvStore>) -> Result<Self> {
        let vars = store.read()?;
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(BootEnv {
            rev: get("pv_rev").unwrap_or_else(|| "0".into()),
            try_rev: get("pv_try"),
            trying: get("pv_trying"),
            store,
        })
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// What to pass to reboot(2) now (Raspberry Pi: `0 tryboot` while a try is pending).
    pub fn reboot_arg(&self) -> Option<String> {
        self.store.reboot_arg(self.try_rev.is_some())
    }

    pub fn save(&self) -> Result<()> {
        let mut vars: Vars = self.store.read().unwrap_or_default();
        vars.insert("pv_rev".into(), self.rev.clone());
        vars.insert("pv_try".into(), self.try_rev.clone().unwrap_or_default());
        vars.insert("pv_trying".into(), self.trying.clone().unwrap_or_default());
        self.store.write(&vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn round_trip_and_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let env = BootEnv::load(tmp.path()).unwrap();
        assert_eq!(
            (env.rev.as_str(), env.try_rev.clone(), env.trying.clone()),
            ("0", None, None)
        );
        let mut env = env;
        env.try_rev = Some("locals/new".into());
        env.trying = Some("locals/new".into());
        env.save().unwrap();
        let again = BootEnv::load(tmp.path()).unwrap();
        assert_eq!(again, env);
        // Pantavisor's uboot.txt is read when there is no pv.env.
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("boot")).unwrap();
        fs::write(tmp.path().join("boot/uboot.txt"), "pv_rev=3\n").unwrap();
        assert_eq!(BootEnv::load(tmp.path()).unwrap().rev, "3");
    }

    #[test]
    fn every_backend_keeps_the_latch_and_other_variables() {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path();
        fs::write(s.join("disk"), vec![0u8; 0x3000]).unwrap();
        for spec in [
            "plain",
            "uboot:uboot.env:0x2000",
            "uboot:disk@0x1000,disk@0x2000:0x1000",
            "grub:grubenv",
            "rpi-tryboot:autoboot.txt:2,3",
        ] {
            let store = store_from_spec(spec, s).unwrap();
            let mut vars = Vars::new();
            vars.insert("bootcmd".into(), "run pv".into());
            store.write(&vars).unwrap();
            let mut env = BootEnv::load_from(store_from_spec(spec, s).unwrap()).unwrap();
            env.rev = "5".into();
            env.try_rev = Some("locals/t".into());
            env.save().unwrap();
            let store = store_from_spec(spec, s).unwrap();
            assert_eq!(store.read().unwrap()["bootcmd"], "run pv", "{spec}");
            let again = BootEnv::load_from(store).unwrap();
            assert_eq!(again, env, "{spec}");
            assert_eq!(
                again.reboot_arg().is_some(),
                spec.starts_with("rpi"),
                "{spec}"
            );
        }
        for bad in [
            "lilo",
            "uboot:x",
            "uboot:a,b,c:0x1000",
            "grub",
            "rpi-tryboot:a:x,y",
        ] {
            assert!(store_from_spec(bad, s).is_err(), "{bad}");
        }
    }
}
