//! The daemon's configuration: every key it reads, in one place.
//!
//! A configuration is `KEY=VALUE` lines (`#` starts a comment), the format
//! of Pantavisor's `pantavisor.config`. Appengine mode reads the file given
//! with `--config`; embedded mode reads `pv_config=` on storage
//! (`config/pantavisor.config` by default). Factory packages are selected by
//! `PV_FACTORY_PKGS` in the storage's own configuration ([`factory_packages`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Every key [`Options::parse`] reads, for `--help` and the docs.
pub const KEYS: &[&str] = &[
    "cgroup.parent",
    "log.maxsize",
    "stop.timeout",
    "update.goals_timeout",
    "update.commit_delay",
    "update.verify_objects",
    "boot.verify_objects",
    "update.signatures",
    "secureboot.truststore",
    "secureboot.oem_truststore",
    "remote.listen",
    "remote.token",
    "bootloader",
    "PV_FACTORY_PKGS",
];

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
    /// Options from configuration `text`; a key with a bad value is an error
    /// naming it.
    pub fn parse(text: &str, paths: Paths, mode: Mode) -> Result<Options, String> {
        let number = |key: &str, default: u64| -> Result<u64, String> {
            match value(text, key) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| format!("{key}={v}: not a number")),
            }
        };
        // Ours, else Pantavisor's name for the same key.
        let either = |ours: &str, theirs: &str| value(text, ours).or_else(|| value(text, theirs));
        let truststore = PathBuf::from(
            either("secureboot.truststore", "PV_SECUREBOOT_TRUSTSTORE")
                .unwrap_or_else(|| "/etc/pantavisor/certs".into()),
        );
        let oem_truststore = PathBuf::from(
            either("secureboot.oem_truststore", "PV_SECUREBOOT_OEM_TRUSTSTORE")
                .unwrap_or_else(|| "/etc/pantavisor/certs/oem".into()),
        );
        // Embedded mode reads this text from the writable storage: the
        // trust store is then the initramfs's, not something it may move.
        if mode == Mode::Embedded {
            for key in [
                "secureboot.truststore",
                "PV_SECUREBOOT_TRUSTSTORE",
                "secureboot.oem_truststore",
                "PV_SECUREBOOT_OEM_TRUSTSTORE",
            ] {
                if value(text, key).is_some() {
                    return Err(format!(
                        "{key}: the trust store is built into the initramfs; \
                         the configuration on storage cannot move it"
                    ));
                }
            }
        }
        for (key, dir) in [
            ("secureboot.truststore", &truststore),
            ("secureboot.oem_truststore", &oem_truststore),
        ] {
            if !dir.is_absolute() {
                return Err(format!("{key}={}: not an absolute path", dir.display()));
            }
            let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
            if real(dir).starts_with(real(&paths.storage)) {
                return Err(format!(
                    "{key}={}: a trust store on the writable storage would trust whatever                      can write there; keep it in the initramfs",
                    dir.display()
                ));
            }
        }
        Ok(Options {
            truststore,
            oem_truststore,
            storage: paths.storage,
            ctrl_socket: paths.ctrl_socket,
            run_dir: paths.run_dir,
            cgroup_parent: paths
                .cgroup_parent
                .or_else(|| value(text, "cgroup.parent"))
                .unwrap_or_else(|| "pantavisor".into()),
            log_max_bytes: number("log.maxsize", 1 << 20)?,
            stop_timeout: Duration::from_secs(number("stop.timeout", 10)?),
            goals_timeout: Duration::from_secs(number("update.goals_timeout", 120)?),
            commit_delay: Duration::from_secs(number("update.commit_delay", 5)?),
            verify_objects: number("update.verify_objects", 1)? != 0,
            boot_verify_objects: match value(text, "boot.verify_objects") {
                Some(_) => number("boot.verify_objects", 1)? != 0,
                None => number("PV_SECUREBOOT_CHECKSUM", 1)? != 0,
            },
            remote_listen: value(text, "remote.listen")
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("remote.listen={v}: not an ADDRESS:PORT"))
                })
                .transpose()?,
            remote_token: value(text, "remote.token").filter(|t| !t.is_empty()),
            bootloader: value(text, "bootloader")
                .unwrap_or_else(|| "plain".into())
                .parse()?,
            mode,
            signatures: value(text, "update.signatures")
                .unwrap_or_else(|| "lenient".into())
                .parse()?,
        })
    }
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
                    secureboot.truststore=/etc/certs\nsecureboot.oem_truststore=/etc/oem\n";
        let o = Options::parse(text, paths(), Mode::Appengine).unwrap();
        assert_eq!(o.cgroup_parent, "pv");
        assert_eq!(o.log_max_bytes, 10);
        assert_eq!(o.stop_timeout, Duration::from_secs(3));
        assert_eq!(o.goals_timeout, Duration::from_secs(7));
        assert_eq!(o.commit_delay, Duration::from_secs(2));
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
        assert_eq!(o.truststore, Path::new("/etc/certs"));
        assert_eq!(o.oem_truststore, Path::new("/etc/oem"));
        assert_eq!(o.mode, Mode::Appengine);
        // Every key documented in KEYS appears in this test's text.
        for k in KEYS {
            assert!(text.contains(k), "{k}");
        }
        // Pantavisor's name for boot.verify_objects, when ours is not given;
        // on by default.
        let o = Options::parse("PV_SECUREBOOT_CHECKSUM=0", paths(), Mode::Embedded).unwrap();
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
            // A trust store on the storage trusts whatever writes there.
            ("secureboot.truststore=/s/config/trust", "writable storage"),
            ("PV_SECUREBOOT_OEM_TRUSTSTORE=/s/oem", "writable storage"),
        ] {
            let e = Options::parse(text, paths(), Mode::Appengine).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn the_trust_store_is_the_initramfs_one_in_embedded_mode() {
        let o = Options::parse("", paths(), Mode::Embedded).unwrap();
        assert_eq!(o.truststore, Path::new("/etc/pantavisor/certs"));
        assert_eq!(o.oem_truststore, Path::new("/etc/pantavisor/certs/oem"));
        // The configuration on storage cannot point it elsewhere.
        for text in [
            "secureboot.truststore=/tmp/k",
            "PV_SECUREBOOT_TRUSTSTORE=/tmp/k",
            "secureboot.oem_truststore=/tmp/k",
        ] {
            let e = Options::parse(text, paths(), Mode::Embedded).unwrap_err();
            assert!(e.contains("built into the initramfs"), "{text}: {e}");
        }
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
