//! The bootloader handshake: `pv_rev` is the committed revision, `pv_try` one
//! being tried, `pv_trying` the latch saying its try has begun. A try that
//! began and was never committed is never run twice: the next start finds
//! `pv_trying == pv_try` and goes back to `pv_rev`. The variables live in a
//! [`crate::bootloader`] backend (a plain file by default: `boot/pv.env`, or
//! Pantavisor's `boot/uboot.txt`), each write power-safe. Other variables of
//! the backend (a U-Boot `bootcmd`, say) are kept.

use std::path::Path;

use pvstate::layout;

use crate::bootloader::{EnvCopy, EnvStore, GrubEnv, PlainEnv, RpiTryboot, UbootEnv, Vars};
use crate::config::Bootloader;
use crate::error::Result;

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

/// The backend of a `bootloader` setting (relative paths are on `storage`).
pub fn store(spec: &Bootloader, storage: &Path) -> Box<dyn EnvStore> {
    let path = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            storage.join(p)
        }
    };
    match spec {
        Bootloader::Plain => {
            let plain = storage.join(layout::PLAIN_BOOT_ENV);
            let uboot = storage.join(layout::UBOOT_TXT);
            let file = if !plain.exists() && uboot.exists() {
                uboot
            } else {
                plain
            };
            Box::new(PlainEnv { path: file })
        }
        Bootloader::Uboot { copies, size } => Box::new(UbootEnv {
            copies: copies
                .iter()
                .map(|(p, offset)| EnvCopy {
                    path: path(p),
                    offset: *offset,
                })
                .collect(),
            size: *size,
        }),
        Bootloader::Grub(p) => Box::new(GrubEnv { path: path(p) }),
        Bootloader::RpiTryboot {
            autoboot,
            partitions,
        } => Box::new(RpiTryboot {
            vars: PlainEnv {
                path: storage.join(layout::PLAIN_BOOT_ENV),
            },
            autoboot: path(autoboot),
            partitions: *partitions,
        }),
    }
}

impl BootEnv {
    /// The handshake in the backend `spec` names.
    pub fn open(spec: &Bootloader, storage: &Path) -> Result<Self> {
        Self::load_from(store(spec, storage))
    }

    /// The default backend (a plain file on `storage`).
    pub fn load(storage: &Path) -> Result<Self> {
        Self::open(&Bootloader::Plain, storage)
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

    /// `pv_try = rev`, with the latch `pv_trying = rev` when the try has
    /// begun (else empty); saved.
    pub fn set_try(&mut self, rev: &str, latch: bool) -> Result<()> {
        self.try_rev = Some(rev.to_string());
        self.trying = latch.then(|| rev.to_string());
        self.save()
    }

    /// Nothing pending: `pv_try` and `pv_trying` cleared; saved.
    pub fn clear_try(&mut self) -> Result<()> {
        self.try_rev = None;
        self.trying = None;
        self.save()
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

    /// [`store`] of a setting's text (see [`Bootloader`]'s syntax).
    fn store_from_spec(spec: &str, storage: &Path) -> Result<Box<dyn EnvStore>> {
        let spec: Bootloader = spec.parse().map_err(crate::Error::Other)?;
        Ok(store(&spec, storage))
    }
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
        // A pending try without the latch, then nothing pending: both saved.
        env.set_try("locals/next", false).unwrap();
        let again = BootEnv::load(tmp.path()).unwrap();
        assert_eq!(
            (again.try_rev.as_deref(), again.trying.clone()),
            (Some("locals/next"), None)
        );
        env.clear_try().unwrap();
        let again = BootEnv::load(tmp.path()).unwrap();
        assert_eq!((again.try_rev.clone(), again.trying.clone()), (None, None));
        assert_eq!(again.rev, "0");
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
        // The syntax is config::Bootloader's (tested there); a bad one fails here too.
        assert!(store_from_spec("lilo", s).is_err());
    }
}
