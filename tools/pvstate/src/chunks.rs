//! Chunk indexes of objects, for updates that send only what changed
//! inside an object.
//!
//! An object is cut at content-defined boundaries (FastCDC, its 2020 form:
//! 4 KiB minimum, 16 KiB average, 64 KiB maximum), so bytes that did not
//! change produce the same chunks even when what comes before them grew or
//! shrank. Each chunk is named by its sha256. The index (`pv-chunks@1`, a
//! text file beside the object) lists them in order:
//!
//! ```text
//! pv-chunks@1 <object sha256> <object size> <chunk count>
//! <chunk sha256> <length>
//! …
//! ```
//!
//! A receiver that holds other objects with indexes needs only the chunks
//! none of them has ([`plan`]); it assembles the new object from its own
//! chunks and the received ones, streaming, and the object's own sha256 is
//! checked at the end whatever the chunks said ([`assemble`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::store::ObjectStore;
use crate::{Error, ObjectId, Result};

pub const SPEC: &str = "pv-chunks@1";
pub const MIN_SIZE: u32 = 4 * 1024;
pub const AVG_SIZE: u32 = 16 * 1024;
pub const MAX_SIZE: u32 = 64 * 1024;

/// One chunk: where it is in its object, how long, and its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub len: u32,
    pub id: [u8; 32],
}

/// The chunks of one object, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub object: ObjectId,
    pub size: u64,
    pub chunks: Vec<Chunk>,
}

impl Index {
    /// Cut what `reader` yields (its object's bytes) into chunks.
    pub fn of_reader(reader: impl Read) -> io::Result<Index> {
        let mut whole = Sha256::new();
        let mut chunks = Vec::new();
        let mut size = 0u64;
        for c in fastcdc::v2020::StreamCDC::new(reader, MIN_SIZE, AVG_SIZE, MAX_SIZE) {
            let c = c.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => e,
                other => io::Error::other(format!("{other:?}")),
            })?;
            whole.update(&c.data);
            chunks.push(Chunk {
                offset: c.offset,
                len: c.length as u32,
                id: Sha256::digest(&c.data).into(),
            });
            size += c.length as u64;
        }
        Ok(Index {
            object: ObjectId::from_digest(whole.finalize().into()),
            size,
            chunks,
        })
    }

    pub fn of_file(path: &Path) -> Result<Index> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Index::of_reader(io::BufReader::with_capacity(1 << 20, f)).map_err(|e| Error::io(path, e))
    }

    /// The index file's text.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{SPEC} {} {} {}\n",
            self.object,
            self.size,
            self.chunks.len()
        );
        for c in &self.chunks {
            s.push_str(&hex::encode(c.id));
            s.push(' ');
            s.push_str(&c.len.to_string());
            s.push('\n');
        }
        s
    }

    /// An index file's text, checked: its chunks add up to its size.
    pub fn parse(text: &str) -> std::result::Result<Index, String> {
        let mut lines = text.lines();
        let head = lines.next().ok_or("empty chunk index")?;
        let f: Vec<&str> = head.split(' ').collect();
        let [spec, object, size, count] = f[..] else {
            return Err(format!(
                "chunk index header {head:?}: expected `{SPEC} SHA SIZE COUNT`"
            ));
        };
        if spec != SPEC {
            return Err(format!("chunk index: {spec:?} is not {SPEC}"));
        }
        let object: ObjectId = object.parse().map_err(|e: Error| e.to_string())?;
        let size: u64 = size
            .parse()
            .map_err(|_| format!("chunk index: bad size {size:?}"))?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("chunk index: bad count {count:?}"))?;
        let mut chunks = Vec::with_capacity(count.min(1 << 20));
        let mut offset = 0u64;
        for (n, line) in lines.enumerate() {
            let (id, len) = line
                .split_once(' ')
                .ok_or_else(|| format!("chunk index line {}: {line:?}", n + 2))?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(id, &mut digest)
                .map_err(|_| format!("chunk index line {}: bad sha256 {id:?}", n + 2))?;
            let len: u32 = len
                .parse()
                .ok()
                .filter(|l| *l > 0 && *l <= MAX_SIZE)
                .ok_or_else(|| format!("chunk index line {}: bad length {len:?}", n + 2))?;
            chunks.push(Chunk {
                offset,
                len,
                id: digest,
            });
            offset += len as u64;
        }
        if chunks.len() != count || offset != size {
            return Err(format!(
                "chunk index: {} chunks of {offset} bytes, the header says {count} of {size}",
                chunks.len()
            ));
        }
        Ok(Index {
            object,
            size,
            chunks,
        })
    }

    /// Where the index of object `id` is kept in a store: beside it.
    pub fn path_in(store: &ObjectStore, id: &ObjectId) -> PathBuf {
        store.dir().join(format!("{id}.chunks"))
    }

    /// The stored index of `id`, if there is one and it reads.
    pub fn load(store: &ObjectStore, id: &ObjectId) -> Option<Index> {
        let text = std::fs::read_to_string(Index::path_in(store, id)).ok()?;
        Index::parse(&text).ok().filter(|i| &i.object == id)
    }

    /// Keep this index beside its object.
    pub fn save(&self, store: &ObjectStore) -> Result<()> {
        crate::store::write_atomic(
            &Index::path_in(store, &self.object),
            self.to_text().as_bytes(),
        )
    }
}

