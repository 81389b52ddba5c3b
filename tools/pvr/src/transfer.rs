//! Moving states in and out: `clone`, `get`, `import`/`merge`, `deploy`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pvctrl::Client as Device;
use pvstate::State;
use serde_json::json;

use crate::error::{Error, Result};
use crate::remote;
use crate::repo::Repo;

/// The device's running revision: its name and state, objects fetched into
/// `pool` (those it lacks).
pub(crate) fn fetch_device(
    device: &Device,
    pool: &pvstate::ObjectStore,
) -> Result<(String, State)> {
    let rev = device.json("GET", "/device-meta", b"")?["pantavisor.revision"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Remote("device-meta names no revision".into()))?;
    let value = device.json("GET", &format!("/steps/{rev}"), b"")?;
    let state = State::parse(&pvstate::canonical::to_vec(&value))?;
    let ids = state.object_ids();
    for (n, id) in ids.iter().enumerate() {
        if pool.contains(id) {
            continue;
        }
        let reply = device.call("GET", &format!("/objects/{id}"), b"")?;
        if reply.status != 200 {
            return Err(Error::Remote(format!("object {id}: {}", reply.status)));
        }
        let bytes = reply.body;
        pool.put(&mut &bytes[..], Some(id))?;
        eprintln!(
            "[{}/{}] {} ({} bytes)",
            n + 1,
            ids.len(),
            &id.to_string()[..12],
            bytes.len()
        );
    }
    Ok((rev, state))
}

/// Another repository's committed state, its objects copied into `pool`.
pub(crate) fn fetch_repo(path: &Path, pool: &pvstate::ObjectStore) -> Result<State> {
    let other = Repo::open(path)?;
    let state = other.committed()?;
    let other_pool = other.pool()?;
    for (_, id) in state.objects() {
        if !pool.contains(id) {
            let from = other_pool.path(id);
            let mut f = std::fs::File::open(&from).map_err(|e| Error::io(&from, e))?;
            pool.put(&mut f, Some(id))?;
        }
    }
    Ok(state)
}

pub(crate) fn clone(target: &str, dir: &Path, token: Option<String>) -> Result<()> {
    let device = remote::device(target, token)?;
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(Error::Usage(format!("{}: not empty", dir.display())));
    }
    // A clone that fails leaves nothing behind: the retry starts clean.
    clone_into(&device, dir).inspect_err(|_| {
        if existed {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    })
}

pub(crate) fn clone_into(device: &Device, dir: &Path) -> Result<()> {
    let repo = Repo::init(dir)?;
    let (rev, state) = fetch_device(device, &repo.pool()?)?;
    repo.write_committed(&state)?;
    repo.set_config(&json!({"remote": device.target().to_string(), "revision": rev}))?;
    repo.checkout(&state)?;
    println!(
        "cloned revision {rev} ({} objects) into {}",
        state.object_ids().len(),
        dir.display()
    );
    Ok(())
}

/// `pvr get [SOURCE][#PART,...]`: the state of a device, another repository
/// or a pvrexport — whole, or only the parts named — into the committed
/// state, checked out.
pub(crate) fn get(dir: &Path, source: Option<String>, token: Option<String>) -> Result<()> {
    let repo = Repo::open(dir)?;
    let source = match source {
        Some(s) => s,
        None => repo.config()["remote"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                Error::Usage("no source given and the repository has no remote".into())
            })?,
    };
    let (from, parts) = match source.rsplit_once('#') {
        Some((f, p)) => (
            f.to_string(),
            p.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        None => (source.clone(), Vec::<String>::new()),
    };
    let pool = repo.pool()?;
    let path = Path::new(&from);
    let incoming = if path.join(".pvr").is_dir() {
        fetch_repo(path, &pool)?
    } else if path.is_file() {
        pvstate::pvrexport::import_file(path, Some(&pool))?.state
    } else {
        fetch_device(&remote::device(&from, token)?, &pool)?.1
    };
    let state = if parts.is_empty() {
        incoming
    } else {
        for p in &parts {
            if incoming.part_keys(p).is_empty() && incoming.get(p).is_none() {
                return Err(Error::Usage(format!("{from}: unknown part \"{p}\"")));
            }
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut state = repo.committed()?;
        merge_parts(&mut state, &incoming.select_parts(&refs));
        state
    };
    repo.write_committed(&state)?;
    repo.checkout(&state)?;
    println!(
        "got {} from {from}",
        if parts.is_empty() {
            "the whole state".to_string()
        } else {
            parts.join(", ")
        }
    );
    Ok(())
}

/// Put the parts `incoming` holds into `state`, each replacing the part of
/// the same name whole (its NAME/, _config/NAME/ and _sigs/NAME.json keys).
pub(crate) fn merge_parts(state: &mut State, incoming: &State) {
    let parts: BTreeSet<String> = incoming
        .entries()
        .keys()
        .filter(|k| *k != "#spec")
        .map(|k| match k.split('/').collect::<Vec<_>>().as_slice() {
            ["_config", c, ..] | ["_sigs", c] => c.trim_end_matches(".json").to_string(),
            [c, ..] => c.to_string(),
            _ => k.clone(),
        })
        .collect();
    for p in &parts {
        let keys: Vec<String> = state.part_keys(p).into_iter().map(str::to_string).collect();
        for k in keys {
            state.remove(&k);
        }
    }
    for (k, e) in incoming.entries() {
        if k != "#spec" {
            state.insert(k.clone(), e.clone());
        }
    }
}

pub(crate) fn import(dir: &Path, file: &Path, merge: bool) -> Result<()> {
    let repo = Repo::open(dir)?;
    let imported = pvstate::pvrexport::import_file(file, Some(&repo.pool()?))?;
    let state = if merge {
        let mut state = repo.committed()?;
        merge_parts(&mut state, &imported.state);
        state
    } else {
        imported.state
    };
    repo.write_committed(&state)?;
    repo.checkout(&state)?;
    println!(
        "{} {} ({} objects)",
        if merge { "merged" } else { "imported" },
        file.display(),
        imported.objects.len()
    );
    Ok(())
}

pub(crate) fn deploy(storage: &Path, exports: &[PathBuf]) -> Result<()> {
    let pvroot = pvstate::layout::Pvroot::at(storage);
    let store = pvroot.objects()?;
    let mut merged = match std::fs::read(pvroot.state_path("0")) {
        Ok(bytes) => State::parse_lenient(&bytes)?.0,
        Err(_) => State::new(),
    };
    for file in exports {
        let imported = pvstate::pvrexport::import_file(file, Some(&store))?;
        merge_parts(&mut merged, &imported.state);
        println!(
            "deployed {} ({} objects)",
            file.display(),
            imported.objects.len()
        );
    }
    let problems = merged.validate_as(pvstate::Completeness::Partial);
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "the deployed revision is not valid: {}",
            pvstate::Problems(problems).to_string().replace('\n', "; ")
        )));
    }
    pvroot.write_state("0", &merged)?;
    Ok(())
}
