//! Configuration levels, as Pantavisor layers them: each level overrides
//! the ones before it, and a key may only be set at the levels it allows.
//!
//! | level | where |
//! |---|---|
//! | `default` | built in |
//! | `pv.conf` | appengine: `--config FILE`; embedded: `/etc/pantavisor.config` in the initramfs |
//! | `storage config` | embedded: `config/pantavisor.config` on storage (`pv_config=`) |
//! | `oem config` | the running revision's `<PV_OEM_NAME>/<PV_POLICY or default>.config` |
//! | `cmdline` | embedded: `pv_*` / `ph_*` words of the kernel command line |
//! | `env` | `PV_*` / `PH_*` environment variables |
//! | `user meta` | `config/user-meta/KEY` on storage (read at start) |
//! | `flag` | a command-line flag of ours (`--cgroup-parent`) |
//!
//! A key is our dotted name or any of its aliases — Pantavisor's `PV_*`
//! name, its legacy dotted name — in any case. An unknown key, a Pantavisor
//! key without meaning here, or a key set at a level it does not allow is
//! reported (logged at start, listed by `GET /config`), never used.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Where a value came from; later levels override earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Default,
    PvConf,
    Storage,
    Oem,
    Cmdline,
    Env,
    UserMeta,
    Flag,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Default => "default",
            Level::PvConf => "pv.conf",
            Level::Storage => "storage config",
            Level::Oem => "oem config",
            Level::Cmdline => "cmdline",
            Level::Env => "env",
            Level::UserMeta => "user meta",
            Level::Flag => "flag",
        }
    }
}

use Level::*;

/// A configuration key.
pub struct Key {
    /// Our name.
    pub name: &'static str,
    /// Other names for it: Pantavisor's `PV_*` name first, then its legacy
    /// dotted name.
    pub aliases: &'static [&'static str],
    pub default: &'static str,
    /// The levels that may set it.
    pub levels: &'static [Level],
    /// Its value is a secret: `GET /config` does not show it.
    pub secret: bool,
}

const BOOT: &[Level] = &[PvConf, Cmdline, Env];
const LOCAL: &[Level] = &[PvConf, Storage, Cmdline, Env];
const UPDATE: &[Level] = &[PvConf, Storage, Oem, Cmdline, Env];
const UPDATE_USER: &[Level] = &[PvConf, Storage, Oem, Cmdline, Env, UserMeta];

