//! Chunk deltas for `pvr post` and `pvr diff`: an object the device lacks is
//! sent as the chunks its predecessor — the object at the same state key in
//! the revision the device runs, when the device and the workspace both
//! hold it — does not have (pvstate::chunks), and the device builds it from
//! that predecessor. Indexes are kept beside the objects of the workspace's
//! pool (`<sha>.chunks`). A device that refuses a delta (Pantavisor, an
//! older daemon, a predecessor gone meanwhile) gets the object whole.

use std::collections::{BTreeMap, BTreeSet};

use pvctrl::Client as Device;
use pvstate::chunks::{encode_from, plan, Index, Plan};
use pvstate::{ObjectId, ObjectStore, State};

use crate::error::{Error, Result};

/// A delta is sent only when it saves at least this share of the object.
const WORTH: f64 = 0.2;

/// The index of pool object `id`, made once and kept beside it.
pub(crate) fn index(pool: &ObjectStore, id: &ObjectId) -> Result<Index> {
    if let Some(i) = Index::load(pool, id) {
        return Ok(i);
    }
    let i = Index::of_file(&pool.path(id))?;
    // A cache: failing to keep it costs only its recomputation.
    let _ = i.save(pool);
    Ok(i)
}

/// For each object of `new` the device lacks, its predecessor: the object
/// at the same key in `running` that the device has and the pool holds.
pub(crate) fn predecessors(
    new: &State,
    running: &State,
    have: &BTreeSet<String>,
    pool: &ObjectStore,
) -> BTreeMap<ObjectId, ObjectId> {
    let mut out = BTreeMap::new();
    for (key, id) in new.objects() {
        if have.contains(id.as_str()) || out.contains_key(id) {
            continue;
        }
        let Some(old) = running.get(key).and_then(pvstate::Entry::object_id) else {
            continue;
        };
        if old != id && have.contains(old.as_str()) && pool.contains(old) {
            out.insert(id.clone(), old.clone());
        }
    }
    out
}

/// What sending `id` against `base` costs, if a delta is worth it.
pub(crate) fn worth(pool: &ObjectStore, id: &ObjectId, base: &ObjectId) -> Result<Option<Plan>> {
    let (new, old) = (index(pool, id)?, index(pool, base)?);
    Ok(worth_of(&new, &old))
}

fn worth_of(new: &Index, old: &Index) -> Option<Plan> {
    let p = plan(new, &[old]);
    ((p.send_bytes as f64) < (1.0 - WORTH) * p.size as f64).then_some(p)
}

/// Send `id` to the device as a delta against `base`: the bytes sent, or
/// None when a delta is not worth it or the device refused it (then it goes
/// whole). A part the device kept of an interrupted delta of `id` is not
/// sent again.
pub(crate) fn put_delta(
    device: &Device,
    pool: &ObjectStore,
    id: &ObjectId,
    base: &ObjectId,
) -> Result<Option<u64>> {
    let (new, old) = (index(pool, id)?, index(pool, base)?);
    if worth_of(&new, &old).is_none() {
        return Ok(None);
    }
    let kept = device
        .json("GET", &format!("/objects/{id}/partial"), b"")
        .ok()
        .and_then(|v| v["bytes"].as_u64())
        .unwrap_or(0);
    for from in if kept > 0 { vec![kept, 0] } else { vec![0] } {
        // The stream is written out first: its length goes in the head.
        let (mut stream, len) = delta_file(pool, id, &new, &old, from)?;
        let reply = device.call_reader("PUT", &format!("/objects/{id}/delta"), &mut stream, len)?;
        if reply.ok() {
            return Ok(Some(len));
        }
        // A kept part that was not usable after all: once more from nothing.
    }
    Ok(None)
}

/// The delta of `id` (index `new`) against `old` for a device that kept
/// `kept` bytes, in a temporary file: the file, rewound, and its length.
fn delta_file(
    pool: &ObjectStore,
    id: &ObjectId,
    new: &Index,
    old: &Index,
    kept: u64,
) -> Result<(std::fs::File, u64)> {
    let path = pool.path(id);
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut tmp = tempfile::tempfile_in(pool.dir()).map_err(|e| Error::io(pool.dir(), e))?;
    let mut w = std::io::BufWriter::new(&mut tmp);
    let len = encode_from(new, &file, &[old], kept, &mut w).map_err(|e| Error::io(&path, e))?;
    std::io::Write::flush(&mut w).map_err(|e| Error::io(pool.dir(), e))?;
    drop(w);
    std::io::Seek::rewind(&mut tmp).map_err(|e| Error::io(pool.dir(), e))?;
    Ok((tmp, len))
}