/// What sending an object costs when the receiver holds some others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The object's size (what sending it whole costs).
    pub size: u64,
    /// Chunks to send, each once, in the order the object needs them.
    pub send: Vec<Chunk>,
    pub send_bytes: u64,
    /// Bytes the receiver takes from what it has.
    pub reused_bytes: u64,
}

/// The chunks of `new` that no index in `have` (the receiver's) holds.
pub fn plan(new: &Index, have: &[&Index]) -> Plan {
    let held: HashSet<[u8; 32]> = have
        .iter()
        .flat_map(|i| i.chunks.iter().map(|c| c.id))
        .collect();
    let mut queued = HashSet::new();
    let mut send = Vec::new();
    let (mut send_bytes, mut reused_bytes) = (0, 0);
    for c in &new.chunks {
        if held.contains(&c.id) || queued.contains(&c.id) {
            reused_bytes += c.len as u64;
        } else {
            queued.insert(c.id);
            send_bytes += c.len as u64;
            send.push(c.clone());
        }
    }
    Plan {
        size: new.size,
        send,
        send_bytes,
        reused_bytes,
    }
}

/// The delta stream (`pv-delta@1`) that builds object `new` on a receiver
/// holding the objects of `have`: a header line, then records in object
/// order — `L <object> <offset> <length>` (bytes the receiver copies from an
/// object it holds; neighbouring chunks of one object are one record),
/// `D <chunk sha256> <length>` followed by that many bytes, or
/// `S <offset> <length>` (a chunk this object held earlier: copied from what
/// was built) — and `E`. Each chunk travels at most once, as [`plan`] counts.
/// `new_data` reads the new object (for the chunks sent).
pub fn encode(
    new: &Index,
    new_data: &File,
    have: &[&Index],
    out: &mut dyn io::Write,
) -> io::Result<u64> {
    encode_from(new, new_data, have, 0, out)
}