/// Every key the daemon reads.
pub const KEYS: &[Key] = &[
    key(
        "cgroup.parent",
        &[],
        "pantavisor",
        &[PvConf, Storage, Cmdline, Env, Flag],
    ),
    key("log.maxsize", &[], "1048576", LOCAL),
    key("stop.timeout", &[], "10", UPDATE),
    key(
        "update.goals_timeout",
        &["PV_UPDATER_GOALS_TIMEOUT", "updater.goals.timeout"],
        "120",
        UPDATE,
    ),
    key(
        "update.commit_delay",
        &["PV_UPDATER_COMMIT_DELAY", "updater.commit.delay"],
        "5",
        UPDATE_USER,
    ),
    key("update.verify_objects", &[], "1", LOCAL),
    key("xconnect.wait_timeout", &[], "60", UPDATE),
    // What guards the device is not for the writable storage to change:
    // the levels Pantavisor allows (pv.conf, env and boot arguments).
    key(
        "boot.verify_objects",
        &["PV_SECUREBOOT_CHECKSUM", "secureboot.checksum"],
        "1",
        BOOT,
    ),
    key(
        "update.signatures",
        &["PV_SECUREBOOT_MODE", "secureboot.mode"],
        "lenient",
        BOOT,
    ),
    key(
        "secureboot.truststore",
        &["PV_SECUREBOOT_TRUSTSTORE"],
        "/etc/pantavisor/certs",
        BOOT,
    ),
    key(
        "secureboot.oem_truststore",
        &["PV_SECUREBOOT_OEM_TRUSTSTORE"],
        "/etc/pantavisor/certs/oem",
        BOOT,
    ),
    // Anti-rollback: refuse a revision older than the floor, which rises
    // with every commit. Guards the device: not settable from storage.
    key("update.min_version", &[], "0", BOOT),
    key(
        "watchdog.mode",
        &["PV_WDT_MODE", "wdt.mode"],
        "shutdown",
        BOOT,
    ),
    key(
        "watchdog.timeout",
        &["PV_WDT_TIMEOUT", "wdt.timeout"],
        "15",
        BOOT,
    ),
    key("watchdog.device", &[], "/dev/watchdog", BOOT),
    // A control command that hangs the event loop, to test the watchdog.
    key("debug.hang_command", &["PV_DEBUG_HANG_COMMAND"], "0", BOOT),
    key("remote.listen", &[], "", &[PvConf, Storage, Env]),
    Key {
        name: "remote.token",
        aliases: &[],
        default: "",
        levels: &[PvConf, Storage, Env],
        secret: true,
    },
    key(
        "bootloader",
        &["PV_BOOTLOADER_TYPE", "bootloader.type"],
        "plain",
        LOCAL,
    ),
    // Storage lifetime: revisions kept, the space an update leaves free,
    // collection when storage fills, the logs' total size.
    key("storage.gc.keep_revisions", &[], "2", UPDATE_USER),
    key(
        "storage.gc.reserved",
        &["PV_STORAGE_GC_RESERVED", "storage.gc.reserved"],
        "5",
        UPDATE_USER,
    ),
    key(
        "storage.gc.threshold",
        &["PV_STORAGE_GC_THRESHOLD", "storage.gc.threshold"],
        "0",
        UPDATE_USER,
    ),
    key(
        "storage.gc.threshold.defertime",
        &[
            "PV_STORAGE_GC_THRESHOLD_DEFERTIME",
            "storage.gc.threshold.defertime",
        ],
        "600",
        UPDATE_USER,
    ),
    key(
        "log.dir_maxsize",
        &["PV_LOG_DIR_MAXSIZE", "log.dir_maxsize"],
        "16777216",
        UPDATE_USER,
    ),
    key("oem.name", &["PV_OEM_NAME"], "", BOOT),
    key("policy", &["PV_POLICY"], "", &[PvConf, Env]),
    key("PV_FACTORY_PKGS", &[], "", &[PvConf, Storage]),
];

const fn key(
    name: &'static str,
    aliases: &'static [&'static str],
    default: &'static str,
    levels: &'static [Level],
) -> Key {
    Key {
        name,
        aliases,
        default,
        levels,
        secret: false,
    }
}

/// The key `name` (ours or an alias, any case) names.
pub fn lookup(name: &str) -> Option<(&'static Key, &'static str)> {
    let name = name.trim();
    KEYS.iter().find_map(|k| {
        std::iter::once(&k.name)
            .chain(k.aliases)
            .find(|n| n.eq_ignore_ascii_case(name))
            .map(|n| (k, *n))
    })
}

/// Whether `key` has the form of a Pantavisor key (`PV_*` / `PH_*`, any case).
fn pantavisor_form(key: &str) -> bool {
    let k = key.trim().as_bytes();
    k.len() >= 3 && (k[..3].eq_ignore_ascii_case(b"PV_") || k[..3].eq_ignore_ascii_case(b"PH_"))
}

/// A setting that was not used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub key: String,
    pub value: String,
    pub level: Level,
    pub why: String,
}

/// The effective configuration, with each value's origin.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<&'static str, (String, Level)>,
    pub reports: Vec<Report>,
}

impl std::default::Default for Settings {
    fn default() -> Self {
        Settings {
            values: KEYS
                .iter()
                .map(|k| (k.name, (k.default.to_string(), Default)))
                .collect(),
            reports: Vec::new(),
        }
    }
}

/// Pantavisor's bootloader types in our `bootloader` syntax.
fn translate_bootloader(alias: &str, value: &str) -> Result<String, String> {
    if !alias.starts_with("PV_") && alias != "bootloader.type" {
        return Ok(value.to_string());
    }
    match value.trim() {
        "uboot" => Ok("plain".into()),
        "rpiab" => Ok("rpi-tryboot:/dev/mmcblk0p1:2,3".into()),
        "grub" => Ok("grub:boot/grubenv".into()),
        other => Err(format!(
            "bootloader type {other} is not supported (uboot, rpiab, grub; or bootloader=...)"
        )),
    }
}

