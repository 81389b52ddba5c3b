//! pvrexport archives: a tar (gzip-compressed when named `.tgz`/`.gz`) holding
//! the state as `json` followed by `objects/<sha256>`, as `pvr export` writes.
//!
//! Import trusts nothing: every entry must be `json` or an `objects/<sha>`
//! regular file, every object must hash to its name, and objects land in the
//! store only once the whole archive has been read and checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::{Error, Problems, Result};
use crate::object_id::ObjectId;
use crate::state::State;
use crate::store::{hash_reader, ObjectStore};
use crate::validate::Completeness;

/// Largest `json` entry accepted (a state of thousands of keys is ~1 MiB).
const MAX_JSON: u64 = 64 * 1024 * 1024;

/// How to write an archive.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Only these parts (directories such as `edge-app`, `bsp`, `_config/edge-app`,
    /// or exact keys); all when empty.
    pub parts: Vec<String>,
    /// gzip the tar stream.
    pub gzip: bool,
    /// Modification time of the entries (seconds since the epoch); fixed so
    /// the same state always makes the same archive.
    pub mtime: u64,
}

/// What an import found.
#[derive(Debug)]
pub struct Imported {
    pub state: State,
    /// Objects present in the archive.
    pub objects: BTreeSet<ObjectId>,
    /// Bytes of object data in the archive.
    pub object_bytes: u64,
}

fn header(path: &str, size: u64, mtime: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(|e| Error::io(path, e))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Write `state` (or the selected parts of it) and its objects from `store`.
pub fn export(
    state: &State,
    store: &ObjectStore,
    out: impl Write,
    opts: &ExportOptions,
) -> Result<()> {
    let selected = if opts.parts.is_empty() {
        state.clone()
    } else {
        let parts: Vec<&str> = opts.parts.iter().map(String::as_str).collect();
        state.select_parts(&parts)
    };
    let json = selected.to_canonical();
    let write_err = |e: io::Error| Error::io("<archive>", e);
    let out: Box<dyn Write> = if opts.gzip {
        Box::new(GzEncoder::new(out, Compression::default()))
    } else {
        Box::new(out)
    };
    let mut tar = tar::Builder::new(out);
    tar.append(&header("json", json.len() as u64, opts.mtime)?, &json[..])
        .map_err(write_err)?;
    for id in selected.object_ids() {
        let file = store.get(&id)?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(store.path(&id), e))?
            .len();
        let path = format!("objects/{id}");
        tar.append(&header(&path, size, opts.mtime)?, file)
            .map_err(write_err)?;
    }
    let mut inner = tar.into_inner().map_err(write_err)?;
    inner.flush().map_err(write_err)?;
    Ok(())
}

/// Export to a file, atomically; gzip when the name ends in `.tgz` or `.gz`.
pub fn export_file(
    state: &State,
    store: &ObjectStore,
    path: &Path,
    mut opts: ExportOptions,
) -> Result<()> {
    let lower = path.to_string_lossy().to_lowercase();
    opts.gzip = lower.ends_with(".tgz") || lower.ends_with(".gz");
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    export(state, store, io::BufWriter::new(tmp.as_file_mut()), &opts)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o644);
        tmp.as_file()
            .set_permissions(mode)
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    crate::store::sync_dir(dir)
}

