//! The daemon's configuration: every key it reads, in one place.
//!
//! A configuration is `KEY=VALUE` lines (`#` starts a comment), the format
//! of Pantavisor's `pantavisor.config`. Appengine mode reads the file given
//! with `--config`; embedded mode reads `pv_config=` on storage
//! (`config/pantavisor.config` by default). Factory packages are selected by
//! `PV_FACTORY_PKGS` in the storage's own configuration ([`factory_packages`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::settings::{Level, Settings};

/// Where the boot handshake lives (relative paths are on storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootloader {
    /// `boot/pv.env` (or Pantavisor's `boot/uboot.txt` when only it exists).
    Plain,
    /// A U-Boot environment: one or two copies (path and offset), each `size` bytes.
    Uboot {
        copies: Vec<(PathBuf, u64)>,
        size: usize,
    },
    /// A GRUB environment block.
    Grub(PathBuf),
    /// Raspberry Pi A/B tryboot: `autoboot.txt` and the two boot partitions.
    RpiTryboot {
        autoboot: PathBuf,
        partitions: (u32, u32),
    },
}

impl std::str::FromStr for Bootloader {
    type Err = String;

    /// `plain`, `uboot:PATH[@OFFSET][,PATH[@OFFSET]]:SIZE`, `grub:PATH`,
    /// `rpi-tryboot:AUTOBOOT_TXT[:A,B]` (partitions 2,3 by default).
    fn from_str(spec: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bootloader={spec}: {why}");
        let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
        Ok(match kind {
            "plain" if rest.is_empty() => Bootloader::Plain,
            "uboot" => {
                let (copies, size) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| bad("expected uboot:PATH[@OFFSET][,PATH[@OFFSET]]:SIZE"))?;
                let number = |s: &str| -> Result<u64, String> {
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
                        Ok((PathBuf::from(p), number(off)?))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                if copies.len() > 2 || size < 16 {
                    return Err(bad("one or two copies, of at least 16 bytes"));
                }
                Bootloader::Uboot { copies, size }
            }
            "grub" if !rest.is_empty() => Bootloader::Grub(PathBuf::from(rest)),
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
                Bootloader::RpiTryboot {
                    autoboot: PathBuf::from(autoboot),
                    partitions,
                }
            }
            _ => return Err(bad(
                "use plain, uboot:PATH[@OFF][,PATH[@OFF]]:SIZE, grub:PATH or rpi-tryboot:AUTOBOOT_TXT",
            )),
        })
    }
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub storage: PathBuf,
    pub ctrl_socket: PathBuf,
    pub run_dir: PathBuf,
    /// `cgroup.parent`: the cgroup under which containers get theirs.
    pub cgroup_parent: String,
    /// `log.maxsize`: rotate a container's log file past this size.
    pub log_max_bytes: u64,
    /// `stop.timeout`: time between SIGTERM and SIGKILL when stopping a container.
    pub stop_timeout: Duration,
    /// `update.goals_timeout`: how long a new revision has to reach every status goal.
    pub goals_timeout: Duration,
    /// `update.commit_delay`: how long a new revision must then run without a container exiting.
    pub commit_delay: Duration,
    /// `xconnect.wait_timeout`: how long a container waits for the
    /// providers of its required services before it starts anyway.
    pub xconnect_wait: Duration,
    /// `update.verify_objects`: re-hash every object of a revision before running it.
    pub verify_objects: bool,
    /// `boot.verify_objects` (Pantavisor's `PV_SECUREBOOT_CHECKSUM`, on by
    /// default as there): re-hash the objects of the revision about to boot.
    pub boot_verify_objects: bool,
    /// `update.signatures`: how strictly pvs@2 signatures are checked.
    pub signatures: pvstate::sig::Mode,
    /// `secureboot.truststore` (Pantavisor's `PV_SECUREBOOT_TRUSTSTORE`):
    /// the built-in trust store, `*.pem`/`*.crt` keys and CA certificates.
    /// Never on the writable storage.
    pub truststore: PathBuf,
    /// `secureboot.oem_truststore` (`PV_SECUREBOOT_OEM_TRUSTSTORE`): OEM CA
    /// certificates, which must chain to the built-in store.
    pub oem_truststore: PathBuf,
    /// `remote.listen`: serve the control API on this TCP address too (off by default)...
    pub remote_listen: Option<std::net::SocketAddr>,
    /// ...`remote.token`: to callers presenting this bearer token (required with it).
    pub remote_token: Option<String>,
    /// `bootloader`: where the boot handshake lives.
    pub bootloader: Bootloader,
    /// How the daemon was started: it decides what a reboot is.
    pub mode: Mode,
    /// `watchdog.mode` (`PV_WDT_MODE`), `watchdog.timeout` (`PV_WDT_TIMEOUT`,
    /// seconds) and `watchdog.device`: see [`crate::watchdog`].
    pub watchdog: crate::watchdog::Mode,
    pub watchdog_timeout: u32,
    pub watchdog_device: PathBuf,
    /// `debug.hang_command`: `POST /commands {"op": "DEBUG_HANG"}` hangs the
    /// event loop (to test the watchdog); refused otherwise.
    pub debug_hang: bool,
    /// `update.min_version`: refuse revisions older than the device's floor
    /// (`config/min-version`), which rises to each committed version.
    pub min_version: bool,
    /// `storage.gc.keep_revisions`: good revisions kept besides the pinned ones.
    pub gc_keep: usize,
    /// `storage.gc.reserved` (`PV_STORAGE_GC_RESERVED`): percent of storage an
    /// update must leave free.
    pub gc_reserved_pct: u64,
    /// `storage.gc.threshold` (`PV_STORAGE_GC_THRESHOLD`): percent used that
    /// starts a collection by itself (0: off)...
    pub gc_threshold_pct: u64,
    /// ...at most once per `storage.gc.threshold.defertime`.
    pub gc_defer: Duration,
    /// `log.dir_maxsize` (`PV_LOG_DIR_MAXSIZE`): all logs together.
    pub log_dir_max_bytes: u64,
    /// Every key's value and origin, and what was not used (`GET /config`).
    pub settings: Settings,
}

