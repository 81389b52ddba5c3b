//! The pvroot: the data partition's layout (Pantavisor's), known here only.
//!
//! ```text
//! trails/<rev>/.pvr/json          a revision's state (rev: a number or locals/NAME)
//! trails/<rev>/.pv/progress       its update progress (status, status-msg, progress)
//! trails/<rev>/.pv/commitmsg      its commit message
//! trails/<rev>/.pv/pv-kernel.img  its BSP's kernel, initramfs and device tree
//!   pv-initrd.img, pv-fdt.dtb       (hard links to objects) for a bootloader script
//! objects/<sha256>                the object pool
//! logs/<rev>/<container>/         logs, per revision and container
//! disks/perm/<container>/<vol>    permanent volumes
//! disks/rev/<rev>/<container>/<vol>  per-revision volumes
//! boot/pv.env                     the plain bootloader environment
//! config/pantavisor.config        the device's configuration
//! config/user-meta/<key>          user metadata
//! config/trust/                   no longer read (the trust store is the initramfs's)
//! factory-pkgs.d/NAME.pvrexport.tgz  optional containers for the first boot
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Persistence;
use crate::{ObjectStore, State};

pub const TRAILS: &str = "trails";
pub const OBJECTS: &str = "objects";
pub const CONFIG_FILE: &str = "config/pantavisor.config";
pub const PLAIN_BOOT_ENV: &str = "boot/pv.env";
/// Pantavisor's plain environment file, read when `boot/pv.env` is absent.
pub const UBOOT_TXT: &str = "boot/uboot.txt";
/// Where earlier builds kept the trust store; now only reported when found.
pub const TRUST_DIR: &str = "config/trust";
pub const USER_META_DIR: &str = "config/user-meta";
pub const FACTORY_DIR: &str = "factory-pkgs.d";
/// Marks the factory packages as installed (holds the selection).
pub const FACTORY_DONE: &str = "config/.factory-done";
/// A state's anti-rollback version document (`{"version": N}`).
pub const VERSION_KEY: &str = "version.json";
/// The lowest version this device accepts (anti-rollback floor).
pub const MIN_VERSION_FILE: &str = "config/min-version";
/// A trail's state, relative to the trail.
pub const TRAIL_STATE: &str = ".pvr/json";
/// The boot links of a trail (Pantavisor's names): `bsp/run.json`'s member
/// and the link in `trails/<rev>/.pv/` a bootloader loads it from.
pub const BOOT_LINKS: [(&str, &str); 3] = [
    ("linux", "pv-kernel.img"),
    ("initrd", "pv-initrd.img"),
    ("fdt", "pv-fdt.dtb"),
];

/// `locals/NAME` for a local revision name that is letters, digits, `-`,
/// `_`, `.` and under 64 characters (not `.` or `..`): the one rule for the
/// daemon, `pvr post` and the hub.
pub fn local_revision(name: &str) -> std::result::Result<String, String> {
    let ok = !name.is_empty()
        && name.len() < 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(format!("locals/{name}"))
    } else {
        Err(format!(
            "\"locals/{name}\": a local revision name is letters, digits, - _ . and under 64 characters"
        ))
    }
}

/// Checks a revision name as the API and the trails accept it: a decimal
/// number, or `locals/NAME` by [`local_revision`]. Anything else (`..`, a
/// path, an empty name) is refused, so a name never leaves `trails/`.
pub fn revision_name(rev: &str) -> std::result::Result<&str, String> {
    if let Some(name) = rev.strip_prefix("locals/") {
        return local_revision(name).map(|_| rev);
    }
    if !rev.is_empty() && rev.len() < 20 && rev.bytes().all(|b| b.is_ascii_digit()) {
        Ok(rev)
    } else {
        Err(format!("\"{rev}\": a revision is a number or locals/NAME"))
    }
}

/// A pvroot at a path.
#[derive(Debug, Clone)]
pub struct Pvroot {
    root: PathBuf,
}

