//! Cross-document checks of a parsed state: every reference resolves, every
//! name is unique and stays inside its directory, every group exists.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::error::Problem;
use crate::keys::{container_name_problem, path_problem};
use crate::model::*;
use crate::state::State;

/// How much of a revision a state is expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// A whole revision: `bsp/run.json` is required.
    Full,
    /// Some parts of a revision, as in a pvrexport of `--parts`.
    Partial,
}

impl State {
    /// Validate a whole revision.
    pub fn validate(&self) -> Vec<Problem> {
        self.validate_as(Completeness::Full)
    }

    /// Validate the cross references of the state; problems inside single
    /// documents were already found when parsing.
    pub fn validate_as(&self, completeness: Completeness) -> Vec<Problem> {
        let mut p = Vec::new();
        self.check_bsp(completeness, &mut p);
        let disks = self.check_device(&mut p);
        self.check_containers(&disks, completeness, &mut p);
        self.check_signatures(&mut p);
        p.sort();
        p.dedup();
        p
    }

    fn require_file(
        &self,
        owner_key: &str,
        member: &str,
        dir: &str,
        file: &str,
        p: &mut Vec<Problem>,
    ) {
        if let Some(why) = path_problem(file) {
            p.push(Problem::new(
                owner_key,
                format!("{member}: \"{file}\": {why}"),
            ));
            return;
        }
        let target = format!("{dir}/{file}");
        if !self.contains(&target) {
            p.push(Problem::new(
                owner_key,
                format!("{member}: refers to \"{target}\", which the state does not contain"),
            ));
        }
    }

    /// A `dm:VOLUME` needs its manifest (`DIR/_dm/VOLUME.json`), naming
    /// VOLUME as its data device and a hash device the container has.
    fn require_verity(
        &self,
        owner_key: &str,
        member: &str,
        dir: &str,
        volume: &str,
        p: &mut Vec<Problem>,
    ) {
        let mkey = crate::verity::manifest_key(dir, volume);
        let Some(entry) = self.get(&mkey) else {
            p.push(Problem::new(
                owner_key,
                format!("{member}: \"dm:{volume}\" needs its dm-verity manifest \"{mkey}\", which the state does not contain"),
            ));
            return;
        };
        match crate::verity::Manifest::parse(&entry.to_value()) {
            Err(why) => p.push(Problem::new(&mkey, why)),
            Ok(m) => {
                if m.data_device != volume {
                    p.push(Problem::new(
                        &mkey,
                        format!(
                            "data_device \"{}\" is not the volume \"{volume}\"",
                            m.data_device
                        ),
                    ));
                }
                self.require_file(&mkey, "hash_device", dir, &m.hash_device, p);
            }
        }
    }

    fn check_bsp(&self, completeness: Completeness, p: &mut Vec<Problem>) {
        let Some(bsp) = self.bsp() else {
            if completeness == Completeness::Full && !self.contains("bsp/run.json") {
                p.push(Problem::new(
                    "bsp/run.json",
                    "missing; a revision needs a BSP",
                ));
            }
            return;
        };
        let key = "bsp/run.json";
        let bootable = bsp.fit.is_some()
            || bsp.rpiab.is_some()
            || (bsp.linux.is_some() && bsp.initrd.is_some());
        if !bootable {
            p.push(Problem::new(
                key,
                "needs \"linux\" and \"initrd\", or \"fit\", or \"rpiab\"",
            ));
        }
        for (member, file) in bsp.referenced_files() {
            self.require_file(key, member, "bsp", file, p);
        }
    }

