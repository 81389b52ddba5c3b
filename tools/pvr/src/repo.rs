//! A pvr repository: a working tree of the state's files, `.pvr/json` (the
//! committed state, canonical JSON), `.pvr/config` and the object pool
//! `.pvr/objects/`, as Pantavisor's pvr lays them out.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use pvstate::{Entry, ObjectStore, State};
use serde_json::{json, Value};

use crate::error::{Error, Result};

pub struct Repo {
    dir: PathBuf,
}

fn canonical_pretty(v: &Value) -> Vec<u8> {
    // Working-tree JSON files are for people: indented, keys sorted.
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

impl Repo {
    pub fn init(dir: &Path) -> Result<Self> {
        let pvr = dir.join(".pvr");
        if pvr.exists() {
            return Err(Error::Usage(format!(
                "{}: already a pvr repository",
                dir.display()
            )));
        }
        fs::create_dir_all(pvr.join("objects")).map_err(|e| Error::io(&pvr, e))?;
        let repo = Repo {
            dir: dir.to_path_buf(),
        };
        repo.write_committed(&State::new())?;
        repo.set_config(&json!({}))?;
        Ok(repo)
    }

    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(".pvr/json").is_file() {
            return Err(Error::Usage(format!(
                "{}: not a pvr repository (no .pvr/json); use pvr init or pvr clone",
                dir.display()
            )));
        }
        Ok(Repo {
            dir: dir.to_path_buf(),
        })
    }

    /// The repository's directory (the working tree).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pool(&self) -> Result<ObjectStore> {
        Ok(ObjectStore::open(self.dir.join(".pvr/objects"))?)
    }

    pub fn config(&self) -> Value {
        fs::read(self.dir.join(".pvr/config"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({}))
    }

    pub fn set_config(&self, v: &Value) -> Result<()> {
        pvstate::store::write_atomic(&self.dir.join(".pvr/config"), &canonical_pretty(v))?;
        Ok(())
    }

    pub fn committed(&self) -> Result<State> {
        let path = self.dir.join(".pvr/json");
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let (state, problems) = State::parse_lenient(&bytes)?;
        if !problems.is_empty() {
            return Err(Error::Usage(format!(
                "{}: {}",
                path.display(),
                pvstate::Problems(problems)
            )));
        }
        Ok(state)
    }

    pub fn write_committed(&self, state: &State) -> Result<()> {
        pvstate::store::write_atomic(&self.dir.join(".pvr/json"), &state.to_canonical())?;
        Ok(())
    }

    /// The files of the working tree, by key (`.pvr` left out).
    fn working_files(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
                let e = e.map_err(|e| Error::io(&d, e))?;
                let path = e.path();
                if path == self.dir.join(".pvr") {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    let key = path
                        .strip_prefix(&self.dir)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .into_owned();
                    out.push((key, path));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The state the working tree describes; objects are added to the pool
    /// when `store` is true (commit), only hashed otherwise (status).
    pub fn working_state(&self, store: bool) -> Result<State> {
        let mut map = serde_json::Map::new();
        map.insert("#spec".into(), json!(pvstate::model::SPEC_STATE));
        let pool = self.pool()?;
        for (key, path) in self.working_files()? {
            let value = if key.ends_with(".json") {
                let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Usage(format!("{key}: not valid JSON: {e}")))?
            } else if store {
                json!(pool.put_file(&path)?.0.to_string())
            } else {
                let mut f = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                json!(pvstate::store::hash_reader(&mut f)
                    .map_err(|e| Error::io(&path, e))?
                    .0
                    .to_string())
            };
            map.insert(key, value);
        }
        let (state, problems) =
            State::parse_lenient(&pvstate::canonical::to_vec(&Value::Object(map)))?;
        if !problems.is_empty() {
            return Err(Error::Usage(format!(
                "the working tree is not a valid state: {}",
                pvstate::Problems(problems).to_string().replace('\n', "; ")
            )));
        }
        Ok(state)
    }

    /// Write the files of `state` into the working tree, removing those of
    /// keys it no longer has.
    pub fn checkout(&self, state: &State) -> Result<()> {
        let pool = self.pool()?;
        let keep: BTreeSet<&String> = state.entries().keys().collect();
        for (key, path) in self.working_files()? {
            if !keep.contains(&key) {
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        for (key, entry) in state.entries() {
            if key == "#spec" {
                continue;
            }
            self.write_entry(&pool, key, entry)?;
        }
        // Directories a removed container leaves empty.
        for d in fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .flatten()
        {
            if d.path().is_dir() && d.file_name() != ".pvr" {
                let _ = remove_empty_dirs(&d.path());
            }
        }
        Ok(())
    }

    /// Replace every file of part `name` (NAME/…, _config/NAME/…) in the
    /// working tree with the entries of `part`.
    pub fn replace_part(&self, name: &str, part: &State) -> Result<()> {
        for dir in [self.dir.join(name), self.dir.join("_config").join(name)] {
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
        }
        let pool = self.pool()?;
        for (key, entry) in part.entries() {
            if key == "#spec" {
                continue;
            }
            self.write_entry(&pool, key, entry)?;
        }
        Ok(())
    }

    /// Write one key's file: objects hard-linked from the pool (copied across
    /// file systems), documents as indented JSON.
    fn write_entry(&self, pool: &ObjectStore, key: &str, entry: &Entry) -> Result<()> {
        let path = self.dir.join(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        match entry {
            Entry::Object(id) => {
                let _ = fs::remove_file(&path);
                fs::hard_link(pool.path(id), &path)
                    .or_else(|_| fs::copy(pool.path(id), &path).map(|_| ()))
                    .map_err(|e| Error::io(&path, e))
            }
            other => fs::write(&path, canonical_pretty(&other.to_value()))
                .map_err(|e| Error::io(&path, e)),
        }
    }

    pub fn write_file(&self, key: &str, value: &Value) -> Result<()> {
        let path = self.dir.join(key);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fs::write(&path, canonical_pretty(value)).map_err(|e| Error::io(&path, e))
    }
}

fn remove_empty_dirs(dir: &Path) -> std::io::Result<bool> {
    let mut empty = true;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.path().is_dir() {
            if !remove_empty_dirs(&e.path())? {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    if empty {
        fs::remove_dir(dir)?;
    }
    Ok(empty)
}
