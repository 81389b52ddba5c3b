//! The object store: atomic, verified writes and garbage collection.

mod common;

use std::io::{self, Read};

use common::*;
use pvstate::store::{gc_storage, trail_references, write_atomic};
use pvstate::{Error, ObjectId, ObjectStore};

#[test]
fn put_get_verify_list() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path().join("objects")).unwrap();
    let data = vec![7u8; 1_000_000];
    let (id, size) = store.put(&mut &data[..], None).unwrap();
    assert_eq!(size, 1_000_000);
    assert_eq!(id, ObjectId::of_bytes(&data));
    let mut back = Vec::new();
    store.get(&id).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    store.verify(&id).unwrap();
    // Putting the same content again is a no-op with the same id.
    assert_eq!(store.put(&mut &data[..], Some(&id)).unwrap().0, id);
    assert_eq!(
        store.list().unwrap().into_iter().collect::<Vec<_>>(),
        vec![id]
    );
}

#[test]
fn a_mismatch_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path()).unwrap();
    let wrong = ObjectId::of_bytes(b"something else");
    let err = store.put(&mut &b"content"[..], Some(&wrong)).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    assert!(listing(tmp.path()).is_empty());
}

/// A reader that fails after some bytes, like a dropped connection.
struct Failing(usize);
impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer went away",
            ));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(1);
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn a_failed_read_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path()).unwrap();
    let err = store.put(&mut Failing(300_000), None).unwrap_err();
    assert!(err.to_string().contains("peer went away"), "{err}");
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn verify_finds_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path()).unwrap();
    let id = store.put_bytes(b"good content").unwrap();
    std::fs::write(store.path(&id), b"bad content").unwrap();
    let err = store.verify(&id).unwrap_err().to_string();
    assert!(
        err.contains(id.as_str()) && err.contains("hashes to"),
        "{err}"
    );
    let missing = ObjectId::of_bytes(b"never stored");
    assert!(matches!(
        store.verify(&missing),
        Err(Error::MissingObject(_))
    ));
}

#[test]
fn gc_keeps_what_trails_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path();
    let store = ObjectStore::open(storage.join("objects")).unwrap();
    let state = gateway_with_objects(&store);
    let orphan = store.put_bytes(b"no trail refers to me").unwrap();
    std::fs::write(storage.join("objects/.tmp-interrupted"), b"half").unwrap();
    std::fs::create_dir_all(storage.join("trails/0/.pvr")).unwrap();
    write_atomic(&storage.join("trails/0/.pvr/json"), &state.to_canonical()).unwrap();
    assert_eq!(trail_references(storage).unwrap(), state.object_ids());
    let report = gc_storage(storage).unwrap();
    assert_eq!(report.removed, vec![orphan.clone()]);
    assert_eq!(report.kept, state.object_ids().len());
    assert!(!store.contains(&orphan));
    assert_eq!(store.list().unwrap(), state.object_ids());
    assert!(!storage.join("objects/.tmp-interrupted").exists());
}

#[test]
fn gc_refuses_when_a_trail_is_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path().join("objects")).unwrap();
    let id = store.put_bytes(b"maybe needed").unwrap();
    std::fs::create_dir_all(tmp.path().join("trails/1/.pvr")).unwrap();
    std::fs::write(tmp.path().join("trails/1/.pvr/json"), b"{ truncated").unwrap();
    let err = gc_storage(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("trails/1/.pvr/json"), "{err}");
    assert!(store.contains(&id));
}

#[test]
fn adopt_moves_a_file_in_under_its_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path()).unwrap();
    let tmp_file = store.temp_path("root.squashfs");
    std::fs::write(&tmp_file, b"squashfs image bytes").unwrap();
    assert!(
        store.list().unwrap().is_empty(),
        "a temp file is not an object"
    );
    let (id, size) = store.adopt(&tmp_file).unwrap();
    assert_eq!(
        (id.clone(), size),
        (ObjectId::of_bytes(b"squashfs image bytes"), 20)
    );
    assert!(!tmp_file.exists());
    store.verify(&id).unwrap();
    // Adopting the same content again keeps one copy.
    let again = store.temp_path("x");
    std::fs::write(&again, b"squashfs image bytes").unwrap();
    assert_eq!(store.adopt(&again).unwrap().0, id);
    assert_eq!(listing(tmp.path()), vec![id.to_string()]);
}

#[test]
fn gc_keeps_what_local_revisions_reference() {
    // trails/locals/<name>/ holds revisions installed over the control socket.
    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path();
    let store = ObjectStore::open(storage.join("objects")).unwrap();
    let state = gateway_with_objects(&store);
    let local_only = store.put_bytes(b"only a local revision needs me").unwrap();
    let mut v = state.to_value();
    v["edge-app/root.squashfs"] = serde_json::json!(local_only.to_string());
    let local = pvstate::State::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::create_dir_all(storage.join("trails/0/.pvr")).unwrap();
    std::fs::create_dir_all(storage.join("trails/locals/v2/.pvr")).unwrap();
    write_atomic(&storage.join("trails/0/.pvr/json"), &state.to_canonical()).unwrap();
    write_atomic(
        &storage.join("trails/locals/v2/.pvr/json"),
        &local.to_canonical(),
    )
    .unwrap();
    let report = gc_storage(storage).unwrap();
    assert!(report.removed.is_empty(), "{:?}", report.removed);
    assert!(store.contains(&local_only));
}

#[test]
fn gc_takes_chunk_indexes_with_their_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let store = pvstate::ObjectStore::open(tmp.path()).unwrap();
    let (a, b) = (
        store.put_bytes(b"kept").unwrap(),
        store.put_bytes(b"dropped").unwrap(),
    );
    for id in [&a, &b] {
        pvstate::chunks::Index::of_file(&store.path(id))
            .unwrap()
            .save(&store)
            .unwrap();
    }
    let keep = [a.clone()].into_iter().collect();
    let report = store.gc(&keep).unwrap();
    assert_eq!(report.removed, std::slice::from_ref(&b));
    assert!(pvstate::chunks::Index::load(&store, &a).is_some());
    assert!(!tmp.path().join(format!("{b}.chunks")).exists());
}