    /// Checks device.json and returns the disk names (and aliases) it defines.
    fn check_device(&self, p: &mut Vec<Problem>) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let (groups, _) = self.groups();
        let groups_key = if self.device().and_then(|d| d.groups.as_ref()).is_some() {
            "device.json"
        } else {
            "groups.json"
        };
        let mut seen = BTreeSet::new();
        for g in &groups {
            if g.name.is_empty() {
                p.push(Problem::new(
                    groups_key,
                    "groups: a group has an empty name",
                ));
            } else if !seen.insert(g.name.clone()) {
                p.push(Problem::new(
                    groups_key,
                    format!("groups: duplicate group name \"{}\"", g.name),
                ));
            }
            if let Some(ar) = &g.auto_recovery {
                check_auto_recovery(
                    groups_key,
                    &format!("groups[{}].auto_recovery", g.name),
                    ar,
                    p,
                );
            }
        }
        let Some(device) = self.device() else {
            return names;
        };
        let lists = [
            ("disks", &device.disks, true),
            ("disks_v2", &device.disks_v2, true),
            ("disks_v3", &device.disks_v3, false),
        ];
        for (list, disks, strict) in lists {
            for d in disks.iter().flatten() {
                if strict && !DISK_TYPES.contains(&d.kind.as_str()) {
                    p.push(Problem::new(
                        "device.json",
                        format!(
                            "{list}[{}].type: unknown disk type \"{}\", expected one of {}",
                            d.name,
                            d.kind,
                            DISK_TYPES.join(", ")
                        ),
                    ));
                }
                for n in std::iter::once(&d.name).chain(d.aliases.iter().flatten()) {
                    if !names.insert(n.clone()) {
                        p.push(Problem::new(
                            "device.json",
                            format!("{list}: duplicate disk name or alias \"{n}\""),
                        ));
                    }
                }
            }
        }
        for (path, entry) in device.volumes.iter().flatten() {
            if let Some(disk) = &entry.disk {
                if !names.contains(disk) {
                    p.push(Problem::new(
                        "device.json",
                        format!("volumes.{path}.disk: no disk named \"{disk}\""),
                    ));
                }
            }
        }
        names
    }

    fn check_containers(
        &self,
        disks: &BTreeSet<String>,
        completeness: Completeness,
        p: &mut Vec<Problem>,
    ) {
        // A part on its own cannot know the groups and disks of the revision
        // it will join: unless it brings device.json, they are checked there.
        let standalone_part = completeness == Completeness::Partial && self.device().is_none();
        let (groups, defaults) = self.groups();
        let group_names: BTreeSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        for (dir, run) in self.containers() {
            let key = format!("{dir}/run.json");
            if let Some(why) = container_name_problem(dir) {
                p.push(Problem::new(&key, format!("directory \"{dir}\": {why}")));
            }
            if run.name != dir {
                p.push(Problem::new(
                    &key,
                    format!(
                        "name: \"{}\" does not match its directory \"{dir}\" (two containers may not share a name)",
                        run.name
                    ),
                ));
            }
            let mounted_only =
                self.effective(dir).map(|e| e.status_goal) == Some(StatusGoal::Mounted);
            match &run.config {
                Some(config) => self.require_file(&key, "config", dir, config, p),
                None if !mounted_only => p.push(Problem::new(
                    &key,
                    "missing field `config` (only containers whose status goal is MOUNTED may omit it)",
                )),
                None => {}
            }
            let root_volume = match run.root_volume.strip_prefix("dm:") {
                Some(v) => {
                    self.require_verity(&key, "root-volume", dir, v, p);
                    v
                }
                None => &run.root_volume,
            };
            self.require_file(&key, "root-volume", dir, root_volume, p);
            for v in run.volumes.iter().flatten() {
                let v = match v.strip_prefix("dm:") {
                    Some(v) => {
                        self.require_verity(&key, "volumes", dir, v, p);
                        v
                    }
                    None => v,
                };
                self.require_file(&key, "volumes", dir, v, p);
            }
            for (path, entry) in &run.storage {
                if let Some(why) = volume_name_problem(path) {
                    p.push(Problem::new(&key, format!("storage: \"{path}\": {why}")));
                }
                if let Some(disk) = entry.disk.as_ref().filter(|_| !standalone_part) {
                    if !disks.contains(disk) {
                        p.push(Problem::new(
                            &key,
                            format!("storage.{path}.disk: no disk named \"{disk}\" in device.json"),
                        ));
                    }
                }
            }
            if let Some(g) = run
                .group
                .as_ref()
                .filter(|_| !(defaults && standalone_part))
            {
                if !group_names.contains(g.as_str()) {
                    let known: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                    p.push(Problem::new(
                        &key,
                        format!(
                            "group: \"{g}\" does not exist; the {} groups are {}",
                            if defaults { "default" } else { "state's" },
                            known.join(", ")
                        ),
                    ));
                }
            }
            if let Some(ar) = &run.auto_recovery {
                check_auto_recovery(&key, "auto_recovery", ar, p);
            }
            if let Some(services) = &run.services {
                for s in services
                    .required
                    .iter()
                    .chain(services.optional.iter())
                    .flatten()
                {
                    if s.name.is_empty() {
                        p.push(Problem::new(
                            &key,
                            "services: a requirement has an empty name",
                        ));
                    }
                }
                // A required service is a dependency: some other container
                // of the state must provide it.
                for s in services.required.iter().flatten() {
                    // A part alone cannot say who provides it.
                    if completeness == Completeness::Partial
                        || s.name.is_empty()
                        || self.provides(&s.name, dir)
                    {
                        continue;
                    }
                    p.push(Problem::new(
                        &key,
                        format!(
                            "services.required: \"{}\": no container of the state provides it (in its services.json)",
                            s.name
                        ),
                    ));
                }
            }
            if let Some(crate::model::Entry::Services(exports)) =
                self.get(&format!("{dir}/services.json"))
            {
                let mut seen = BTreeSet::new();
                for s in &exports.services {
                    if !seen.insert(&s.name) {
                        p.push(Problem::new(
                            format!("{dir}/services.json"),
                            format!("services: duplicate service name \"{}\"", s.name),
                        ));
                    }
                }
            }
        }
    }

    /// Whether a container other than `consumer` exports service `name`.
    fn provides(&self, name: &str, consumer: &str) -> bool {
        self.entries().iter().any(|(key, entry)| {
            matches!(entry, Entry::Services(m)
                if key.strip_suffix("/services.json").is_some_and(|c| c != consumer)
                    && m.services.iter().any(|s| s.name == name))
        })
    }

    fn check_signatures(&self, p: &mut Vec<Problem>) {
        for (key, entry) in self.entries() {
            let Entry::Signature(sig) = entry else {
                continue;
            };
            let header = match URL_SAFE_NO_PAD.decode(sig.protected.trim_end_matches('=')) {
                Ok(bytes) => bytes,
                Err(e) => {
                    p.push(Problem::new(key, format!("protected: not base64url: {e}")));
                    continue;
                }
            };
            let header: Value = match serde_json::from_slice(&header) {
                Ok(v) => v,
                Err(e) => {
                    p.push(Problem::new(
                        key,
                        format!("protected: not a JSON header: {e}"),
                    ));
                    continue;
                }
            };
            match header.get("alg").and_then(Value::as_str) {
                Some("RS256" | "ES256" | "ES384" | "ES512") => {}
                Some(other) => p.push(Problem::new(
                    key,
                    format!("protected.alg: \"{other}\" is not one of RS256, ES256, ES384, ES512"),
                )),
                None => p.push(Problem::new(key, "protected.alg: missing")),
            }
            if let Some(pvs) = header.get("pvs") {
                for list in ["include", "exclude"] {
                    match pvs.get(list) {
                        None => {}
                        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
                        Some(_) => p.push(Problem::new(
                            key,
                            format!("protected.pvs.{list}: expected an array of glob strings"),
                        )),
                    }
                }
            }
            if URL_SAFE_NO_PAD
                .decode(sig.signature.trim_end_matches('='))
                .is_err()
            {
                p.push(Problem::new(key, "signature: not base64url"));
            }
        }
    }
}