/// Import an archive into `store`; with no store, only check it (every
/// object is hashed, nothing is written). On any error the store is unchanged.
pub fn import(reader: impl Read, archive: &str, store: Option<&ObjectStore>) -> Result<Imported> {
    let mut buffered = BufReader::new(reader);
    let magic = buffered.fill_buf().map_err(|e| Error::io(archive, e))?;
    let gz = magic.starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let bad = |m: String| Error::archive(archive, m);
    let staging = store.map(ObjectStore::staging).transpose()?;
    let mut tar = tar::Archive::new(stream);
    let mut json: Option<Vec<u8>> = None;
    let mut objects = BTreeSet::new();
    let mut object_bytes = 0u64;
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("damaged or truncated: {e}")))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw.trim_start_matches("./").to_string();
        if name.starts_with('/') || name.split('/').any(|c| c == "..") || name.contains('\0') {
            return Err(bad(format!(
                "entry \"{raw}\" escapes the archive (absolute path or '..')"
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if matches!(name.trim_end_matches('/'), "" | "." | "objects") {
                continue;
            }
            return Err(bad(format!("unexpected directory \"{raw}\"")));
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else if kind.is_hard_link() {
                "a hard link"
            } else {
                "not a regular file"
            };
            return Err(bad(format!(
                "entry \"{raw}\" is {what}; a pvrexport holds only regular files"
            )));
        }
        if name == "json" {
            if json.is_some() {
                return Err(bad("two \"json\" entries".into()));
            }
            let mut buf = Vec::new();
            (&mut entry)
                .take(MAX_JSON + 1)
                .read_to_end(&mut buf)
                .map_err(|e| bad(format!("damaged or truncated in \"json\": {e}")))?;
            if buf.len() as u64 > MAX_JSON {
                return Err(bad(format!("\"json\" is larger than {MAX_JSON} bytes")));
            }
            json = Some(buf);
            continue;
        }
        let Some(sha) = name.strip_prefix("objects/") else {
            return Err(bad(format!(
                "unexpected entry \"{raw}\"; expected \"json\" or \"objects/<sha256>\""
            )));
        };
        let id: ObjectId = sha.parse().map_err(|_| {
            bad(format!(
                "entry \"{raw}\": object names are 64 lowercase hex characters"
            ))
        })?;
        object_bytes += take_object(staging.as_ref(), &id, &mut entry, &raw, archive)?;
        objects.insert(id);
    }
    let json = json.ok_or_else(|| bad("no \"json\" entry; not a pvrexport".into()))?;
    finish(archive, &json, objects, object_bytes, staging, store)
}

/// One object of an export, `reader` holding its bytes: into `staging`
/// (checked against `id`), or only hashed; its size.
fn take_object(
    staging: Option<&crate::store::Staging>,
    id: &ObjectId,
    reader: &mut dyn Read,
    raw: &str,
    archive: &str,
) -> Result<u64> {
    let bad = |m: String| Error::archive(archive, m);
    let result = match staging {
        Some(s) => s.put(reader, Some(id)),
        None => hash_reader(reader)
            .map_err(|e| Error::io(raw, e))
            .and_then(|(actual, n)| {
                if actual == *id {
                    Ok((actual, n))
                } else {
                    Err(Error::HashMismatch {
                        expected: id.to_string(),
                        actual: actual.to_string(),
                    })
                }
            }),
    };
    let (_, n) = result.map_err(|e| match e {
        Error::HashMismatch { .. } => bad(format!("{e}")),
        Error::Io { source, .. } => bad(format!("damaged or truncated in \"{raw}\": {source}")),
        other => other,
    })?;
    Ok(n)
}

/// The state of an export once its entries are read: checked, its objects
/// all there, the staged objects committed.
fn finish(
    archive: &str,
    json: &[u8],
    objects: BTreeSet<ObjectId>,
    object_bytes: u64,
    staging: Option<crate::store::Staging>,
    store: Option<&ObjectStore>,
) -> Result<Imported> {
    let bad = |m: String| Error::archive(archive, m);
    let (state, mut problems) = State::parse_lenient(json).map_err(|e| bad(e.to_string()))?;
    problems.extend(state.validate_as(Completeness::Partial));
    if !problems.is_empty() {
        return Err(bad(format!(
            "its state is invalid:\n{}",
            Problems(problems)
        )));
    }
    let mut missing: BTreeMap<&ObjectId, &str> = BTreeMap::new();
    for (key, id) in state.objects() {
        let present = objects.contains(id) || store.is_some_and(|s| s.contains(id));
        if !present {
            missing.entry(id).or_insert(key);
        }
    }
    if let Some((id, key)) = missing.iter().next() {
        return Err(bad(format!(
            "object {id} (\"{key}\") is not in the archive{} ({} object(s) missing; truncated archive?)",
            if store.is_some() { " nor in the store" } else { "" },
            missing.len()
        )));
    }
    if let Some(s) = staging {
        s.commit()?;
    }
    Ok(Imported {
        state,
        objects,
        object_bytes,
    })
}

/// Import from a file path, or from a directory holding an unpacked export
/// (`json` and `objects/<sha256>`).
pub fn import_file(path: &Path, store: Option<&ObjectStore>) -> Result<Imported> {
    if path.is_dir() {
        return import_dir(path, store);
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    import(f, &path.display().to_string(), store)
}

/// An unpacked export: the same checks as the archive's.
fn import_dir(dir: &Path, store: Option<&ObjectStore>) -> Result<Imported> {
    let archive = dir.display().to_string();
    let bad = |m: String| Error::archive(&archive, m);
    let mut json = None;
    let mut objects = BTreeSet::new();
    let mut object_bytes = 0u64;
    let staging = store.map(ObjectStore::staging).transpose()?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let kind = e.file_type().map_err(|err| Error::io(e.path(), err))?;
        match name.as_str() {
            "json" if kind.is_file() => {
                let bytes = std::fs::read(e.path()).map_err(|err| Error::io(e.path(), err))?;
                if bytes.len() as u64 > MAX_JSON {
                    return Err(bad(format!("\"json\" is larger than {MAX_JSON} bytes")));
                }
                json = Some(bytes);
            }
            "objects" if kind.is_dir() => {
                for o in std::fs::read_dir(e.path()).map_err(|err| Error::io(e.path(), err))? {
                    let o = o.map_err(|err| Error::io(e.path(), err))?;
                    let sha = o.file_name().to_string_lossy().into_owned();
                    // A chunk index beside its object (pvcompose writes them):
                    // whoever needs one makes it again from the object.
                    if sha
                        .strip_suffix(".chunks")
                        .is_some_and(|s| s.parse::<ObjectId>().is_ok())
                    {
                        continue;
                    }
                    let raw = format!("objects/{sha}");
                    if !o.file_type().map(|t| t.is_file()).unwrap_or(false) {
                        return Err(bad(format!("\"{raw}\" is not a regular file")));
                    }
                    let id: ObjectId = sha.parse().map_err(|_| {
                        bad(format!(
                            "\"{raw}\": object names are 64 lowercase hex characters"
                        ))
                    })?;
                    let mut f = File::open(o.path()).map_err(|err| Error::io(o.path(), err))?;
                    object_bytes += take_object(staging.as_ref(), &id, &mut f, &raw, &archive)?;
                    objects.insert(id);
                }
            }
            _ => {
                return Err(bad(format!(
                    "unexpected \"{name}\"; an unpacked pvrexport holds \"json\" and \"objects/\""
                )))
            }
        }
    }
    let json = json.ok_or_else(|| bad("no \"json\"; not an unpacked pvrexport".into()))?;
    finish(&archive, &json, objects, object_bytes, staging, store)
}