/// Embedded: PID 1, reboot transitions, REBOOT_DEVICE and a crashed
/// `system` container really reboot. Appengine: a root process; the new
/// revision is brought up in place instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Appengine,
    Embedded,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Appengine => "appengine",
            Mode::Embedded => "embedded",
        }
    }
}

/// Every key the daemon reads (our names), for `--help` and the docs;
/// [`crate::settings::KEYS`] has their aliases, defaults and levels.
pub fn keys() -> impl Iterator<Item = &'static str> {
    crate::settings::KEYS.iter().map(|k| k.name)
}

/// The value of `key` in configuration `text` (the first line naming it).
pub fn value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| {
            l.split_once('=')
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        })
}

/// The paths a daemon is started with (flags, or embedded mode's fixed ones).
pub struct Paths {
    pub storage: PathBuf,
    pub ctrl_socket: PathBuf,
    pub run_dir: PathBuf,
    /// `--cgroup-parent`, which overrides the configuration.
    pub cgroup_parent: Option<String>,
}

impl Options {
    /// Options from one configuration `text` (appengine: the pv.conf level;
    /// embedded: the storage config level); a key with a bad value is an
    /// error naming it. [`Options::load`] reads every level.
    pub fn parse(text: &str, paths: Paths, mode: Mode) -> Result<Options, String> {
        let mut settings = Settings::default();
        let level = match mode {
            Mode::Appengine => Level::PvConf,
            Mode::Embedded => Level::Storage,
        };
        settings.apply_text(level, text);
        Self::from_settings(settings, paths, mode)
    }

