//! Composing a container part from a root filesystem directory or tarball.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pvstate::keys::{container_name_problem, path_problem};
use pvstate::model::{SrcManifest, SPEC_SRC};
use pvstate::{Completeness, Entry, ObjectId, ObjectStore, Problems, State};
use serde_json::{json, Map, Value};

use crate::error::{ComposeError, Result};
use crate::report::{PartStats, Reporter};
use crate::spec::ContainerSettings;
use crate::squash::{SquashOptions, SquashWriter};
use crate::tree;

/// One container to compose.
#[derive(Debug, Clone)]
pub struct ContainerJob {
    pub name: String,
    /// A directory, or a tarball (any compression GNU tar reads).
    pub rootfs: PathBuf,
    pub settings: ContainerSettings,
    /// Files overlaid on the container as `_config/<name>/…`.
    pub config_dir: Option<PathBuf>,
    pub squash: SquashOptions,
    /// More members of src.json (e.g. `docker`: the image it was pulled from).
    pub src_extra: Map<String, Value>,
}

/// Check a container name, with the message users see.
pub fn check_name(name: &str) -> Result<()> {
    match container_name_problem(name) {
        Some(why) => Err(ComposeError::input(format!(
            "container name \"{name}\": {why}"
        ))),
        None => Ok(()),
    }
}

