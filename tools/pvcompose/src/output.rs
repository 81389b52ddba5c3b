//! Output directories that appear whole or not at all: everything is written
//! into a staging directory beside the target and renamed into place at the
//! end; an error (or a panic, or a kill) leaves at most a hidden staging
//! directory, never a half-written output.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{ComposeError, Result};

pub struct StagedDir {
    target: PathBuf,
    staging: Option<tempfile::TempDir>,
}

impl StagedDir {
    /// Prepare to write `target`; its parent must exist.
    pub fn new(target: &Path) -> Result<Self> {
        let name = target.file_name().ok_or_else(|| {
            ComposeError::input(format!("{}: not a usable output path", target.display()))
        })?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(ComposeError::input(format!(
                "{}: the output's parent directory does not exist",
                parent.display()
            )));
        }
        if target.exists() && !target.is_dir() {
            return Err(ComposeError::input(format!(
                "{}: exists and is not a directory",
                target.display()
            )));
        }
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{}.tmp-", name.to_string_lossy()))
            .tempdir_in(&parent)
            .map_err(|e| ComposeError::io(&parent, e))?;
        Ok(StagedDir {
            target: target.to_path_buf(),
            staging: Some(staging),
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        self.staging
            .as_ref()
            .map(|s| s.path())
            .unwrap_or(&self.target)
    }

    /// Put the staged directory in place of the target (replacing an older one).
    pub fn commit(mut self) -> Result<PathBuf> {
        let staging = self.staging.take().expect("commit once").keep();
        // Directories are made 0700 by tempfile; an output is for others too.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
            .map_err(|e| ComposeError::io(&staging, e))?;
        let parent = staging.parent().unwrap_or(Path::new(".")).to_path_buf();
        if self.target.exists() {
            let old = tempfile::Builder::new()
                .prefix(".old-")
                .tempdir_in(&parent)
                .map_err(|e| ComposeError::io(&parent, e))?
                .keep();
            let aside = old.join("previous");
            fs::rename(&self.target, &aside).map_err(|e| ComposeError::io(&self.target, e))?;
            fs::rename(&staging, &self.target).map_err(|e| ComposeError::io(&self.target, e))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&staging, &self.target).map_err(|e| ComposeError::io(&self.target, e))?;
        }
        pvstate::store::sync_dir(&parent)?;
        Ok(self.target.clone())
    }
}