/// Like [`encode`], for a receiver that kept the first `kept` bytes of an
/// interrupted delta of the same object: the stream begins with `P <n>`
/// (keep the first n bytes, n the last chunk boundary within `kept`) and
/// carries only what follows.
pub fn encode_from(
    new: &Index,
    new_data: &File,
    have: &[&Index],
    kept: u64,
    out: &mut dyn io::Write,
) -> io::Result<u64> {
    let mut local: HashMap<[u8; 32], (&ObjectId, u64)> = HashMap::new();
    for idx in have {
        for c in &idx.chunks {
            local.entry(c.id).or_insert((&idx.object, c.offset));
        }
    }
    let mut written = 0u64;
    let mut emit = |out: &mut dyn io::Write, bytes: &[u8]| -> io::Result<()> {
        written += bytes.len() as u64;
        out.write_all(bytes)
    };
    emit(
        out,
        format!("{DELTA_SPEC} {} {}\n", new.object, new.size).as_bytes(),
    )?;
    let skip = new
        .chunks
        .iter()
        .take_while(|c| c.offset + c.len as u64 <= kept)
        .count();
    if skip > 0 {
        let c = &new.chunks[skip - 1];
        emit(out, format!("P {}\n", c.offset + c.len as u64).as_bytes())?;
    }
    // Where each chunk the receiver lacks first is in the new object.
    let mut built: HashMap<[u8; 32], u64> = HashMap::new();
    for c in &new.chunks[..skip] {
        built.entry(c.id).or_insert(c.offset);
    }
    // A run of local bytes not yet written: (object, offset, length).
    let mut run: Option<(&ObjectId, u64, u64)> = None;
    let mut buf = vec![0u8; MAX_SIZE as usize];
    for c in &new.chunks[skip..] {
        if let Some(&(obj, offset)) = local.get(&c.id) {
            run = match run {
                Some((o, start, len)) if o == obj && start + len == offset => {
                    Some((o, start, len + c.len as u64))
                }
                Some((o, start, len)) => {
                    emit(out, format!("L {o} {start} {len}\n").as_bytes())?;
                    Some((obj, offset, c.len as u64))
                }
                None => Some((obj, offset, c.len as u64)),
            };
            continue;
        }
        if let Some((o, start, len)) = run.take() {
            emit(out, format!("L {o} {start} {len}\n").as_bytes())?;
        }
        if let Some(&at) = built.get(&c.id) {
            emit(out, format!("S {at} {}\n", c.len).as_bytes())?;
            continue;
        }
        built.insert(c.id, c.offset);
        let data = &mut buf[..c.len as usize];
        new_data.read_exact_at(data, c.offset)?;
        emit(
            out,
            format!("D {} {}\n", hex::encode(c.id), c.len).as_bytes(),
        )?;
        emit(out, data)?;
    }
    if let Some((o, start, len)) = run.take() {
        emit(out, format!("L {o} {start} {len}\n").as_bytes())?;
    }
    emit(out, b"E\n")?;
    Ok(written)
}

pub const DELTA_SPEC: &str = "pv-delta@1";

enum DeltaState {
    /// Collecting a line (the header, a record, the end).
    Line,
    /// Inside a sent chunk: its sha256, what is left, its hasher.
    Data([u8; 32], u64, Sha256),
    Ended,
}

/// The receiving end of a [`encode`]d stream, fed as bytes arrive: the
/// object grows in a temporary file of the store, each sent chunk checked
/// against its sha256, copied ranges read from objects the store holds;
/// [`DeltaWriter::finish`] checks the object's sha256 and moves it into
/// place. Dropped unfinished, nothing remains. Memory: one line and one
/// 64 KiB copy buffer.
pub struct DeltaWriter {
    store: ObjectStore,
    expected: ObjectId,
    /// None once finished.
    out: Option<crate::store::ObjectWriter>,
    header: bool,
    /// A record came after the header (a `P` must come first).
    records: bool,
    state: DeltaState,
    line: Vec<u8>,
    size: u64,
    /// Bytes built by complete records (chunks checked): what an
    /// interrupted transfer keeps.
    good: u64,
}

/// Where the kept part of an interrupted delta of object `id` waits.
pub fn partial_path(store: &ObjectStore, id: &ObjectId) -> PathBuf {
    store.dir().join(".partial").join(id.to_string())
}

impl DeltaWriter {
    pub fn new(store: &ObjectStore, expected: &ObjectId) -> Result<Self> {
        Ok(DeltaWriter::over(store.writer(Some(expected))?, expected))
    }

