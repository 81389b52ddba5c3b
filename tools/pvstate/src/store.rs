//! Content-addressed object store: `<dir>/<sha256>`, the layout of a pvr
//! repository's object pool and of a device's `objects/` directory.
//!
//! Every write goes to a temporary file in the same directory, is hashed while
//! it streams, fsynced, renamed into place and the directory fsynced, so a
//! power cut leaves either no object or a complete one, never a partial one
//! under an object's name.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::object_id::ObjectId;

/// Prefix of temporary files and staging directories; never an object name.
const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct ObjectStore {
    dir: PathBuf,
}

/// The result of a garbage collection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub removed: Vec<ObjectId>,
    pub freed_bytes: u64,
    pub kept: usize,
}

/// fsync a directory so a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Create `dir` and its missing parents so that they survive a power cut:
/// each directory made is recorded by an fsync of its parent (a file
/// written and fsynced in a new directory is otherwise lost with the
/// directory's entry).
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = parent {
        create_dir_durable(p)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    }
    sync_dir(parent.unwrap_or(Path::new(".")))
}

/// Temporary files are created 0600; what they become is for everyone to read.
fn readable(file: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(path, e))
}

/// Write `data` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(data).map_err(|e| Error::io(tmp.path(), e))?;
    readable(tmp.as_file(), tmp.path())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(dir)
}

/// One object being written: see [`ObjectStore::writer`].
pub struct ObjectWriter {
    store: ObjectStore,
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
    expected: Option<ObjectId>,
}

impl ObjectWriter {
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.tmp
            .as_file_mut()
            .write_all(data)
            .map_err(|e| Error::io(self.tmp.path(), e))?;
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(())
    }

    /// Keep the first `len` bytes written at `dest` instead of dropping
    /// them (an interrupted transfer's part, to resume from).
    pub fn keep_prefix(self, len: u64, dest: &Path) -> Result<()> {
        self.tmp
            .as_file()
            .set_len(len)
            .map_err(|e| Error::io(self.tmp.path(), e))?;
        self.tmp
            .persist(dest)
            .map_err(|e| Error::io(dest, e.error))?;
        Ok(())
    }

    /// The store this object goes into.
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// Read back `buf.len()` bytes written at `offset`.
    pub fn read_back(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.tmp
            .as_file()
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(self.tmp.path(), e))
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Check the hash, fsync, rename into place, fsync the directory.
    pub fn finish(self) -> Result<(ObjectId, u64)> {
        let id = ObjectId::from_digest(self.hasher.finalize().into());
        if let Some(expected) = &self.expected {
            if *expected != id {
                // Dropping `tmp` removes the temporary file.
                return Err(Error::HashMismatch {
                    expected: expected.to_string(),
                    actual: id.to_string(),
                });
            }
        }
        let dest = self.store.path(&id);
        if dest.is_file() {
            return Ok((id, self.size));
        }
        readable(self.tmp.as_file(), self.tmp.path())?;
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(self.tmp.path(), e))?;
        self.tmp
            .persist(&dest)
            .map_err(|e| Error::io(&dest, e.error))?;
        sync_dir(&self.store.dir)?;
        Ok((id, self.size))
    }
}

/// Hash everything `reader` yields.
pub fn hash_reader(reader: &mut dyn Read) -> io::Result<(ObjectId, u64)> {
    let mut hasher = Sha256::new();
    let n = io::copy(reader, &mut hasher)?;
    Ok((ObjectId::from_digest(hasher.finalize().into()), n))
}

