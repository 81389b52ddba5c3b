//! Parts on disk. A composed part is a directory holding `json` (the part's
//! state, canonical) and `objects/<sha256>`: an unpacked pvrexport. Parts are
//! also read from pvrexport archives.

use std::fs;
use std::path::Path;

use pvstate::pvrexport;
use pvstate::{Completeness, ObjectStore, Problems, State};

use crate::error::{ComposeError, Result};

/// Write a part's `json`, validated as a partial state.
pub fn write_json(dir: &Path, state: &State) -> Result<()> {
    let problems = state.validate_as(Completeness::Partial);
    if !problems.is_empty() {
        return Err(pvstate::Error::Invalid(Problems(problems)).into());
    }
    pvstate::store::write_atomic(&dir.join("json"), &state.to_canonical())?;
    Ok(())
}

/// Whether `path` looks like a part directory.
pub fn is_part_dir(path: &Path) -> bool {
    path.join("json").is_file() && path.join("objects").is_dir()
}

/// Read the part at `path` (a part directory or a pvrexport) and bring its
/// objects into `store`, each verified against its name.
pub fn load_into(path: &Path, store: &ObjectStore) -> Result<State> {
    if path.is_dir() {
        if !is_part_dir(path) {
            return Err(ComposeError::input(format!(
                "{}: not a part (no json and objects/) and not a pvrexport",
                path.display()
            )));
        }
        let json = path.join("json");
        let bytes = fs::read(&json).map_err(|e| ComposeError::io(&json, e))?;
        let (state, mut problems) = State::parse_lenient(&bytes)
            .map_err(|e| ComposeError::input(format!("{}: {e}", json.display())))?;
        problems.extend(state.validate_as(Completeness::Partial));
        if !problems.is_empty() {
            return Err(ComposeError::input(format!(
                "{}: invalid part state: {}",
                json.display(),
                Problems(problems).to_string().replace('\n', "; ")
            )));
        }
        let objects = path.join("objects");
        for id in state.object_ids() {
            if store.contains(&id) {
                continue;
            }
            let src = objects.join(id.as_str());
            let mut f = fs::File::open(&src).map_err(|e| ComposeError::io(&src, e))?;
            store
                .put(&mut f, Some(&id))
                .map_err(|e| ComposeError::input(format!("{}: {e}", src.display())))?;
        }
        Ok(state)
    } else if path.is_file() {
        Ok(pvrexport::import_file(path, Some(store))?.state)
    } else {
        Err(ComposeError::input(format!(
            "{}: no such part",
            path.display()
        )))
    }
}