    /// Build into `out`, a writer of the store the copied ranges come from
    /// (expecting object `expected`).
    pub fn over(out: crate::store::ObjectWriter, expected: &ObjectId) -> Self {
        DeltaWriter {
            store: out.store().clone(),
            expected: expected.clone(),
            out: Some(out),
            header: false,
            records: false,
            state: DeltaState::Line,
            line: Vec::new(),
            size: 0,
            good: 0,
        }
    }

    fn out(&mut self) -> &mut crate::store::ObjectWriter {
        self.out.as_mut().expect("a finished writer takes no bytes")
    }

    fn bad(&self, why: impl std::fmt::Display) -> Error {
        Error::Archive {
            archive: format!("delta of object {}", self.expected),
            message: why.to_string(),
        }
    }

    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                DeltaState::Ended => return Err(self.bad("bytes after the end record")),
                DeltaState::Data(id, left, hasher) => {
                    let take = (*left).min(data.len() as u64) as usize;
                    hasher.update(&data[..take]);
                    *left -= take as u64;
                    let done = *left == 0;
                    let id = *id;
                    let finished = done.then(|| {
                        let DeltaState::Data(_, _, h) =
                            std::mem::replace(&mut self.state, DeltaState::Line)
                        else {
                            unreachable!()
                        };
                        <[u8; 32]>::from(h.finalize())
                    });
                    if !self.header {
                        return Err(self.bad("data before the header"));
                    }
                    self.out().write(&data[..take])?;
                    data = &data[take..];
                    if let Some(got) = finished {
                        if got != id {
                            return Err(Error::HashMismatch {
                                expected: format!("chunk {}", hex::encode(id)),
                                actual: hex::encode(got),
                            });
                        }
                        self.good = self.out().size();
                    }
                }
                DeltaState::Line => {
                    let end = data.iter().position(|&b| b == b'\n');
                    let take = end.map_or(data.len(), |e| e + 1);
                    if self.line.len() + take > 256 {
                        return Err(self.bad("a record line over 256 bytes"));
                    }
                    self.line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if end.is_some() {
                        let line = std::mem::take(&mut self.line);
                        let text = String::from_utf8_lossy(&line);
                        self.record(text.trim_end())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, line: &str) -> Result<()> {
        let f: Vec<&str> = line.split(' ').collect();
        if !self.header {
            let [spec, object, size] = f[..] else {
                return Err(self.bad(format!("header {line:?}")));
            };
            if spec != DELTA_SPEC || object != self.expected.to_string() {
                return Err(self.bad(format!(
                    "header {line:?}: expected {DELTA_SPEC} {}",
                    self.expected
                )));
            }
            self.size = size.parse().map_err(|_| self.bad("bad size"))?;
            self.header = true;
            return Ok(());
        }
        let first = !self.records;
        self.records = true;
        match f[..] {
            ["P", len] if first => {
                let len: u64 = len.parse().map_err(|_| self.bad("bad P length"))?;
                let path = partial_path(&self.store, &self.expected);
                let f = File::open(&path)
                    .map_err(|_| self.bad("no kept part of an earlier transfer: send it all"))?;
                let have = f.metadata().map_err(|e| Error::io(&path, e))?.len();
                if have < len {
                    return Err(self.bad(format!(
                        "{have} bytes kept from an earlier transfer, not {len}: send it all"
                    )));
                }
                self.copy_from(&f, &path, 0, len)
            }
            ["E"] => {
                self.state = DeltaState::Ended;
                Ok(())
            }
            ["D", id, len] => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(id, &mut digest)
                    .map_err(|_| self.bad(format!("bad chunk id {id:?}")))?;
                let len: u64 = len
                    .parse()
                    .ok()
                    .filter(|l| *l > 0 && *l <= MAX_SIZE as u64)
                    .ok_or_else(|| self.bad(format!("bad chunk length {len:?}")))?;
                self.state = DeltaState::Data(digest, len, Sha256::new());
                Ok(())
            }
            ["S", offset, len] => {
                let (offset, len): (u64, u64) = match (offset.parse(), len.parse()) {
                    (Ok(o), Ok(l)) if o + l <= self.out().size() => (o, l),
                    _ => return Err(self.bad(format!("record {line:?}"))),
                };
                let mut buf = vec![0u8; len.min(MAX_SIZE as u64) as usize];
                let mut done = 0u64;
                while done < len {
                    let n = ((len - done) as usize).min(buf.len());
                    self.out().read_back(&mut buf[..n], offset + done)?;
                    self.out().write(&buf[..n])?;
                    done += n as u64;
                }
                self.good = self.out().size();
                Ok(())
            }
            ["L", object, offset, len] => {
                let id: ObjectId = object.parse()?;
                let (offset, len): (u64, u64) = match (offset.parse(), len.parse()) {
                    (Ok(o), Ok(l)) => (o, l),
                    _ => return Err(self.bad(format!("record {line:?}"))),
                };
                let path = self.store.path(&id);
                let f = File::open(&path).map_err(|_| {
                    self.bad(format!(
                        "object {id} is not on this device: send the object whole"
                    ))
                })?;
                self.copy_from(&f, &path, offset, len)
            }
            _ => Err(self.bad(format!("record {line:?}"))),
        }
    }