impl ObjectStore {
    /// Open the store at `dir`, creating the directory when it is missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(ObjectStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, id: &ObjectId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.path(id).is_file()
    }

    /// Store what `reader` yields. With `expected`, content hashing to anything
    /// else is refused and nothing is left behind. Returns the id and size.
    pub fn put(
        &self,
        reader: &mut dyn Read,
        expected: Option<&ObjectId>,
    ) -> Result<(ObjectId, u64)> {
        let mut w = self.writer(expected)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(w.tmp.path(), e)),
            };
            w.write(&buf[..n])?;
        }
        w.finish()
    }

    /// A streaming write of one object, for data that arrives in pieces
    /// (an upload over the control socket): [`ObjectWriter::finish`] checks
    /// the hash and moves it into place; dropped unfinished, nothing remains.
    pub fn writer(&self, expected: Option<&ObjectId>) -> Result<ObjectWriter> {
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        Ok(ObjectWriter {
            store: self.clone(),
            tmp,
            hasher: Sha256::new(),
            size: 0,
            expected: expected.cloned(),
        })
    }

    /// Move a finished file (on the same file system, e.g. written into
    /// [`ObjectStore::temp_path`]) into the store under its hash, without
    /// copying it. Returns the id and size.
    pub fn adopt(&self, path: &Path) -> Result<(ObjectId, u64)> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let (id, size) = hash_reader(&mut f).map_err(|e| Error::io(path, e))?;
        f.sync_all().map_err(|e| Error::io(path, e))?;
        let dest = self.path(&id);
        if dest.is_file() {
            fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        } else {
            fs::rename(path, &dest).map_err(|e| Error::io(&dest, e))?;
        }
        sync_dir(&self.dir)?;
        Ok((id, size))
    }

    /// A fresh path inside the store for a file to be [adopted](Self::adopt);
    /// it is never taken for an object and is removed by [`ObjectStore::gc`].
    pub fn temp_path(&self, hint: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{TEMP_PREFIX}{}-{n}-{hint}", std::process::id()))
    }

    /// Store a byte slice.
    pub fn put_bytes(&self, data: &[u8]) -> Result<ObjectId> {
        Ok(self.put(&mut &data[..], None)?.0)
    }

    /// Store a file by copying it.
    pub fn put_file(&self, path: &Path) -> Result<(ObjectId, u64)> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        self.put(&mut f, None)
    }

    /// Open an object for reading.
    pub fn get(&self, id: &ObjectId) -> Result<File> {
        let path = self.path(id);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::MissingObject(id.to_string())
            } else {
                Error::io(path, e)
            }
        })
    }

    /// Re-hash an object and check it still matches its name.
    pub fn verify(&self, id: &ObjectId) -> Result<()> {
        let mut f = self.get(id)?;
        let (actual, _) = hash_reader(&mut f).map_err(|e| Error::io(self.path(id), e))?;
        if actual != *id {
            return Err(Error::HashMismatch {
                expected: id.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// The ids of all objects in the store (temporary files are not objects).
    pub fn list(&self) -> Result<BTreeSet<ObjectId>> {
        let mut ids = BTreeSet::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Ok(id) = name.parse::<ObjectId>() {
                    ids.insert(id);
                }
            }
        }
        Ok(ids)
    }

    /// Remove every object not in `keep`. Leftover temporary files of
    /// interrupted writes are removed too.
    pub fn gc(&self, keep: &BTreeSet<ObjectId>) -> Result<GcReport> {
        let mut report = GcReport::default();
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX) && path.is_file() {
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                continue;
            }
            // A chunk index goes with its object.
            if let Some(Ok(id)) = name.strip_suffix(".chunks").map(str::parse::<ObjectId>) {
                if !keep.contains(&id) {
                    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
                continue;
            }
            // Parts kept from interrupted transfers, a day after the last.
            if name == ".partial" {
                let day = std::time::Duration::from_secs(24 * 3600);
                for p in fs::read_dir(&path).into_iter().flatten().flatten() {
                    let old = p
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|t| t.elapsed().unwrap_or_default() > day)
                        .unwrap_or(true);
                    if old {
                        let _ = fs::remove_file(p.path());
                    }
                }
                continue;
            }
            let Ok(id) = name.parse::<ObjectId>() else {
                continue;
            };
            if keep.contains(&id) {
                report.kept += 1;
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            report.freed_bytes += size;
            report.removed.push(id);
        }
        sync_dir(&self.dir)?;
        Ok(report)
    }

    /// A staging area inside the store: objects put there become part of the
    /// store only on [`Staging::commit`]; dropped uncommitted, it leaves the
    /// store as it was.
    pub fn staging(&self) -> Result<Staging<'_>> {
        let dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        let inner = ObjectStore {
            dir: dir.path().to_path_buf(),
        };
        Ok(Staging {
            store: self,
            _dir: dir,
            inner,
        })
    }
}

/// Objects written aside, moved into the store all at once.
pub struct Staging<'a> {
    store: &'a ObjectStore,
    _dir: tempfile::TempDir,
    inner: ObjectStore,
}

impl Staging<'_> {
    pub fn put(
        &self,
        reader: &mut dyn Read,
        expected: Option<&ObjectId>,
    ) -> Result<(ObjectId, u64)> {
        if let Some(id) = expected {
            if self.store.contains(id) {
                // Already stored: verify the incoming copy without keeping it.
                let (actual, n) =
                    hash_reader(reader).map_err(|e| Error::io(self.inner.dir(), e))?;
                if actual != *id {
                    return Err(Error::HashMismatch {
                        expected: id.to_string(),
                        actual: actual.to_string(),
                    });
                }
                return Ok((actual, n));
            }
        }
        self.inner.put(reader, expected)
    }

    /// Whether the store or this staging area holds `id`.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.store.contains(id) || self.inner.contains(id)
    }

    /// Move every staged object into the store.
    pub fn commit(self) -> Result<()> {
        for id in self.inner.list()? {
            let dest = self.store.path(&id);
            if !dest.is_file() {
                let src = self.inner.path(&id);
                fs::rename(&src, &dest).map_err(|e| Error::io(&dest, e))?;
            }
        }
        sync_dir(self.store.dir())
    }
}

/// The objects referenced by any revision under `<storage>/trails/`: numbered
/// ones (`trails/<rev>/.pvr/json`) and local ones (`trails/locals/<name>/.pvr/json`).
pub fn trail_references(storage: &Path) -> Result<BTreeSet<ObjectId>> {
    let mut ids = BTreeSet::new();
    let mut dirs = vec![(storage.join(crate::layout::TRAILS), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let json = path.join(crate::layout::TRAIL_STATE);
            let bytes = match fs::read(&json) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A grouping directory such as trails/locals/.
                    if depth == 0 && path.is_dir() {
                        dirs.push((path, depth + 1));
                    }
                    continue;
                }
                Err(e) => return Err(Error::io(&json, e)),
            };
            // A trail whose JSON does not even parse cannot be trusted to name
            // its objects: refuse to collect rather than delete what it may need.
            let (state, _) = crate::State::parse_lenient(&bytes).map_err(|e| match e {
                Error::Json { message, .. } => Error::Json {
                    what: json.display().to_string(),
                    message,
                },
                other => other,
            })?;
            ids.extend(state.object_ids());
        }
    }
    Ok(ids)
}

/// Collect the objects of `<storage>/objects` that no trail references.
pub fn gc_storage(storage: &Path) -> Result<GcReport> {
    let keep = trail_references(storage)?;
    crate::layout::Pvroot::at(storage).objects()?.gc(&keep)
}
