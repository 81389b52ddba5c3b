//! The data partition as the daemon sees it: which revision to run, its
//! state, objects, per-container persistent directories and logs.

use std::fs;
use std::path::{Path, PathBuf};

use pvstate::model::Persistence;
use pvstate::{ObjectStore, State};

use crate::error::{Error, Result};

pub struct Storage {
    root: PathBuf,
}

/// Read `key` from a `key=value` file.
fn env_value(path: &Path, key: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

impl Storage {
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join("trails").is_dir() {
            return Err(Error::Other(format!(
                "{}: not a pvroot (no trails/); compose one with `pvcompose pvroot`",
                root.display()
            )));
        }
        Ok(Storage {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The revision the bootloader environment names (`pv_try` while one is
    /// being tried, else `pv_rev`), 0 when it names none.
    pub fn current_revision(&self) -> String {
        for file in ["boot/pv.env", "boot/uboot.txt"] {
            let path = self.root.join(file);
            if let Some(rev) = env_value(&path, "pv_try").filter(|v| !v.is_empty()) {
                return rev;
            }
            if let Some(rev) = env_value(&path, "pv_rev").filter(|v| !v.is_empty()) {
                return rev;
            }
        }
        "0".to_string()
    }

    pub fn state(&self, rev: &str) -> Result<State> {
        let path = self.root.join("trails").join(rev).join(".pvr/json");
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        State::parse(&bytes).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    pub fn objects(&self) -> Result<ObjectStore> {
        Ok(ObjectStore::open(self.root.join("objects"))?)
    }

    /// Where a volume of a container lives on storage; `None` for `boot`
    /// (and `built-in`), which live in tmpfs.
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

    pub fn log_dir(&self, rev: &str, name: &str) -> PathBuf {
        self.root.join("logs").join(rev).join(name)
    }

    pub fn user_meta_dir(&self) -> PathBuf {
        self.root.join("config/user-meta")
    }
}