    /// `len` bytes of `f` from `offset` onto the object.
    fn copy_from(&mut self, f: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], offset + done)
                .map_err(|e| Error::io(path, e))?;
            self.out().write(&buf[..n])?;
            done += n as u64;
        }
        self.good = self.out().size();
        Ok(())
    }

    /// The object, checked and in place.
    pub fn finish(mut self) -> Result<(ObjectId, u64)> {
        if !matches!(self.state, DeltaState::Ended) {
            return Err(self.bad("the stream ended before its end record"));
        }
        let built = self.out().size();
        if !self.header || built != self.size {
            return Err(self.bad(format!(
                "{built} bytes built, the header says {}",
                self.size
            )));
        }
        let out = self.out.take().expect("not finished yet");
        let done = out.finish()?;
        let _ = std::fs::remove_file(partial_path(&self.store, &self.expected));
        Ok(done)
    }
}

impl Drop for DeltaWriter {
    /// Unfinished (the connection dropped): what complete records built is
    /// kept for the next transfer of this object (`P`); anything else goes.
    fn drop(&mut self) {
        let Some(out) = self.out.take() else { return };
        if self.good == 0 || matches!(self.state, DeltaState::Ended) {
            return;
        }
        let dir = self.store.dir().join(".partial");
        let _ = std::fs::create_dir_all(&dir);
        let _ = out.keep_prefix(self.good, &partial_path(&self.store, &self.expected));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that do not repeat (a counter through sha256).
    fn noise(seed: u8, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 32);
        let mut i = 0u64;
        while out.len() < n {
            let mut h = Sha256::new();
            h.update([seed]);
            h.update(i.to_le_bytes());
            out.extend_from_slice(&h.finalize());
            i += 1;
        }
        out.truncate(n);
        out
    }

    #[test]
    fn an_index_reads_back_and_its_chunks_cover_the_object() {
        let data = noise(1, 300_000);
        let idx = Index::of_reader(&data[..]).unwrap();
        assert_eq!(idx.size, 300_000);
        assert_eq!(
            idx.object,
            ObjectId::from_digest(Sha256::digest(&data).into())
        );
        assert!(idx.chunks.len() > 5 && idx.chunks.iter().all(|c| c.len <= MAX_SIZE));
        assert_eq!(Index::parse(&idx.to_text()).unwrap(), idx);
        let mut bad = idx.to_text();
        bad.push_str(&format!("{} 10\n", hex::encode([0u8; 32])));
        assert!(Index::parse(&bad).unwrap_err().contains("the header says"));
    }