    /// Options from every configuration level of this process: `pv_conf`
    /// (appengine: the `--config` file; embedded: the initramfs's
    /// `/etc/pantavisor.config`), `storage_conf` (embedded: the storage's
    /// configuration), the kernel command line (embedded), the `PV_*` /
    /// `PH_*` environment and the user metadata on storage. The OEM level
    /// comes later, from the revision ([`Options::with_oem`]).
    pub fn load(
        paths: Paths,
        mode: Mode,
        pv_conf: Option<&str>,
        storage_conf: Option<&str>,
    ) -> Result<Options, String> {
        let mut settings = Settings::default();
        if let Some(t) = pv_conf {
            settings.apply_text(Level::PvConf, t);
        }
        if let Some(t) = storage_conf {
            settings.apply_text(Level::Storage, t);
        }
        if mode == Mode::Embedded {
            settings.apply_cmdline(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
        }
        settings.apply_env(std::env::vars());
        settings.apply_user_meta(user_meta(&paths.storage).into_iter());
        Self::from_settings(settings, paths, mode)
    }

    /// These options with the OEM level `text` applied (below cmdline, env
    /// and user meta, above the files).
    pub fn with_oem(&self, text: &str) -> Result<Options, String> {
        let mut settings = self.settings.clone();
        settings.apply_text(Level::Oem, text);
        Self::from_settings(settings, self.paths(), self.mode)
    }

    /// The paths these options were made with.
    pub fn paths(&self) -> Paths {
        Paths {
            storage: self.storage.clone(),
            ctrl_socket: self.ctrl_socket.clone(),
            run_dir: self.run_dir.clone(),
            cgroup_parent: None,
        }
    }

    /// Options from `settings`; a key with a bad value is an error naming
    /// it and where it was set.
    pub fn from_settings(
        mut settings: Settings,
        paths: Paths,
        mode: Mode,
    ) -> Result<Options, String> {
        if let Some(c) = &paths.cgroup_parent {
            settings.apply(Level::Flag, "cgroup.parent", c);
        }
        let s = &settings;
        let bad = |key: &str, why: &str| {
            format!("{key}={} ({}): {why}", s.get(key), s.origin(key).as_str())
        };
        let number = |key: &str| -> Result<u64, String> {
            s.get(key).parse().map_err(|_| bad(key, "not a number"))
        };
        let flag = |key: &str| -> Result<bool, String> {
            match s.get(key) {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(bad(key, "not 0 or 1")),
            }
        };
        let truststore = PathBuf::from(s.get("secureboot.truststore"));
        let oem_truststore = PathBuf::from(s.get("secureboot.oem_truststore"));
        for (key, dir) in [
            ("secureboot.truststore", &truststore),
            ("secureboot.oem_truststore", &oem_truststore),
        ] {
            if !dir.is_absolute() {
                return Err(bad(key, "not an absolute path"));
            }
            let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
            if real(dir).starts_with(real(&paths.storage)) {
                return Err(bad(
                    key,
                    "a trust store on the writable storage would trust whatever can write there; \
                     keep it in the initramfs",
                ));
            }
        }
        let size = |key: &str| -> Result<u64, String> {
            let v = s.get(key).trim();
            let (n, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
                Some(i) => (&v[..i], v[i..].to_ascii_uppercase()),
                None => (v, String::new()),
            };
            let mult: u64 = match unit.as_str() {
                "" | "B" => 1,
                "K" | "KB" => 1 << 10,
                "M" | "MB" => 1 << 20,
                "G" | "GB" => 1 << 30,
                _ => return Err(bad(key, "not a size (N, NK, NM, NG)")),
            };
            n.parse::<u64>()
                .map(|n| n * mult)
                .map_err(|_| bad(key, "not a size (N, NK, NM, NG)"))
        };
        let percent = |key: &str| -> Result<u64, String> {
            match number(key)? {
                p @ 0..=100 => Ok(p),
                _ => Err(bad(key, "not a percentage (0 to 100)")),
            }
        };
        let remote_listen = match s.get("remote.listen") {
            "" => None,
            v => Some(
                v.parse()
                    .map_err(|_| bad("remote.listen", "not an ADDRESS:PORT"))?,
            ),
        };
        Ok(Options {
            truststore,
            oem_truststore,
            storage: paths.storage,
            ctrl_socket: paths.ctrl_socket,
            run_dir: paths.run_dir,
            cgroup_parent: s.get("cgroup.parent").to_string(),
            log_max_bytes: number("log.maxsize")?,
            stop_timeout: Duration::from_secs(number("stop.timeout")?),
            goals_timeout: Duration::from_secs(number("update.goals_timeout")?),
            xconnect_wait: Duration::from_secs(number("xconnect.wait_timeout")?),
            commit_delay: Duration::from_secs(number("update.commit_delay")?),
            verify_objects: flag("update.verify_objects")?,
            boot_verify_objects: flag("boot.verify_objects")?,
            remote_listen,
            remote_token: Some(s.get("remote.token").to_string()).filter(|t| !t.is_empty()),
            bootloader: s
                .get("bootloader")
                .parse()
                .map_err(|e: String| format!("{e} ({})", s.origin("bootloader").as_str()))?,
            mode,
            signatures: s
                .get("update.signatures")
                .parse()
                .map_err(|e: String| format!("{e} ({})", s.origin("update.signatures").as_str()))?,
            min_version: flag("update.min_version")?,
            // Pantavisor's default (shutdown) as PID 1; a process on a host
            // leaves the host's watchdog alone unless told.
            watchdog: match (mode, s.origin("watchdog.mode")) {
                (Mode::Appengine, Level::Default) => crate::watchdog::Mode::Disabled,
                _ => s.get("watchdog.mode").parse()?,
            },
            watchdog_timeout: number("watchdog.timeout")? as u32,
            watchdog_device: PathBuf::from(s.get("watchdog.device")),
            debug_hang: flag("debug.hang_command")?,
            gc_keep: number("storage.gc.keep_revisions")? as usize,
            gc_reserved_pct: percent("storage.gc.reserved")?,
            gc_threshold_pct: percent("storage.gc.threshold")?,
            gc_defer: Duration::from_secs(number("storage.gc.threshold.defertime")?),
            log_dir_max_bytes: size("log.dir_maxsize")?,
            settings,
        })
    }
}

/// The user metadata on `storage` (`config/user-meta/KEY` files).
fn user_meta(storage: &Path) -> Vec<(String, String)> {
    let dir = storage.join(pvstate::layout::USER_META_DIR);
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let (Some(name), Ok(value)) = (
            e.file_name().to_str().map(str::to_string),
            std::fs::read_to_string(e.path()),
        ) {
            out.push((name, value));
        }
    }
    out.sort();
    out
}