/// A `pv_*`/`ph_*` name that is a configuration key: pv_storage, pv_config
/// and the like are boot arguments (which the kernel also passes PID 1 as
/// environment variables), not configuration.
fn configuration_key(k: &str) -> bool {
    pantavisor_form(k) && !crate::embedded::BOOT_ARGS.contains(&k.to_ascii_lowercase().as_str())
}

impl Settings {
    /// Set `key` to `value` at `level`, unless a higher level set it
    /// already; what cannot be used is reported.
    pub fn apply(&mut self, level: Level, key: &str, value: &str) {
        let value = value.trim();
        let report = |why: String| Report {
            key: key.trim().to_string(),
            value: value.to_string(),
            level,
            why,
        };
        let Some((k, alias)) = lookup(key) else {
            let why = if pantavisor_form(key) {
                "a Pantavisor key this daemon does not use".to_string()
            } else {
                "unknown key".to_string()
            };
            self.reports.push(report(why));
            return;
        };
        if !k.levels.contains(&level) {
            self.reports.push(report(format!(
                "{} cannot be set at level {} (allowed: {})",
                k.name,
                level.as_str(),
                k.levels
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
            return;
        }
        let value = if k.name == "bootloader" {
            match translate_bootloader(alias, value) {
                Ok(v) => v,
                Err(why) => {
                    self.reports.push(report(why));
                    return;
                }
            }
        } else {
            value.to_string()
        };
        let slot = self
            .values
            .entry(k.name)
            .or_insert((String::new(), Default));
        if slot.1 <= level {
            *slot = (value, level);
        }
    }

    /// Apply `KEY=VALUE` lines (`#` comments) at `level`.
    pub fn apply_text(&mut self, level: Level, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => self.apply(level, k, v),
                None => self.reports.push(Report {
                    key: line.to_string(),
                    value: String::new(),
                    level,
                    why: "not KEY=VALUE".into(),
                }),
            }
        }
    }

    /// The words of a kernel command line that are `pv_*=` / `ph_*=`.
    pub fn apply_cmdline(&mut self, cmdline: &str) {
        for word in cmdline.split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                if configuration_key(k) {
                    self.apply(Cmdline, k, v);
                }
            }
        }
    }

    /// `PV_*` / `PH_*` variables of an environment.
    pub fn apply_env(&mut self, vars: impl Iterator<Item = (String, String)>) {
        for (k, v) in vars {
            if configuration_key(&k) {
                self.apply(Env, &k, &v);
            }
        }
    }

    /// User metadata entries named like configuration keys; other user
    /// metadata (which is most of it) is not configuration.
    pub fn apply_user_meta(&mut self, entries: impl Iterator<Item = (String, String)>) {
        for (k, v) in entries {
            if lookup(&k).is_some() || pantavisor_form(&k) {
                self.apply(UserMeta, &k, &v);
            }
        }
    }

    pub fn get(&self, name: &str) -> &str {
        self.values.get(name).map_or("", |(v, _)| v.as_str())
    }

    /// The level `name` got its value from.
    pub fn origin(&self, name: &str) -> Level {
        self.values.get(name).map_or(Default, |(_, l)| *l)
    }

    /// `GET /config`: each key with its value (secrets hidden), its origin
    /// and Pantavisor's name for it; then what was not used.
    pub fn to_json(&self) -> Value {
        let keys: Vec<Value> = KEYS
            .iter()
            .map(|k| {
                let value = if k.secret && !self.get(k.name).is_empty() {
                    "(set)".to_string()
                } else {
                    self.get(k.name).to_string()
                };
                json!({
                    "key": k.name,
                    "pantavisor": k.aliases.iter().find(|a| pantavisor_form(a)),
                    "value": value,
                    "modified": self.origin(k.name).as_str(),
                })
            })
            .collect();
        let unused: Vec<Value> = self
            .reports
            .iter()
            .map(|r| {
                let secret = ["SECRET", "TOKEN", "PASS"]
                    .iter()
                    .any(|s| r.key.to_ascii_uppercase().contains(s));
                json!({
                    "key": r.key,
                    "value": if secret { "(set)" } else { r.value.as_str() },
                    "level": r.level.as_str(),
                    "why": r.why,
                })
            })
            .collect();
        json!({"keys": keys, "unused": unused})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_levels_override_and_names_are_case_insensitive_aliases() {
        let mut s = Settings::default();
        assert_eq!(s.get("update.goals_timeout"), "120");
        assert_eq!(s.origin("update.goals_timeout"), Default);
        s.apply_text(
            PvConf,
            "PV_UPDATER_GOALS_TIMEOUT=60\nupdate.commit_delay=7\n",
        );
        s.apply_text(Oem, "pv_updater_goals_timeout=30\n");
        assert_eq!(s.get("update.goals_timeout"), "30");
        assert_eq!(s.origin("update.goals_timeout"), Oem);
        // A lower level applied later does not override a higher one.
        s.apply_cmdline(
            "console=ttyS0 pv_updater.commit.delay=1 PV_UPDATER_COMMIT_DELAY=9 pv_storage=LABEL=x",
        );
        s.apply_text(Oem, "updater.commit.delay=3");
        assert_eq!(s.get("update.commit_delay"), "9");
        assert_eq!(s.origin("update.commit_delay"), Cmdline);
        s.apply_user_meta([("PV_UPDATER_COMMIT_DELAY".into(), "11".into())].into_iter());
        assert_eq!(s.get("update.commit_delay"), "11");
        assert_eq!(s.origin("update.commit_delay"), UserMeta);
        // Boot arguments are no keys, on the command line or in PID 1's
        // environment (where the kernel puts them too): not reported.
        s.apply_cmdline("pv_bootrev=locals/x pv_rpi_part=3");
        s.apply_env(
            [("pv_storage", "LABEL=x"), ("pv_bootrev", "locals/x")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        assert!(
            !s.reports
                .iter()
                .any(|r| ["pv_storage", "pv_bootrev", "pv_rpi_part"].contains(&r.key.as_str())),
            "{:?}",
            s.reports
        );
        // pv_updater.commit.delay is no key (PV_ names have no dots).
        assert!(s.reports.iter().any(|r| r.key == "pv_updater.commit.delay"));
    }

    #[test]
    fn levels_a_key_does_not_allow_and_unknown_keys_are_reported() {
        let mut s = Settings::default();
        s.apply_text(
            Storage,
            "secureboot.truststore=/storage/evil\nfrobnicate=1\nPH_CREDS_HOST=hub\n",
        );
        s.apply_user_meta(
            [
                ("PV_SECUREBOOT_MODE".to_string(), "disabled".to_string()),
                ("pvr-sdk.authorized_keys".to_string(), "x".to_string()),
            ]
            .into_iter(),
        );
        assert_eq!(s.get("secureboot.truststore"), "/etc/pantavisor/certs");
        assert_eq!(s.get("update.signatures"), "lenient");
        let why = |k: &str| {
            s.reports
                .iter()
                .find(|r| r.key == k)
                .map(|r| r.why.clone())
                .unwrap_or_default()
        };
        assert!(why("secureboot.truststore").contains("cannot be set at level storage config"));
        assert!(why("PV_SECUREBOOT_MODE").contains("cannot be set at level user meta"));
        assert_eq!(why("frobnicate"), "unknown key");
        assert_eq!(
            why("PH_CREDS_HOST"),
            "a Pantavisor key this daemon does not use"
        );
        // Ordinary user metadata is not configuration.
        assert_eq!(why("pvr-sdk.authorized_keys"), "");
    }

    #[test]
    fn pantavisor_bootloader_types_translate_and_secrets_stay_hidden() {
        let mut s = Settings::default();
        s.apply_text(
            PvConf,
            "PV_BOOTLOADER_TYPE=rpiab\nremote.token=hunter2\nPH_CREDS_SECRET=s3\n",
        );
        assert_eq!(s.get("bootloader"), "rpi-tryboot:/dev/mmcblk0p1:2,3");
        s.apply_text(Env, "bootloader.type=uboot-pvk");
        assert!(s
            .reports
            .iter()
            .any(|r| r.why.contains("uboot-pvk is not supported")));
        let j = s.to_json().to_string();
        assert!(!j.contains("hunter2") && !j.contains("s3\""), "{j}");
        assert!(j.contains(r#""key":"update.goals_timeout","modified":"default","pantavisor":"PV_UPDATER_GOALS_TIMEOUT""#), "{j}");
    }
}