    #[test]
    fn an_insertion_costs_the_chunks_around_it_not_the_rest() {
        let old = noise(2, 1_000_000);
        let mut new = old.clone();
        new.splice(500_000..500_000, noise(3, 1000));
        let (a, b) = (
            Index::of_reader(&old[..]).unwrap(),
            Index::of_reader(&new[..]).unwrap(),
        );
        let p = plan(&b, &[&a]);
        assert_eq!(p.send_bytes + p.reused_bytes, new.len() as u64);
        assert!(p.send_bytes < 150_000, "{} bytes to send", p.send_bytes);
        // Nothing held: everything goes.
        assert_eq!(plan(&b, &[]).send_bytes, new.len() as u64);
    }

    /// The `D` records of a delta stream: (count, bytes carried).
    fn sent_chunks(stream: &[u8]) -> (usize, u64) {
        let (mut n, mut bytes, mut at) = (0, 0u64, 0usize);
        while at < stream.len() {
            let end = at + stream[at..].iter().position(|&b| b == b'\n').unwrap();
            let line = std::str::from_utf8(&stream[at..end]).unwrap();
            at = end + 1;
            if let Some(rest) = line.strip_prefix("D ") {
                let len: u64 = rest.split(' ').nth(1).unwrap().parse().unwrap();
                n += 1;
                bytes += len;
                at += len as usize;
            }
        }
        (n, bytes)
    }

