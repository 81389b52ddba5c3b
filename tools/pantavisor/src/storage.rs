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

    pub fn trail(&self, rev: &str) -> PathBuf {
        self.root.join("trails").join(rev)
    }

    /// The revisions installed, by name.
    pub fn revisions(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join("trails"), String::new())];
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
                if e.path().join(".pvr/json").is_file() {
                    out.push(rev);
                } else if prefix.is_empty() && e.path().is_dir() {
                    stack.push((e.path(), rev)); // locals/<name>
                }
            }
        }
        out.sort();
        out
    }

    /// The update progress of a revision (`trails/<rev>/.pv/progress`).
    pub fn progress(&self, rev: &str) -> Option<serde_json::Value> {
        let path = self.trail(rev).join(".pv/progress");
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    pub fn set_progress(&self, rev: &str, status: &str, msg: &str, progress: u32) -> Result<()> {
        let dir = self.trail(rev).join(".pv");
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let v = serde_json::json!({"status": status, "status-msg": msg, "progress": progress});
        pvstate::store::write_atomic(&dir.join("progress"), v.to_string().as_bytes())?;
        Ok(())
    }

    pub fn user_meta_dir(&self) -> PathBuf {
        self.root.join("config/user-meta")
    }
}