/// The factory packages the storage's configuration selects
/// (`PV_FACTORY_PKGS` in `config/pantavisor.config`), if any.
pub fn factory_packages(storage: &Path) -> Option<String> {
    let text = std::fs::read_to_string(storage.join(pvstate::layout::CONFIG_FILE)).ok()?;
    value(&text, "PV_FACTORY_PKGS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            storage: "/s".into(),
            ctrl_socket: "/s/pv-ctrl".into(),
            run_dir: "/run/x".into(),
            cgroup_parent: None,
        }
    }

    #[test]
    fn every_key_is_read() {
        let text = "# comment\ncgroup.parent = pv\nlog.maxsize=10\nstop.timeout=3\n\
                    update.goals_timeout=7\nupdate.commit_delay=2\nupdate.verify_objects=0\n\
                    boot.verify_objects=0\n\
                    update.signatures=strict\nremote.listen=127.0.0.1:9\nremote.token=t\n\
                    bootloader=rpi-tryboot:/boot/autoboot.txt\nPV_FACTORY_PKGS=a\n\
                    secureboot.truststore=/etc/certs\nsecureboot.oem_truststore=/etc/oem\n\
                    storage.gc.keep_revisions=3\nstorage.gc.reserved=10\nstorage.gc.threshold=80\n\
                    storage.gc.threshold.defertime=60\nlog.dir_maxsize=4M\nupdate.min_version=1\n\
                    watchdog.mode=always\nwatchdog.timeout=7\nwatchdog.device=/dev/wd\n\
                    debug.hang_command=1\nxconnect.wait_timeout=9\n";
        let o = Options::parse(text, paths(), Mode::Appengine).unwrap();
        assert_eq!(o.cgroup_parent, "pv");
        assert_eq!(o.log_max_bytes, 10);
        assert_eq!(o.stop_timeout, Duration::from_secs(3));
        assert_eq!(o.goals_timeout, Duration::from_secs(7));
        assert_eq!(o.commit_delay, Duration::from_secs(2));
        assert_eq!(o.xconnect_wait, Duration::from_secs(9));
        assert!(!o.verify_objects);
        assert!(!o.boot_verify_objects);
        assert_eq!(o.signatures, pvstate::sig::Mode::Strict);
        assert_eq!(o.remote_listen, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(o.remote_token.as_deref(), Some("t"));
        assert_eq!(
            o.bootloader,
            Bootloader::RpiTryboot {
                autoboot: "/boot/autoboot.txt".into(),
                partitions: (2, 3)
            }
        );
        assert!(o.min_version);
        assert_eq!(o.watchdog, crate::watchdog::Mode::Always);
        assert_eq!(o.watchdog_timeout, 7);
        assert_eq!(o.watchdog_device, Path::new("/dev/wd"));
        assert!(o.debug_hang);
        assert_eq!(o.gc_keep, 3);
        assert_eq!((o.gc_reserved_pct, o.gc_threshold_pct), (10, 80));
        assert_eq!(o.gc_defer, Duration::from_secs(60));
        assert_eq!(o.log_dir_max_bytes, 4 << 20);
        assert_eq!(o.truststore, Path::new("/etc/certs"));
        assert_eq!(o.oem_truststore, Path::new("/etc/oem"));
        assert_eq!(o.mode, Mode::Appengine);
        // Every key appears in this test's text (but the OEM ones).
        for k in keys().filter(|k| !matches!(*k, "oem.name" | "policy")) {
            assert!(text.contains(k), "{k}");
        }
        assert!(o.settings.reports.is_empty(), "{:?}", o.settings.reports);
        // Pantavisor's name for boot.verify_objects; on by default.
        let o = Options::parse("PV_SECUREBOOT_CHECKSUM=0", paths(), Mode::Appengine).unwrap();
        assert!(!o.boot_verify_objects);
        assert!(
            Options::parse("", paths(), Mode::Embedded)
                .unwrap()
                .boot_verify_objects
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, needle) in [
            ("log.maxsize=ten", "log.maxsize=ten"),
            ("remote.listen=here", "remote.listen=here"),
            ("update.signatures=maybe", "maybe"),
            ("bootloader=lilo", "bootloader=lilo"),
            ("secureboot.truststore=certs", "not an absolute path"),
            ("storage.gc.reserved=150", "not a percentage"),
            ("log.dir_maxsize=lots", "not a size"),
            // A trust store on the storage trusts whatever writes there.
            ("secureboot.truststore=/s/config/trust", "writable storage"),
            ("PV_SECUREBOOT_OEM_TRUSTSTORE=/s/oem", "writable storage"),
        ] {
            let e = Options::parse(text, paths(), Mode::Appengine).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn what_guards_the_device_is_not_set_from_storage_in_embedded_mode() {
        let o = Options::parse("", paths(), Mode::Embedded).unwrap();
        assert_eq!(o.truststore, Path::new("/etc/pantavisor/certs"));
        assert_eq!(o.oem_truststore, Path::new("/etc/pantavisor/certs/oem"));
        // The configuration on storage cannot move the trust store or
        // weaken the checks: reported, not used.
        for (text, key) in [
            ("secureboot.truststore=/tmp/k", "secureboot.truststore"),
            ("PV_SECUREBOOT_TRUSTSTORE=/tmp/k", "secureboot.truststore"),
            (
                "secureboot.oem_truststore=/tmp/k",
                "secureboot.oem_truststore",
            ),
            ("update.signatures=disabled", "update.signatures"),
            ("PV_SECUREBOOT_CHECKSUM=0", "boot.verify_objects"),
        ] {
            let o = Options::parse(text, paths(), Mode::Embedded).unwrap();
            assert_eq!(o.settings.origin(key), Level::Default, "{text}");
            let r = &o.settings.reports[0];
            assert!(
                r.why.contains("cannot be set at level storage config"),
                "{text}: {r:?}"
            );
        }
        assert_eq!(
            Options::parse("update.signatures=disabled", paths(), Mode::Embedded)
                .unwrap()
                .signatures,
            pvstate::sig::Mode::Lenient
        );
        // The initramfs's own configuration (pv.conf) may.
        let o = Options::load(
            paths(),
            Mode::Embedded,
            Some("update.signatures=strict"),
            None,
        )
        .unwrap();
        assert_eq!(o.signatures, pvstate::sig::Mode::Strict);
        assert_eq!(o.settings.origin("update.signatures"), Level::PvConf);
    }

    #[test]
    fn the_oem_level_sits_between_the_files_and_the_environment() {
        let o = Options::load(
            paths(),
            Mode::Appengine,
            Some("PV_OEM_NAME=acme\nupdate.goals_timeout=50\nupdate.commit_delay=4"),
            None,
        )
        .unwrap();
        let o = o
            .with_oem("PV_UPDATER_GOALS_TIMEOUT=40\nPV_SECUREBOOT_MODE=disabled\n")
            .unwrap();
        assert_eq!(o.goals_timeout, Duration::from_secs(40));
        assert_eq!(o.settings.origin("update.goals_timeout"), Level::Oem);
        assert_eq!(o.commit_delay, Duration::from_secs(4));
        // The OEM level may not weaken signatures.
        assert_eq!(o.signatures, pvstate::sig::Mode::Lenient);
        assert!(o
            .settings
            .reports
            .iter()
            .any(|r| r.key == "PV_SECUREBOOT_MODE" && r.level == Level::Oem));
    }

    #[test]
    fn bootloader_specs() {
        assert_eq!("plain".parse::<Bootloader>().unwrap(), Bootloader::Plain);
        assert_eq!(
            "uboot:disk@0x1000,disk@0x2000:0x1000"
                .parse::<Bootloader>()
                .unwrap(),
            Bootloader::Uboot {
                copies: vec![("disk".into(), 0x1000), ("disk".into(), 0x2000)],
                size: 0x1000
            }
        );
        assert_eq!(
            "rpi-tryboot:a.txt:5,6".parse::<Bootloader>().unwrap(),
            Bootloader::RpiTryboot {
                autoboot: "a.txt".into(),
                partitions: (5, 6)
            }
        );
        for bad in [
            "lilo",
            "uboot:x",
            "uboot:a,b,c:0x1000",
            "grub",
            "rpi-tryboot:a:x,y",
        ] {
            assert!(bad.parse::<Bootloader>().is_err(), "{bad}");
        }
    }
}
