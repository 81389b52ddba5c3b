//! Composing the BSP part: kernel, initramfs, device trees and the module and
//! firmware trees, laid out under `bsp/` the way Pantavisor reads them.

use std::fs;
use std::path::{Path, PathBuf};

use pvstate::model::{BspRun, SrcManifest, SPEC_BSP_SRC};
use pvstate::{Completeness, Entry, ObjectStore, Problems, State};
use serde_json::{json, Map};

use crate::container::pack_tree;
use crate::error::{ComposeError, Result};
use crate::report::{PartStats, Reporter};
use crate::squash::{SquashOptions, SquashWriter};

#[derive(Debug, Clone, Default)]
pub struct BspJob {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Device trees; the first is the one booted (`fdt`).
    pub fdts: Vec<PathBuf>,
    pub modules: Option<PathBuf>,
    pub firmware: Option<PathBuf>,
    /// cpio archives merged into the initramfs.
    pub addons: Vec<PathBuf>,
    pub squash: SquashOptions,
}

fn file_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ComposeError::input(format!("{}: not a file name", path.display())))?;
    if matches!(
        name.as_str(),
        "kernel.img"
            | "pantavisor"
            | "modules.squashfs"
            | "firmware.squashfs"
            | "run.json"
            | "src.json"
    ) {
        return Err(ComposeError::input(format!(
            "{}: the name \"{name}\" is taken by the BSP layout; rename the file",
            path.display()
        )));
    }
    Ok(name)
}

/// The directory whose contents become `modules.squashfs`. Pantavisor
/// mounts that image on `/lib/modules/$(uname -r)`, so its root must be one
/// kernel's module directory (`modules.dep` at the top). A tree holding
/// `lib/modules/RELEASE/` (a rootfs, as Yocto deploys it) is accepted when
/// it holds exactly one release.
pub fn modules_root(dir: &Path) -> Result<PathBuf> {
    let lib = dir.join("lib/modules");
    if !lib.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let mut releases: Vec<String> = fs::read_dir(&lib)
        .map_err(|e| ComposeError::io(&lib, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    releases.sort();
    match releases.as_slice() {
        [one] => Ok(lib.join(one)),
        [] => Err(ComposeError::input(format!(
            "{}: no kernel release directory in it",
            lib.display()
        ))),
        many => Err(ComposeError::input(format!(
            "{}: modules of {} kernels ({}); give the one the BSP boots as --modules {}/RELEASE",
            lib.display(),
            many.len(),
            many.join(", "),
            lib.display()
        ))),
    }
}

fn put_file(store: &ObjectStore, path: &Path) -> Result<pvstate::ObjectId> {
    let meta = fs::metadata(path).map_err(|e| ComposeError::io(path, e))?;
    if !meta.is_file() {
        return Err(ComposeError::input(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    Ok(store.put_file(path)?.0)
}

/// Compose the BSP into `store`; module and firmware trees are packed at the
/// same time.
pub fn compose(
    job: &BspJob,
    writer: &dyn SquashWriter,
    store: &ObjectStore,
    reporter: &Reporter,
) -> Result<(State, Vec<PartStats>)> {
    job.squash.check()?;
    let mut state = State::new();
    let mut run = BspRun {
        linux: Some("kernel.img".into()),
        initrd: Some("pantavisor".into()),
        initrd_config: Some(String::new()),
        ..Default::default()
    };
    state.insert(
        "bsp/kernel.img",
        Entry::Object(put_file(store, &job.kernel)?),
    );
    state.insert(
        "bsp/pantavisor",
        Entry::Object(put_file(store, &job.initrd)?),
    );
    for (i, fdt) in job.fdts.iter().enumerate() {
        let name = file_name(fdt)?;
        if state.contains(&format!("bsp/{name}")) {
            return Err(ComposeError::input(format!(
                "{}: two BSP files named \"{name}\"",
                fdt.display()
            )));
        }
        state.insert(format!("bsp/{name}"), Entry::Object(put_file(store, fdt)?));
        if i == 0 {
            run.fdt = Some(name);
        }
    }
    let mut addons = Vec::new();
    for addon in &job.addons {
        let name = file_name(addon)?;
        if state.contains(&format!("bsp/{name}")) {
            return Err(ComposeError::input(format!(
                "{}: two BSP files named \"{name}\"",
                addon.display()
            )));
        }
        state.insert(
            format!("bsp/{name}"),
            Entry::Object(put_file(store, addon)?),
        );
        addons.push(name);
    }
    if !addons.is_empty() {
        run.addons = Some(addons);
    }
    let modules = job.modules.as_deref().map(modules_root).transpose()?;
    let trees: Vec<(&str, &PathBuf)> = [("modules", &modules), ("firmware", &job.firmware)]
        .into_iter()
        .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
        .collect();
    let packed: Vec<Result<PartStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = trees
            .iter()
            .map(|(what, dir)| {
                s.spawn(move || {
                    pack_tree(
                        &format!("bsp/{what}"),
                        dir,
                        &job.squash,
                        writer,
                        store,
                        reporter,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ComposeError::Tool("packing thread panicked".into())))
            })
            .collect()
    });
    let mut stats = Vec::new();
    for ((what, _), result) in trees.iter().zip(packed) {
        let s = result?;
        let file = format!("{what}.squashfs");
        state.insert(format!("bsp/{file}"), Entry::Object(s.object.parse()?));
        match *what {
            "modules" => run.modules = Some(file),
            _ => run.firmware = Some(file),
        }
        stats.push(s);
    }
    state.insert("bsp/run.json", Entry::BspRun(run));
    let mut src = Map::new();
    src.insert("pvcompose".into(), json!(env!("CARGO_PKG_VERSION")));
    src.insert("writer".into(), json!(writer.describe()));
    state.insert(
        "bsp/src.json",
        Entry::Src(SrcManifest {
            spec: SPEC_BSP_SRC.into(),
            extra: src,
        }),
    );
    let problems = state.validate_as(Completeness::Partial);
    if !problems.is_empty() {
        return Err(pvstate::Error::Invalid(Problems(problems)).into());
    }
    Ok((state, stats))
}
