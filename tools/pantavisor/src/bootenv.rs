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
    /// Raspberry Pi tryboot: the boot partitions beside the variables.
    rpi: Option<RpiTryboot>,
    /// `pv_tryboot=REV@N`: revision REV's BSP was written to boot partition
    /// N for its try (Raspberry Pi).
    pub tryboot: Option<(String, u32)>,
    /// The boot partition the running kernel came from, when known.
    pub booted: Option<u32>,
}

/// What [`BootEnv::firmware_check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Nothing to act on.
    Fine,
    /// The firmware did not boot the partition a pending try was staged on:
    /// the try failed before our code ran; why.
    TryFailed { rev: String, why: String },
    /// `autoboot.txt` already boots the try's partition but `pv_rev` was not
    /// moved: a commit cut between its two writes, now finished.
    CommitFinished(String),
}

impl std::fmt::Debug for BootEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("BootEnv")
            .field("store", &self.store.describe())
            .field("rev", &self.rev)
            .field("try_rev", &self.try_rev)
            .field("trying", &self.trying)
            .field("tryboot", &self.tryboot)
            .field("booted", &self.booted)
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
        let mut env = Self::load_from(store(spec, storage))?;
        if let Bootloader::RpiTryboot {
            autoboot,
            partitions,
        } = spec
        {
            env.rpi = Some(RpiTryboot {
                vars: PlainEnv {
                    path: storage.join(layout::PLAIN_BOOT_ENV),
                },
                autoboot: if autoboot.is_absolute() {
                    autoboot.clone()
                } else {
                    storage.join(autoboot)
                },
                partitions: *partitions,
            });
        }
        Ok(env)
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
            tryboot: get("pv_tryboot").and_then(|v| {
                let (rev, n) = v.rsplit_once('@')?;
                Some((rev.to_string(), n.parse().ok()?))
            }),
            store,
            rpi: None,
            booted: None,
        })
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// What to pass to reboot(2) now: on Raspberry Pi `0 tryboot` while a
    /// try is pending whose BSP was staged and whose try has not begun (a
    /// rollback from a begun try reboots plainly, to the committed
    /// partition).
    pub fn reboot_arg(&self) -> Option<String> {
        let staged = matches!((&self.tryboot, &self.try_rev), (Some((r, _)), Some(t)) if r == t);
        (self.rpi.is_some() && staged && self.trying.is_none()).then(|| "0 tryboot".to_string())
    }

    /// Whether a reboot that tries a revision must first [`Self::stage`] its BSP.
    pub fn stages_bsp(&self) -> bool {
        self.rpi.is_some()
    }

    /// Before the reboot that tries `rev`: its BSP onto the boot partition
    /// the firmware's tryboot takes (Raspberry Pi; nothing elsewhere);
    /// remembered with the try when that is saved. `cmdline`: the command
    /// line for a BSP without its own `cmdline.txt`.
    pub fn stage(&mut self, rev: &str, bsp: &crate::rpi::BspFiles, cmdline: &str) -> Result<()> {
        let Some(rpi) = &self.rpi else {
            return Ok(());
        };
        let part = rpi.stage(rev, bsp, cmdline)?;
        crate::info!("revision {rev}: BSP written to boot partition {part} for its tryboot");
        self.tryboot = Some((rev.to_string(), part));
        Ok(())
    }

    /// The commit of `rev`. On Raspberry Pi, when `rev` runs from the boot
    /// partition its BSP was staged on, `autoboot.txt` is switched to that
    /// partition first — the commit point the firmware sees; then `pv_rev`
    /// (saved by the [`Self::clear_try`] that follows).
    pub fn commit(&mut self, rev: &str) -> Result<()> {
        if let (Some(rpi), Some((r, part))) = (&self.rpi, &self.tryboot) {
            if r == rev && self.booted == Some(*part) {
                rpi.commit_partition(*part)?;
                crate::info!("boot partition {part} committed (autoboot.txt)");
            }
        }
        self.rev = rev.to_string();
        Ok(())
    }

    /// At start, on Raspberry Pi: what the firmware did with a staged try,
    /// given the partition the running kernel came from.
    pub fn firmware_check(&mut self, booted: Option<u32>) -> Result<Firmware> {
        self.booted = booted;
        let (Some(rpi), Some((rev, part))) = (&self.rpi, self.tryboot.clone()) else {
            return Ok(Firmware::Fine);
        };
        if self.try_rev.as_deref() != Some(rev.as_str()) {
            // A leftover of a try that ended.
            self.tryboot = None;
            self.save()?;
            return Ok(Firmware::Fine);
        }
        let Some(booted) = booted else {
            crate::warn!(
                "tryboot: the boot partition of this kernel is unknown (no {}= on its command line, no device tree entry); the try of {rev} goes on",
                crate::rpi::PART_ARG
            );
            return Ok(Firmware::Fine);
        };
        if booted != part {
            return Ok(Firmware::TryFailed {
                why: format!(
                    "its BSP on boot partition {part} did not boot; the firmware booted partition {booted}"
                ),
                rev,
            });
        }
        if self.trying.as_deref() == Some(rev.as_str()) && rpi.committed_partition()? == part {
            self.rev = rev.clone();
            self.clear_try()?;
            return Ok(Firmware::CommitFinished(rev));
        }
        Ok(Firmware::Fine)
    }

    /// `pv_try = rev`, with the latch `pv_trying = rev` when the try has
    /// begun (else empty); saved.
    pub fn set_try(&mut self, rev: &str, latch: bool) -> Result<()> {
        self.try_rev = Some(rev.to_string());
        self.trying = latch.then(|| rev.to_string());
        self.save()
    }

    /// Nothing pending: `pv_try`, `pv_trying` (and `pv_tryboot`) cleared; saved.
    pub fn clear_try(&mut self) -> Result<()> {
        self.try_rev = None;
        self.trying = None;
        self.tryboot = None;
        self.save()
    }

    pub fn save(&self) -> Result<()> {
        let mut vars: Vars = self.store.read().unwrap_or_default();
        vars.insert("pv_rev".into(), self.rev.clone());
        vars.insert("pv_try".into(), self.try_rev.clone().unwrap_or_default());
        vars.insert("pv_trying".into(), self.trying.clone().unwrap_or_default());
        if self.rpi.is_some() || vars.contains_key("pv_tryboot") {
            let v = self.tryboot.as_ref().map(|(r, n)| format!("{r}@{n}"));
            vars.insert("pv_tryboot".into(), v.unwrap_or_default());
        }
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
            // Nothing staged: a plain reboot, whatever the backend.
            assert_eq!(again.reboot_arg(), None, "{spec}");
        }
        // The syntax is config::Bootloader's (tested there); a bad one fails here too.
        assert!(store_from_spec("lilo", s).is_err());
    }

    /// A staged BSP for `rev` (one kernel file).
    fn staged(env: &mut BootEnv, dir: &Path, rev: &str) {
        fs::write(dir.join("kernel"), rev).unwrap();
        let bsp = crate::rpi::BspFiles {
            files: vec![("vmlinuz".into(), dir.join("kernel"))],
            linux: Some("vmlinuz".into()),
            initrd: None,
            fdt: None,
        };
        env.stage(rev, &bsp, "console=ttyS0").unwrap();
        env.set_try(rev, false).unwrap();
    }

    #[test]
    fn tryboot_stages_commits_and_tells_a_try_the_firmware_did_not_boot() {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path();
        let spec: Bootloader = "rpi-tryboot:sd/autoboot.txt:2,3".parse().unwrap();
        let open = |booted| {
            let mut env = BootEnv::open(&spec, s).unwrap();
            let seen = env.firmware_check(booted).unwrap();
            (env, seen)
        };
        // Staged on 3 (2 is committed), rebooted with tryboot.
        let (mut env, seen) = open(Some(2));
        assert_eq!(seen, Firmware::Fine);
        staged(&mut env, s, "locals/a");
        assert_eq!(env.reboot_arg().as_deref(), Some("0 tryboot"));
        assert_eq!(
            fs::read_to_string(s.join("sd/p3/vmlinuz")).unwrap(),
            "locals/a"
        );
        // The firmware booted 3: the try goes on; once begun, a reboot is
        // plain; its commit switches autoboot.txt.
        let (mut env, seen) = open(Some(3));
        assert_eq!(seen, Firmware::Fine);
        env.set_try("locals/a", true).unwrap();
        assert_eq!(env.reboot_arg(), None);
        env.commit("locals/a").unwrap();
        env.clear_try().unwrap();
        let rpi = env.rpi.as_ref().unwrap();
        assert_eq!(rpi.committed_partition().unwrap(), 3);
        // The next try goes to 2; the firmware came back on 3: failed.
        staged(&mut env, s, "locals/b");
        assert_eq!(env.tryboot, Some(("locals/b".to_string(), 2)));
        let (env, seen) = open(Some(3));
        assert!(
            matches!(&seen, Firmware::TryFailed { rev, why } if rev == "locals/b" && why.contains("partition 2")),
            "{seen:?}"
        );
        assert_eq!(env.rev, "locals/a");
        // A commit cut after autoboot.txt, before pv_rev: finished at start.
        let (mut env, _) = open(Some(3));
        staged(&mut env, s, "locals/c");
        let (mut env, _) = open(Some(2));
        env.set_try("locals/c", true).unwrap();
        env.rpi.as_ref().unwrap().commit_partition(2).unwrap();
        let (env, seen) = open(Some(2));
        assert_eq!(seen, Firmware::CommitFinished("locals/c".into()));
        assert_eq!((env.rev.as_str(), env.try_rev.clone()), ("locals/c", None));
        // Without a known boot partition nothing is decided.
        let (mut env, _) = open(Some(2));
        staged(&mut env, s, "locals/d");
        assert_eq!(open(None).1, Firmware::Fine);
    }
}
