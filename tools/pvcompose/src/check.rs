//! `pvcompose validate`: check a state JSON file, a trail, a pvr repository,
//! a device storage directory or a pvrexport, and list every problem.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use pvstate::pvrexport;
use pvstate::{Completeness, ObjectStore, Problem, State};

/// The findings for one checked state.
#[derive(Debug)]
pub struct Report {
    /// What was checked (a path, or `path#trail`).
    pub subject: String,
    pub problems: Vec<Problem>,
    /// Keys, containers and objects of the state, for the summary line.
    pub keys: usize,
    pub containers: usize,
    pub objects: usize,
    /// Whether the objects' presence and content were checked.
    pub objects_checked: bool,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    fn from_state(subject: String, state: &State, problems: Vec<Problem>) -> Self {
        Report {
            subject,
            problems,
            keys: state.entries().len(),
            containers: state.containers().len(),
            objects: state.object_ids().len(),
            objects_checked: false,
        }
    }
}

/// What went wrong before anything could be checked.
#[derive(Debug)]
pub enum CheckError {
    Io(PathBuf, std::io::Error),
    Unrecognised(PathBuf),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            CheckError::Unrecognised(p) => write!(
                f,
                "{}: not a state JSON, pvrexport, trail (.pvr/json), pvr repository or storage (trails/)",
                p.display()
            ),
        }
    }
}

impl std::error::Error for CheckError {}

fn is_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b]) || (head.len() >= 262 && &head[257..262] == b"ustar")
}

/// Check whatever `path` is. `partial` accepts states without a BSP.
pub fn check_path(path: &Path, partial: bool) -> Result<Vec<Report>, CheckError> {
    let io = |e| CheckError::Io(path.to_path_buf(), e);
    let meta = fs::metadata(path).map_err(io)?;
    let completeness = if partial {
        Completeness::Partial
    } else {
        Completeness::Full
    };
    if meta.is_file() {
        let mut head = Vec::with_capacity(512);
        File::open(path)
            .map_err(io)?
            .take(512)
            .read_to_end(&mut head)
            .map_err(io)?;
        if is_archive(&head) {
            return Ok(vec![check_pvrexport(path)]);
        }
        let bytes = fs::read(path).map_err(io)?;
        return Ok(vec![check_state_bytes(
            path.display().to_string(),
            &bytes,
            completeness,
            None,
        )]);
    }
    if crate::part::is_part_dir(path) {
        let json = path.join("json");
        let bytes = fs::read(&json).map_err(|e| CheckError::Io(json.clone(), e))?;
        return Ok(vec![check_state_bytes(
            path.display().to_string(),
            &bytes,
            Completeness::Partial,
            Some(&path.join("objects")),
        )]);
    }
    if path.join(".pvr/json").is_file() {
        let objects = [path.join(".pvr/objects"), path.join("../../objects")]
            .into_iter()
            .find(|d| d.is_dir());
        return Ok(vec![check_trail(path, objects.as_deref(), completeness)?]);
    }
    let trails = path.join(pvstate::layout::TRAILS);
    if trails.is_dir() {
        let objects = pvstate::layout::Pvroot::at(path).objects_dir();
        let list = |dir: &Path| -> Result<Vec<PathBuf>, CheckError> {
            Ok(fs::read_dir(dir)
                .map_err(|e| CheckError::Io(dir.to_path_buf(), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect())
        };
        let mut revs = Vec::new();
        for p in list(&trails)? {
            if p.join(".pvr/json").is_file() {
                revs.push(p);
            } else if p.is_dir() {
                // trails/locals/<name>: revisions installed over the socket.
                revs.extend(
                    list(&p)?
                        .into_iter()
                        .filter(|q| q.join(".pvr/json").is_file()),
                );
            }
        }
        revs.sort();
        let mut reports = Vec::new();
        for rev in revs {
            reports.push(check_trail(&rev, Some(&objects), completeness)?);
        }
        if reports.is_empty() {
            return Err(CheckError::Unrecognised(path.to_path_buf()));
        }
        return Ok(reports);
    }
    Err(CheckError::Unrecognised(path.to_path_buf()))
}

fn check_trail(
    dir: &Path,
    objects: Option<&Path>,
    completeness: Completeness,
) -> Result<Report, CheckError> {
    let json = dir.join(".pvr/json");
    let bytes = fs::read(&json).map_err(|e| CheckError::Io(json.clone(), e))?;
    Ok(check_state_bytes(
        dir.display().to_string(),
        &bytes,
        completeness,
        objects,
    ))
}

/// Parse and validate a state, and with an object directory check that every
/// object is there and hashes to its name.
pub fn check_state_bytes(
    subject: String,
    bytes: &[u8],
    completeness: Completeness,
    objects: Option<&Path>,
) -> Report {
    let (state, mut problems) = match State::parse_lenient(bytes) {
        Ok(r) => r,
        Err(e) => {
            return Report {
                subject,
                problems: vec![Problem::new("(state)", e.to_string())],
                keys: 0,
                containers: 0,
                objects: 0,
                objects_checked: false,
            }
        }
    };
    problems.extend(state.validate_as(completeness));
    let mut report = Report::from_state(subject, &state, Vec::new());
    if let Some(dir) = objects {
        report.objects_checked = true;
        match ObjectStore::open(dir) {
            Ok(store) => {
                for (key, id) in state.objects() {
                    if let Err(e) = store.verify(id) {
                        problems.push(Problem::new(key, e.to_string()));
                    }
                }
            }
            Err(e) => problems.push(Problem::new("(objects)", e.to_string())),
        }
    }
    report.problems = problems;
    report
}

fn check_pvrexport(path: &Path) -> Report {
    match pvrexport::import_file(path, None) {
        Ok(imported) => {
            let mut r = Report::from_state(path.display().to_string(), &imported.state, Vec::new());
            r.objects_checked = true;
            r
        }
        Err(e) => Report {
            subject: path.display().to_string(),
            problems: vec![Problem::new("(archive)", e.to_string())],
            keys: 0,
            containers: 0,
            objects: 0,
            objects_checked: false,
        },
    }
}