/// Unpack a rootfs tarball keeping owners, modes, xattrs and device nodes.
fn unpack_tarball(tarball: &Path, dest: &Path) -> Result<()> {
    let out = Command::new("tar")
        .args([
            "--extract",
            "--preserve-permissions",
            "--same-owner",
            "--numeric-owner",
        ])
        .args(["--xattrs", "--xattrs-include=*", "--file"])
        .arg(tarball)
        .arg("--directory")
        .arg(dest)
        .output()
        .map_err(|e| {
            ComposeError::Tool(format!(
                "cannot run tar to unpack {}: {e}",
                tarball.display()
            ))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(ComposeError::Tool(format!(
            "{}: cannot unpack the rootfs tarball: {first}",
            tarball.display()
        )));
    }
    Ok(())
}

/// The `_config/<name>/…` entries for the files under `dir`.
fn config_overlay(name: &str, dir: &Path, store: &ObjectStore) -> Result<Vec<(String, Entry)>> {
    if !dir.is_dir() {
        return Err(ComposeError::input(format!(
            "{}: config overlay directory not found",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(|e| ComposeError::io(&d, e))? {
            let entry = entry.map_err(|e| ComposeError::io(&d, e))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| ComposeError::io(&path, e))?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if !meta.is_file() {
                return Err(ComposeError::input(format!(
                    "{}: a config overlay holds only regular files and directories",
                    path.display()
                )));
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if let Some(why) = path_problem(&rel) {
                return Err(ComposeError::input(format!("{}: {why}", path.display())));
            }
            let key = format!("_config/{name}/{rel}");
            let data = fs::read(&path).map_err(|e| ComposeError::io(&path, e))?;
            // pvr keeps .json files inline in the state.
            let entry = if rel.ends_with(".json") {
                let v: Value = serde_json::from_slice(&data).map_err(|e| {
                    ComposeError::input(format!(
                        "{}: not valid JSON ({e}); .json files are kept inline in the state",
                        path.display()
                    ))
                })?;
                Entry::Json(v)
            } else {
                Entry::Object(store.put_bytes(&data)?)
            };
            out.push((key, entry));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| ComposeError::io(path, e))?;
    let (id, _) = pvstate::store::hash_reader(&mut f).map_err(|e| ComposeError::io(path, e))?;
    Ok(id.to_string())
}

/// Pack `tree` into a squashfs object of `store`.
pub fn pack_tree(
    label: &str,
    tree_dir: &Path,
    opts: &SquashOptions,
    writer: &dyn SquashWriter,
    store: &ObjectStore,
    reporter: &Reporter,
) -> Result<PartStats> {
    let started = Instant::now();
    let stats = tree::scan(tree_dir, &opts.excludes)?;
    let how = match opts.bcj {
        Some(b) => format!("{}+{b}", opts.comp),
        None => opts.comp.to_string(),
    };
    reporter.start(label, stats.files, stats.bytes, &how);
    let tmp = store.temp_path("root.squashfs");
    let packed = writer
        .write(tree_dir, &tmp, opts)
        .and_then(|_| Ok(store.adopt(&tmp)?));
    let (id, size) = match packed {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let s = PartStats {
        name: label.to_string(),
        entries: stats.entries,
        files: stats.files,
        bytes_in: stats.bytes,
        bytes_out: size,
        object: id.to_string(),
        seconds: started.elapsed().as_secs_f64(),
    };
    reporter.done(&s);
    Ok(s)
}

/// The dm-verity hash tree of object `data` (volume `volume`) as an object
/// of `store`, and the volume's manifest.
pub fn verity_tree(
    store: &ObjectStore,
    data: &ObjectId,
    volume: &str,
) -> Result<(ObjectId, pvstate::verity::Manifest)> {
    let path = store.path(data);
    let mut f = std::io::BufReader::with_capacity(
        1 << 20,
        fs::File::open(&path).map_err(|e| ComposeError::io(&path, e))?,
    );
    let hash_name = format!("{volume}.hash");
    let (device, manifest) =
        pvstate::verity::build(&mut f, data.to_string().as_bytes(), volume, &hash_name)
            .map_err(ComposeError::input)?;
    let tmp = store.temp_path(&hash_name);
    fs::write(&tmp, &device).map_err(|e| ComposeError::io(&tmp, e))?;
    match store.adopt(&tmp) {
        Ok((id, _)) => Ok((id, manifest)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

/// Compose `job` into `store`; `scratch` is a directory for unpacking
/// tarballs. Returns the part's state (validated) and the packing numbers.
pub fn compose(
    job: &ContainerJob,
    writer: &dyn SquashWriter,
    store: &ObjectStore,
    scratch: &Path,
    reporter: &Reporter,
) -> Result<(State, PartStats)> {
    let name = job.name.as_str();
    check_name(name)?;
    job.squash.check()?;
    let meta = fs::metadata(&job.rootfs).map_err(|e| {
        ComposeError::input(format!(
            "rootfs {} of container {name}: {e}",
            job.rootfs.display()
        ))
    })?;
    let unpacked;
    let (rootfs, source) = if meta.is_dir() {
        (job.rootfs.clone(), json!({"type": "dir"}))
    } else {
        unpacked = tempfile::Builder::new()
            .prefix(&format!("rootfs-{name}-"))
            .tempdir_in(scratch)
            .map_err(|e| ComposeError::io(scratch, e))?;
        unpack_tarball(&job.rootfs, unpacked.path())?;
        let sha = sha256_file(&job.rootfs)?;
        (
            unpacked.path().to_path_buf(),
            json!({"type": "tarball", "sha256": sha}),
        )
    };
    // Settings first: a bad setting fails before minutes of compression.
    let mut run = job.settings.run_manifest(name)?;
    let lxc = job.settings.format == Some(pvstate::model::ContainerType::Lxc);
    let oci = job.settings.oci_config(name, &rootfs)?;
    let lxc_text = if lxc {
        Some(job.settings.lxc_config(name, &rootfs)?)
    } else {
        None
    };
    let overlay = match &job.config_dir {
        Some(dir) => config_overlay(name, dir, store)?,
        None => Vec::new(),
    };
    let stats = pack_tree(name, &rootfs, &job.squash, writer, store, reporter)?;

    let mut squash = Map::new();
    squash.insert("writer".into(), json!(writer.describe()));
    squash.insert("comp".into(), json!(job.squash.comp));
    squash.insert("block_size".into(), json!(job.squash.block_size));
    if let Some(b) = job.squash.bcj {
        squash.insert("bcj".into(), json!(b));
    }
    if !job.squash.excludes.is_empty() {
        let ex: Vec<String> = job
            .squash
            .excludes
            .iter()
            .map(|x| x.to_mksquashfs())
            .collect();
        squash.insert("exclude".into(), json!(ex));
    }
    if let Some(t) = job.squash.mtime {
        squash.insert("mtime".into(), json!(t));
    }
    let mut src = Map::new();
    src.insert(
        "template".into(),
        json!(if lxc {
            "pvcompose-lxc"
        } else {
            "pvcompose-oci"
        }),
    );
    src.insert("pvcompose".into(), json!(env!("CARGO_PKG_VERSION")));
    src.insert("rootfs".into(), source);
    src.insert("squashfs".into(), Value::Object(squash));
    src.insert(
        "args".into(),
        serde_json::to_value(&job.settings).unwrap_or_default(),
    );
    for (k, v) in &job.src_extra {
        src.insert(k.clone(), v.clone());
    }

    let mut state = State::new();
    if job.settings.dm_verity {
        let object: ObjectId = stats.object.parse()?;
        let (hash_id, manifest) = verity_tree(store, &object, "root.squashfs")?;
        run.root_volume = "dm:root.squashfs".into();
        state.insert(
            format!("{name}/{}", manifest.hash_device),
            Entry::Object(hash_id),
        );
        state.insert(
            pvstate::verity::manifest_key(name, "root.squashfs"),
            Entry::Json(manifest.to_value()),
        );
    }
    state.insert(format!("{name}/run.json"), Entry::Run(Box::new(run)));
    if !job.settings.provides.is_empty() {
        state.insert(
            format!("{name}/services.json"),
            Entry::Services(pvstate::model::ServicesManifest {
                spec: pvstate::model::SPEC_XCONNECT.into(),
                services: job.settings.provides.clone(),
                extra: Default::default(),
            }),
        );
    }
    match lxc_text {
        // Pantavisor keeps the LXC config as a file (an object).
        Some(text) => {
            let id = store.put_bytes(text.as_bytes())?;
            state.insert(
                format!("{name}/{}", crate::spec::LXC_CONFIG),
                Entry::Object(id),
            );
        }
        None => {
            state.insert(format!("{name}/config.json"), Entry::Json(oci));
        }
    }
    let root: ObjectId = stats.object.parse()?;
    // Its chunk index beside it, for chunk deltas (pvstate::chunks).
    pvstate::chunks::Index::of_file(&store.path(&root))?.save(store)?;
    state.insert(format!("{name}/root.squashfs"), Entry::Object(root));
    state.insert(
        format!("{name}/src.json"),
        Entry::Src(SrcManifest {
            spec: SPEC_SRC.into(),
            extra: src,
        }),
    );
    for (key, entry) in overlay {
        state.insert(key, entry);
    }
    let problems = state.validate_as(Completeness::Partial);
    if !problems.is_empty() {
        return Err(pvstate::Error::Invalid(Problems(problems)).into());
    }
    Ok((state, stats))
}
