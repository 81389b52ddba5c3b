//! `pvr post` (upload what the device lacks, run, follow) and `pvr diff`.

use std::collections::BTreeSet;
use std::path::Path;

use clap::Args;
use pvctrl::Client as Device;
use pvstate::diff::plan;
use pvstate::State;
use serde_json::{json, Value};

use crate::device::device_of;
use crate::error::{Error, Result};
use crate::remote;
use crate::repo::Repo;

/// Follow revision `rev`'s progress on `device` to its end, through the
/// device's reboots; each change printed. Err with the exit code of a bad end.
pub(crate) fn follow(device: &Device, rev: &str, timeout: std::time::Duration) -> Result<()> {
    let start = std::time::Instant::now();
    let mut last = String::new();
    let mut away = false;
    loop {
        match device.json("GET", &format!("/steps/{rev}/progress"), b"") {
            Ok(p) => {
                away = false;
                let status = p["status"].as_str().unwrap_or("?").to_string();
                let msg = p["status-msg"].as_str().unwrap_or("").to_string();
                let line = format!("{status} ({}%) {msg}", p["progress"].as_u64().unwrap_or(0));
                if line != last {
                    println!("{rev}: {line}");
                    last = line;
                }
                let bad = match status.as_str() {
                    "DONE" | "UPDATED" => return Ok(()),
                    "ERROR" => Some(3),
                    "WONTGO" => Some(4),
                    _ => None,
                };
                if let Some(code) = bad {
                    // ERROR is set when the try fails; the rollback follows:
                    // name the revision the device runs once it moved off.
                    let running = || {
                        device
                            .json("GET", "/device-meta", b"")
                            .ok()
                            .and_then(|m| m["pantavisor.revision"].as_str().map(str::to_string))
                    };
                    let settle = std::time::Instant::now();
                    let mut now = running();
                    while now.as_deref() == Some(rev)
                        && settle.elapsed() < std::time::Duration::from_secs(60)
                    {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        now = running();
                    }
                    let now = now
                        .map(|r| format!("; the device runs {r}"))
                        .unwrap_or_default();
                    return Err(Error::Outcome {
                        code,
                        message: format!("{rev}: {status}: {msg}{now}"),
                    });
                }
            }
            Err(e) => {
                if !away {
                    println!("{rev}: the device does not answer ({e}); waiting for it (a reboot?)");
                    away = true;
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(Error::Outcome {
                code: 5,
                message: format!(
                    "{rev}: no end within {} s (last: {last})",
                    timeout.as_secs()
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Bytes of these objects in the pool.
pub(crate) fn pool_bytes<'a>(
    pool: &pvstate::ObjectStore,
    ids: impl Iterator<Item = &'a pvstate::ObjectId>,
) -> u64 {
    ids.map(|id| {
        std::fs::metadata(pool.path(id))
            .map(|m| m.len())
            .unwrap_or(0)
    })
    .sum()
}

/// What the device reports free beyond its reserve (device metadata
/// `storage.real_free`, a JSON object or, as Pantavisor writes it, a JSON
/// string); `None` when it does not say.
pub(crate) fn device_room(device: &Device) -> Option<u64> {
    let meta = device.json("GET", "/device-meta", b"").ok()?;
    let storage = match &meta["storage"] {
        serde_json::Value::String(s) => serde_json::from_str(s).ok()?,
        other => other.clone(),
    };
    storage["real_free"].as_u64()
}

/// Refuse an update whose objects do not fit on the device before any byte
/// of it is sent; when they do not, ask the device to collect first.
pub(crate) fn room_for(device: &Device, bytes: u64) -> Result<()> {
    let Some(have) = device_room(device) else {
        return Ok(());
    };
    if bytes <= have {
        return Ok(());
    }
    let _ = device.json("POST", "/commands", br#"{"op":"RUN_GC","payload":""}"#);
    match device_room(device) {
        Some(have) if bytes > have => Err(Error::Remote(format!(
            "not enough space on the device: the update needs {bytes} bytes, {have} are free beyond its reserve; nothing was sent"
        ))),
        _ => Ok(()),
    }
}

/// One object of `count` sent: a bar redrawn in place on a terminal, a
/// line per object otherwise (logs, CI).
pub(crate) fn upload_progress(k: usize, count: usize, id: &str, n: u64, so_far: u64, total: u64) {
    use std::io::IsTerminal;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if std::io::stderr().is_terminal() {
        let width = 30;
        let filled = (so_far.min(total) * width / total.max(1)) as usize;
        eprint!(
            "\r[{}{}] {:3}% {:.1}/{:.1} MiB, {k}/{count} objects",
            "#".repeat(filled),
            " ".repeat(width as usize - filled),
            so_far.min(total) * 100 / total.max(1),
            mib(so_far),
            mib(total)
        );
        if k == count {
            eprintln!();
        }
    } else {
        eprintln!(
            "[{k}/{count}] sent {id} ({n} bytes; {:.1} of {:.1} MiB)",
            mib(so_far),
            mib(total)
        );
    }
}

/// The revision the device runs (`0` when its metadata names none) and
/// its state.
pub(crate) fn running_state(device: &Device) -> Result<(String, State)> {
    let rev = device.json("GET", "/device-meta", b"")?["pantavisor.revision"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let state = State::parse(&pvstate::canonical::to_vec(&device.json(
        "GET",
        &format!("/steps/{rev}"),
        b"",
    )?))?;
    Ok((rev, state))
}

/// The ids of the objects the device has.
pub(crate) fn device_objects(device: &Device) -> Result<BTreeSet<String>> {
    Ok(device
        .json("GET", "/objects", b"")?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// The working tree against the committed state: changed keys with both values.
pub(crate) fn local_diff(dir: &Path) -> Result<()> {
    let repo = Repo::open(dir)?;
    let (old, new) = (repo.committed()?, repo.working_state(false)?);
    let mut out = serde_json::Map::new();
    for k in pvstate::diff::changed_keys(&old, &new) {
        let value = |s: &State| s.get(k).map(|e| e.to_value());
        out.insert(
            k.clone(),
            json!({"committed": value(&old), "working": value(&new)}),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default()
    );
    Ok(())
}

pub(crate) fn diff(dir: &Path, device: Option<String>, token: Option<String>) -> Result<()> {
    let repo = Repo::open(dir)?;
    let device = device_of(&repo, device, token)?;
    let (rev, running) = running_state(&device)?;
    let ours = repo.committed()?;
    let (_, t) = plan(&running, &ours);
    let have = device_objects(&device)?;
    let pool = repo.pool()?;
    let missing: Vec<_> = ours
        .object_ids()
        .into_iter()
        .filter(|id| !have.contains(id.as_str()))
        .collect();
    let bytes = pool_bytes(&pool, missing.iter());
    // What chunk deltas against the device's objects would send instead.
    let preds = crate::delta::predecessors(&ours, &running, &have, &pool);
    let mut with_chunks = 0u64;
    for id in &missing {
        let whole = pool_bytes(&pool, std::iter::once(id));
        with_chunks += match preds.get(id) {
            Some(base) => crate::delta::worth(&pool, id, base)?.map_or(whole, |p| p.send_bytes),
            None => whole,
        };
    }
    println!("against the device's revision {rev}:");
    println!(
        "  transition: {}",
        if t.reboot {
            format!("reboot ({})", t.reasons.join("; "))
        } else {
            "no reboot".into()
        }
    );
    println!(
        "  restart: {:?}  start: {:?}  stop: {:?}",
        t.restart, t.start, t.stop
    );
    println!("  objects to send: {} ({} bytes)", missing.len(), bytes);
    println!(
        "  with chunk deltas: {with_chunks} bytes ({} object(s) against the device's copy of their predecessor)",
        preds.len()
    );
    Ok(())
}

/// Post the committed state to `device` as `rev`; returns the revision name.
pub(crate) fn post(
    dir: &Path,
    device: &Device,
    rev: Option<String>,
    message: Option<String>,
    force: bool,
) -> Result<String> {
    let repo = Repo::open(dir)?;
    let state = repo.committed()?;
    let rev = rev.unwrap_or_else(|| format!("locals/pvr-{}", &state.id().to_string()[..12]));
    // The device's rule for local revision names, checked before any upload.
    match rev.strip_prefix("locals/") {
        Some(name) => {
            pvstate::layout::local_revision(name)
                .map_err(|e| Error::Usage(format!("--rev {rev}: {e}")))?;
        }
        None => {
            return Err(Error::Usage(format!(
                "--rev {rev}: a device's control socket takes locals/NAME revisions"
            )))
        }
    }
    // Ask what the device has; send only the rest. A post interrupted earlier
    // resumes here: what arrived is not sent again.
    let have = if force {
        BTreeSet::new()
    } else {
        device_objects(device)?
    };
    let pool = repo.pool()?;
    let ids = state.object_ids();
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !have.contains(id.as_str()))
        .collect();
    let total = pool_bytes(&pool, ids.iter());
    let to_send = pool_bytes(&pool, missing.iter().copied());
    // The device stores each object whole, however it is sent.
    room_for(device, to_send)?;
    // Objects whose predecessor the device runs go as chunk deltas.
    let preds = if force {
        Default::default()
    } else {
        running_state(device)
            .map(|(_, running)| crate::delta::predecessors(&state, &running, &have, &pool))
            .unwrap_or_default()
    };
    let by_delta = std::sync::atomic::AtomicU64::new(0);
    let whole_of_delta = std::sync::atomic::AtomicU64::new(0);
    // Up to four uploads at once, each on its own connection.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let sent_objects = std::sync::atomic::AtomicU64::new(0);
    let failure: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..missing.len().min(4) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= missing.len() || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    break;
                }
                let id = missing[i];
                let path = pool.path(id);
                let delta = preds.get(id).and_then(|base| {
                    crate::delta::put_delta(device, &pool, id, base)
                        .ok()
                        .flatten()
                });
                let result = match delta {
                    Some(n) => {
                        by_delta.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                        let whole = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                        whole_of_delta.fetch_add(whole, std::sync::atomic::Ordering::SeqCst);
                        Ok(n)
                    }
                    None => remote::put_object(device, id, &path),
                };
                match result {
                    Ok(n) => {
                        let so_far =
                            sent_objects.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n;
                        let k = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        upload_progress(
                            k,
                            missing.len(),
                            &id.to_string()[..12],
                            n,
                            so_far,
                            to_send,
                        );
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        let why = match e {
            Error::Remote(m) => m,
            other => other.to_string(),
        };
        return Err(Error::Remote(format!(
            "{why}; {} object(s) arrived — run pvr post again to send the rest",
            done.into_inner()
        )));
    }
    let mut sent = sent_objects.into_inner();
    let json = state.to_canonical();
    device.json("PUT", &format!("/steps/{rev}"), &json)?;
    sent += json.len() as u64;
    if let Some(m) = message.or_else(|| std::fs::read_to_string(dir.join(".pvr/commitmsg")).ok()) {
        device.json("PUT", &format!("/steps/{rev}/commitmsg"), m.as_bytes())?;
    }
    println!(
        "posted {rev}: sent {sent} bytes ({} of {} objects and the state JSON of {} bytes); the revision's objects total {total} bytes",
        missing.len(),
        ids.len(),
        json.len()
    );
    let (d, w) = (by_delta.into_inner(), whole_of_delta.into_inner());
    if w > 0 {
        println!(
            "  by chunk deltas: {d} bytes instead of {w} ({:.1} %)",
            100.0 * d as f64 / w as f64
        );
    }
    Ok(rev)
}

/// `pvr post`'s options.
#[derive(Args)]
pub(crate) struct PostArgs {
    /// The device (default: where the repository was cloned from).
    device: Option<String>,
    /// Revision name on the device (locals/NAME).
    #[arg(long, short = 'r')]
    rev: Option<String>,
    /// Commit message for the revision (Pantavisor's pvr: --commit-msg).
    #[arg(short, long, alias = "commit-msg")]
    message: Option<String>,
    /// Send every object again, also those the device has.
    #[arg(short, long)]
    force: bool,
    /// Then ask the device to run the revision (LOCAL_RUN).
    #[arg(long)]
    run: bool,
    /// Then follow the revision's progress until DONE, UPDATED, ERROR or
    /// WONTGO (through reboots), with the exit code saying which.
    #[arg(long)]
    wait: bool,
    /// Seconds --wait waits for the end.
    #[arg(long, default_value_t = 600, requires = "wait")]
    timeout: u64,
}

/// `pvr post`: upload, then run and follow if asked.
pub(crate) fn run(dir: &Path, token: Option<String>, args: PostArgs) -> Result<()> {
    let repo = Repo::open(dir)?;
    let device = device_of(&repo, args.device, token)?;
    let rev = post(dir, &device, args.rev, args.message, args.force)?;
    if args.run {
        let reply = device.json(
            "POST",
            "/commands",
            json!({"op": "LOCAL_RUN", "payload": rev})
                .to_string()
                .as_bytes(),
        )?;
        println!("{rev}: run ({reply})");
    }
    if args.wait {
        follow(&device, &rev, std::time::Duration::from_secs(args.timeout))?;
    }
    Ok(())
}