impl Pvroot {
    /// The pvroot at `root`, which must have `trails/`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join(TRAILS).is_dir() {
            return Err(Error::NotPvroot(root.to_path_buf()));
        }
        Ok(Self::at(root))
    }

    /// The pvroot at `root`, to be created.
    pub fn at(root: &Path) -> Self {
        Pvroot {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn trail(&self, rev: &str) -> PathBuf {
        self.root.join(TRAILS).join(rev)
    }

    /// `trails/<rev>/.pvr/json`.
    pub fn state_path(&self, rev: &str) -> PathBuf {
        self.trail(rev).join(TRAIL_STATE)
    }

    pub fn has_revision(&self, rev: &str) -> bool {
        self.state_path(rev).is_file()
    }

    pub fn state(&self, rev: &str) -> Result<State> {
        let path = self.state_path(rev);
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        State::parse(&bytes).map_err(|e| Error::Json {
            what: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Write a revision's state (canonical JSON, atomically).
    pub fn write_state(&self, rev: &str, state: &State) -> Result<()> {
        let path = self.state_path(rev);
        if let Some(dir) = path.parent() {
            crate::store::create_dir_durable(dir)?;
        }
        crate::store::write_atomic(&path, &state.to_canonical())
    }

    /// The boot links of revision `rev` ([`BOOT_LINKS`]): hard links in
    /// `trails/<rev>/.pv/` to the objects its `bsp/run.json` names, each put
    /// in place by a rename, so a bootloader script can load the kernel,
    /// initramfs and device tree of any revision by path. Returns how many
    /// were (re)made; a link already on its object is left.
    pub fn write_boot_links(&self, rev: &str, state: &State) -> Result<usize> {
        let Some(crate::Entry::BspRun(run)) = state.get("bsp/run.json") else {
            return Ok(0);
        };
        let dir = self.trail(rev).join(".pv");
        let mut made = 0;
        for (member, link) in BOOT_LINKS {
            let name = match member {
                "linux" => &run.linux,
                "initrd" => &run.initrd,
                _ => &run.fdt,
            };
            let Some(name) = name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let Some(crate::Entry::Object(id)) = state.get(&format!("bsp/{name}")) else {
                continue;
            };
            let object = self.objects_dir().join(id.as_str());
            let path = dir.join(link);
            use std::os::unix::fs::MetadataExt;
            let same = |a: &Path, b: &Path| match (fs::metadata(a), fs::metadata(b)) {
                (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
                _ => false,
            };
            if same(&object, &path) {
                continue;
            }
            crate::store::create_dir_durable(&dir)?;
            let tmp = dir.join(format!(".{link}.tmp"));
            let _ = fs::remove_file(&tmp);
            fs::hard_link(&object, &tmp).map_err(|e| Error::io(&object, e))?;
            fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            made += 1;
        }
        if made > 0 {
            crate::store::sync_dir(&dir)?;
        }
        Ok(made)
    }

    pub fn objects_dir(&self) -> PathBuf {
        self.root.join(OBJECTS)
    }

    pub fn objects(&self) -> Result<ObjectStore> {
        ObjectStore::open(self.objects_dir())
    }

    pub fn log_dir(&self, rev: &str, name: &str) -> PathBuf {
        self.root.join("logs").join(rev).join(name)
    }

    /// Where a volume of a container lives; `None` for `boot` (and
    /// `built-in`), which live in tmpfs.
    pub fn volume_dir(
        &self,
        rev: &str,
        container: &str,
        volume: &str,
        p: Persistence,
    ) -> Option<PathBuf> {
        match p {
            Persistence::Permanent => {
                Some(self.root.join("disks/perm").join(container).join(volume))
            }
            Persistence::Revision => Some(
                self.root
                    .join("disks/rev")
                    .join(rev)
                    .join(container)
                    .join(volume),
            ),
            Persistence::Boot | Persistence::BuiltIn => None,
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    pub fn user_meta_dir(&self) -> PathBuf {
        self.root.join(USER_META_DIR)
    }

    pub fn factory_package(&self, name: &str) -> PathBuf {
        self.root
            .join(FACTORY_DIR)
            .join(format!("{name}.pvrexport.tgz"))
    }

    /// The revisions installed, by name (numbered and `locals/NAME`).
    pub fn revisions(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join(TRAILS), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let rev = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if e.path().join(TRAIL_STATE).is_file() {
                    out.push(rev);
                } else if prefix.is_empty() && e.path().is_dir() {
                    stack.push((e.path(), rev)); // locals/<name>
                }
            }
        }
        out.sort();
        out
    }

    /// `trails/<rev>/.pv/progress`.
    pub fn progress_path(&self, rev: &str) -> PathBuf {
        self.trail(rev).join(".pv/progress")
    }

    /// The update progress of a revision.
    pub fn progress(&self, rev: &str) -> Option<serde_json::Value> {
        serde_json::from_slice(&fs::read(self.progress_path(rev)).ok()?).ok()
    }

    pub fn set_progress(&self, rev: &str, status: &str, msg: &str, progress: u32) -> Result<()> {
        let path = self.progress_path(rev);
        if let Some(dir) = path.parent() {
            crate::store::create_dir_durable(dir)?;
        }
        let v = serde_json::json!({"status": status, "status-msg": msg, "progress": progress});
        crate::store::write_atomic(&path, v.to_string().as_bytes())
    }

    pub fn commit_message_path(&self, rev: &str) -> PathBuf {
        self.trail(rev).join(".pv/commitmsg")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names() {
        assert_eq!(local_revision("a-1_b.c").unwrap(), "locals/a-1_b.c");
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(64)] {
            assert!(local_revision(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn revisions_and_progress() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(Pvroot::open(tmp.path()).is_err());
        let root = Pvroot::at(tmp.path());
        for rev in ["0", "locals/x"] {
            fs::create_dir_all(root.trail(rev).join(".pvr")).unwrap();
            fs::write(root.state_path(rev), "{}").unwrap();
        }
        fs::create_dir_all(root.trail("locals/empty")).unwrap();
        let root = Pvroot::open(tmp.path()).unwrap();
        assert_eq!(root.revisions(), ["0", "locals/x"]);
        assert!(root.progress("0").is_none());
        root.set_progress("0", "DONE", "ok", 100).unwrap();
        assert_eq!(root.progress("0").unwrap()["status"], "DONE");
    }

    #[test]
    fn boot_links_are_hard_links_to_the_bsp_objects() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = Pvroot::at(tmp.path());
        let objects = ObjectStore::open(root.objects_dir()).unwrap();
        let kernel = objects.put_bytes(b"kernel").unwrap();
        let initrd = objects.put_bytes(b"initrd").unwrap();
        let json = serde_json::json!({
            "#spec": "pantavisor-service-system@1",
            "bsp/run.json": {"linux": "k.img", "initrd": "i.img"},
            "bsp/k.img": kernel.as_str(),
            "bsp/i.img": initrd.as_str(),
        });
        let state = State::parse(json.to_string().as_bytes()).unwrap();
        assert_eq!(root.write_boot_links("locals/a", &state).unwrap(), 2);
        let dir = root.trail("locals/a").join(".pv");
        assert_eq!(fs::read(dir.join("pv-kernel.img")).unwrap(), b"kernel");
        assert_eq!(
            fs::metadata(dir.join("pv-initrd.img")).unwrap().ino(),
            fs::metadata(objects.path(&initrd)).unwrap().ino()
        );
        assert!(!dir.join("pv-fdt.dtb").exists());
        // Again: nothing to do; a state without a BSP has none.
        assert_eq!(root.write_boot_links("locals/a", &state).unwrap(), 0);
        assert_eq!(root.write_boot_links("locals/b", &State::new()).unwrap(), 0);
    }
}