    #[test]
    fn assembled_objects_are_byte_identical_and_a_bad_chunk_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(tmp.path().join("objects")).unwrap();
        let old = noise(4, 800_000);
        let old_id = store.put_bytes(&old).unwrap();
        let a = Index::of_reader(&old[..]).unwrap();
        a.save(&store).unwrap();
        assert_eq!(Index::load(&store, &old_id).unwrap(), a);
        let mut new = old.clone();
        new[100_000..100_010].copy_from_slice(b"0123456789");
        // New bytes twice: their chunks travel once, the repeat is copied
        // from what was built.
        let fresh = noise(5, 150_000);
        new.extend_from_slice(&fresh);
        new.extend_from_slice(&fresh);
        let new_path = tmp.path().join("new");
        std::fs::write(&new_path, &new).unwrap();
        let b = Index::of_file(&new_path).unwrap();
        let p = plan(&b, &[&a]);
        let mut stream = Vec::new();
        encode(&b, &File::open(&new_path).unwrap(), &[&a], &mut stream).unwrap();
        assert_eq!(sent_chunks(&stream), (p.send.len(), p.send_bytes));
        assert!(
            stream.windows(3).any(|w| w == b"\nS "),
            "a repeat is copied"
        );
        // A corrupted chunk: refused, the store unchanged.
        let before = store.list().unwrap();
        let data_at = stream.windows(2).position(|w| w == b"\nD").unwrap() + 80;
        let mut evil = stream.clone();
        evil[data_at] ^= 1;
        let mut w = DeltaWriter::new(&store, &b.object).unwrap();
        assert!(matches!(w.write(&evil), Err(Error::HashMismatch { .. })));
        drop(w);
        assert_eq!(store.list().unwrap(), before);
        let mut w = DeltaWriter::new(&store, &b.object).unwrap();
        w.write(&stream).unwrap();
        let (id, size) = w.finish().unwrap();
        assert_eq!((id.clone(), size), (b.object.clone(), new.len() as u64));
        assert_eq!(std::fs::read(store.path(&id)).unwrap(), new);
    }

    #[test]
    fn a_delta_stream_rebuilds_the_object_and_bad_ones_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(tmp.path().join("objects")).unwrap();
        let old = noise(6, 600_000);
        store.put_bytes(&old).unwrap();
        let a = Index::of_reader(&old[..]).unwrap();
        let mut new = old.clone();
        new.splice(300_000..300_000, noise(7, 20_000));
        let new_path = tmp.path().join("new");
        std::fs::write(&new_path, &new).unwrap();
        let b = Index::of_file(&new_path).unwrap();
        let mut stream = Vec::new();
        let sent = encode(&b, &File::open(&new_path).unwrap(), &[&a], &mut stream).unwrap();
        assert_eq!(sent, stream.len() as u64);
        assert!(stream.len() < 100_000, "{} bytes", stream.len());
        // Fed in odd pieces, the object comes out whole.
        let mut w = DeltaWriter::new(&store, &b.object).unwrap();
        for piece in stream.chunks(777) {
            w.write(piece).unwrap();
        }
        let (id, size) = w.finish().unwrap();
        assert_eq!((id.clone(), size), (b.object.clone(), new.len() as u64));
        assert_eq!(std::fs::read(store.path(&id)).unwrap(), new);
        std::fs::remove_file(store.path(&id)).unwrap();
        let before = store.list().unwrap();
        // A flipped byte in a sent chunk, a cut stream, a base the device
        // lacks: refused, nothing left behind.
        let data_at = stream.windows(2).position(|w| w == b"\nD").unwrap() + 80;
        let mut flipped = stream.clone();
        flipped[data_at] ^= 1;
        let mut w = DeltaWriter::new(&store, &b.object).unwrap();
        assert!(matches!(w.write(&flipped), Err(Error::HashMismatch { .. })));
        drop(w);
        let mut w = DeltaWriter::new(&store, &b.object).unwrap();
        w.write(&stream[..stream.len() - 2]).unwrap();
        assert!(w
            .finish()
            .unwrap_err()
            .to_string()
            .contains("before its end record"));
        let other = ObjectStore::open(tmp.path().join("other")).unwrap();
        let mut w = DeltaWriter::new(&other, &b.object).unwrap();
        let e = w.write(&stream).unwrap_err().to_string();
        assert!(e.contains("is not on this device"), "{e}");
        assert_eq!(store.list().unwrap(), before);
        assert!(other.list().unwrap().is_empty());
    }

    #[test]
    fn an_interrupted_delta_keeps_what_it_built_and_the_next_one_sends_only_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(tmp.path().join("objects")).unwrap();
        let old = noise(8, 400_000);
        store.put_bytes(&old).unwrap();
        let a = Index::of_reader(&old[..]).unwrap();
        // Mostly new bytes: the stream is mostly sent chunks.
        let mut new = noise(9, 300_000);
        new.extend_from_slice(&old[..100_000]);
        let new_path = tmp.path().join("new");
        std::fs::write(&new_path, &new).unwrap();
        let b = Index::of_file(&new_path).unwrap();
        let file = File::open(&new_path).unwrap();
        let mut full = Vec::new();
        encode(&b, &file, &[&a], &mut full).unwrap();
        // The connection drops after 60 % of the stream.
        let mut w = DeltaWriter::new(&store, &b.object).unwrap();
        w.write(&full[..full.len() * 6 / 10]).unwrap();
        drop(w);
        let kept = std::fs::metadata(partial_path(&store, &b.object))
            .unwrap()
            .len();
        assert!(kept > 100_000, "{kept} bytes kept");
        assert_eq!(
            std::fs::read(partial_path(&store, &b.object)).unwrap(),
            new[..kept as usize]
        );
        assert!(!store.contains(&b.object));
        let mut rest = Vec::new();
        encode_from(&b, &file, &[&a], kept, &mut rest).unwrap();
        // Only what was not kept travels again (at most one chunk more).
        assert!(
            rest.len() as u64 + kept <= full.len() as u64 + MAX_SIZE as u64
                && rest.len() < full.len() / 2,
            "{} after {kept} kept, of {}",
            rest.len(),
            full.len()
        );
        let mut w = DeltaWriter::new(&store, &b.object).unwrap();
        w.write(&rest).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(store.path(&b.object)).unwrap(), new);
        assert!(
            !partial_path(&store, &b.object).exists(),
            "the kept part goes once used"
        );
    }
}