fn check_auto_recovery(key: &str, member: &str, ar: &AutoRecovery, p: &mut Vec<Problem>) {
    if let Some(f) = ar.backoff_factor {
        if !(f.is_finite() && f >= 1.0) {
            p.push(Problem::new(
                key,
                format!("{member}.backoff_factor: {f} must be a number >= 1"),
            ));
        }
    }
    if let Some(bp) = &ar.backoff_policy {
        if bp != "reboot" && bp != "never" && parse_duration(bp).is_none() {
            p.push(Problem::new(
                key,
                format!("{member}.backoff_policy: \"{bp}\" is not reboot, never or a duration like 30s, 10min, 1h"),
            ));
        }
    }
}

/// Storage entries name volumes that become directories on the data
/// partition (`lxc-overlay`, `docker--etc-foo`): one safe path component.
fn volume_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name == "." || name == ".." {
        return Some("not a volume name".into());
    }
    if name.contains('/') || name.contains('\\') || name.contains('\0') {
        return Some("a volume name is one path component (no '/', '\\' or NUL)".into());
    }
    None
}

/// Parse a Pantavisor duration (`30`, `30s`, `10min`, `1h`, `2d`) to seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30));
        assert_eq!(parse_duration("10min"), Some(600));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("10 min"), None);
        assert_eq!(parse_duration("1y"), None);
    }
}
