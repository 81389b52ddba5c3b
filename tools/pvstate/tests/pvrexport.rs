//! pvrexport round trip and refusal of hostile or damaged archives.

mod common;

use std::io::Write;

use common::*;
use pvstate::pvrexport::{export, export_file, import, import_file, ExportOptions};
use pvstate::{ObjectStore, State};

fn exported(state: &State, store: &ObjectStore, gzip: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = ExportOptions {
        gzip,
        ..Default::default()
    };
    export(state, store, &mut out, &opts).unwrap();
    out
}

#[test]
fn export_then_import_gives_identical_state_and_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let src = ObjectStore::open(tmp.path().join("src")).unwrap();
    let state = gateway_with_objects(&src);
    for gzip in [false, true] {
        let name = if gzip { "gw.tgz" } else { "gw.tar" };
        let path = tmp.path().join(name);
        export_file(&state, &src, &path, ExportOptions::default()).unwrap();
        let dst = ObjectStore::open(tmp.path().join(format!("dst-{gzip}"))).unwrap();
        let imported = import_file(&path, Some(&dst)).unwrap();
        assert_eq!(imported.state.to_canonical(), state.to_canonical());
        assert_eq!(imported.state, state);
        assert_eq!(dst.list().unwrap(), state.object_ids());
        for id in state.object_ids() {
            dst.verify(&id).unwrap();
            assert_eq!(
                std::fs::read(dst.path(&id)).unwrap(),
                std::fs::read(src.path(&id)).unwrap()
            );
        }
        // No temporary files or staging directories are left behind.
        assert!(listing(dst.dir()).iter().all(|n| !n.starts_with('.')));
    }
}

/// `pvr deploy DIR` of an unpacked export: the same state and objects as
/// the archive gives, and the same refusals.
#[test]
fn an_unpacked_export_imports_as_its_archive_does() {
    let tmp = tempfile::tempdir().unwrap();
    let src = ObjectStore::open(tmp.path().join("src")).unwrap();
    let state = gateway_with_objects(&src);
    let archive = exported(&state, &src, false);
    let dir = tmp.path().join("unpacked");
    std::fs::create_dir(&dir).unwrap();
    tar::Archive::new(&archive[..]).unpack(&dir).unwrap();
    let dst = ObjectStore::open(tmp.path().join("dst")).unwrap();
    let imported = import_file(&dir, Some(&dst)).unwrap();
    assert_eq!(imported.state, state);
    assert_eq!(dst.list().unwrap(), state.object_ids());
    // A damaged object is refused, nothing stored.
    let id = state.object_ids().into_iter().next().unwrap();
    std::fs::write(dir.join("objects").join(id.as_str()), b"tampered").unwrap();
    let dst2 = ObjectStore::open(tmp.path().join("dst2")).unwrap();
    let e = import_file(&dir, Some(&dst2)).unwrap_err().to_string();
    assert!(e.contains("the data is corrupt or not this object"), "{e}");
    assert!(dst2.list().unwrap().is_empty());
    // Anything but json and objects/ is refused.
    std::fs::copy(src.path(&id), dir.join("objects").join(id.as_str())).unwrap();
    std::fs::write(dir.join("README"), b"x").unwrap();
    let e = import_file(&dir, None).unwrap_err().to_string();
    assert!(e.contains("unexpected \"README\""), "{e}");
}

#[test]
fn export_is_reproducible_and_json_comes_first() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path()).unwrap();
    let state = gateway_with_objects(&store);
    let a = exported(&state, &store, false);
    let b = exported(&state, &store, false);
    assert_eq!(a, b);
    let mut archive = tar::Archive::new(&a[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "json");
    assert_eq!(names.len(), 1 + state.object_ids().len());
    assert!(names[1..].iter().all(|n| n.starts_with("objects/")));
}

#[test]
fn export_of_parts_holds_only_those_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path().join("o")).unwrap();
    let state = gateway_with_objects(&store);
    let mut out = Vec::new();
    let opts = ExportOptions {
        parts: vec!["edge-app".into(), "_config/edge-app".into()],
        ..Default::default()
    };
    export(&state, &store, &mut out, &opts).unwrap();
    let imported = import(&out[..], "parts", None).unwrap();
    let keys: Vec<&String> = imported.state.entries().keys().collect();
    assert!(
        keys.iter().all(|k| *k == "#spec"
            || k.starts_with("edge-app/")
            || k.starts_with("_config/edge-app/")),
        "{keys:?}"
    );
    assert!(keys
        .iter()
        .any(|k| *k == "_config/edge-app/etc/edge-app/rules.json"));
    assert_eq!(imported.objects.len(), 2); // root.squashfs and config.json
}

/// Write a tar with the given entries; `kind` chooses the entry type.
fn craft(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        // set_path refuses '..'; write the raw name like a hostile tool would.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        if kind.is_symlink() || kind.is_hard_link() {
            h.set_link_name("/etc/passwd").unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn assert_refused(archive: &[u8], needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path().join("objects")).unwrap();
    let before_id = store.put_bytes(b"already here").unwrap();
    let err = import(archive, "test.tar", Some(&store))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(needle),
        "error {err:?} does not contain {needle:?}"
    );
    assert!(err.starts_with("pvrexport test.tar: "), "{err}");
    // The store is exactly as it was: one object, no temporary files.
    assert_eq!(listing(store.dir()), vec![before_id.to_string()]);
}

#[test]
fn refuses_a_tampered_object() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(tmp.path()).unwrap();
    let state = gateway_with_objects(&store);
    let good = exported(&state, &store, false);
    // Flip one byte inside the data of the last object entry.
    let mut bad = good.clone();
    // The last non-zero byte before the two zero end blocks is object data.
    let last_data = bad[..bad.len() - 1024]
        .iter()
        .rposition(|b| *b != 0)
        .unwrap();
    bad[last_data] ^= 0x20;
    assert_refused(&bad, "hashes to");
}

#[test]
fn refuses_path_traversal_links_and_strays() {
    let json = br##"{"#spec":"pantavisor-service-system@1"}"##;
    let reg = tar::EntryType::Regular;
    assert_refused(
        &craft(&[("json", reg, json), ("../x", reg, b"x")]),
        "escapes the archive",
    );
    assert_refused(
        &craft(&[("json", reg, json), ("objects/../../x", reg, b"x")]),
        "escapes the archive",
    );
    assert_refused(
        &craft(&[("/etc/x", reg, b"x"), ("json", reg, json)]),
        "escapes the archive",
    );
    assert_refused(
        &craft(&[
            ("json", reg, json),
            ("objects/link", tar::EntryType::Symlink, b""),
        ]),
        "is a symbolic link",
    );
    assert_refused(
        &craft(&[
            ("json", reg, json),
            ("objects/hard", tar::EntryType::Link, b""),
        ]),
        "is a hard link",
    );
    assert_refused(
        &craft(&[("json", reg, json), ("objects/notasha", reg, b"x")]),
        "64 lowercase hex",
    );
    assert_refused(
        &craft(&[("json", reg, json), ("etc/passwd", reg, b"x")]),
        "unexpected entry",
    );
    assert_refused(
        &craft(&[("objects/x", tar::EntryType::Char, b"")]),
        "not a regular file",
    );
    assert_refused(&craft(&[]), "no \"json\" entry");
}

#[test]
fn refuses_a_truncated_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let src = ObjectStore::open(tmp.path().join("src")).unwrap();
    let state = gateway_with_objects(&src);
    for gzip in [false, true] {
        let full = exported(&state, &src, gzip);
        for cut in [full.len() / 2, full.len() - 1100, 700] {
            assert_refused(&full[..cut], if gzip { "" } else { "pvrexport" });
        }
    }
    // Cut exactly at an entry boundary: the tar reads cleanly but objects are missing.
    let full = exported(&state, &src, false);
    let mut archive = tar::Archive::new(&full[..]);
    let mut ends = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        ends.push(e.raw_file_position() + e.size().div_ceil(512) * 512);
    }
    let cut = ends[ends.len() / 2] as usize;
    assert_refused(&full[..cut], "is not in the archive nor in the store");
}

#[test]
fn refuses_an_archive_whose_state_is_invalid() {
    let mut v = gateway();
    v["edge-app/run.json"]["status_goal"] = serde_json::json!("RUNNING");
    let json = bytes(&v);
    let archive = craft(&[("json", tar::EntryType::Regular, &json)]);
    assert_refused(&archive, "edge-app/run.json: status_goal: unknown variant");
}

#[test]
fn imports_an_archive_written_like_pvr_export() {
    // pvr writes a plain tar with PAX/USTAR headers from Go's archive/tar, the
    // state in canonical JSON first and objects by file mode of the pool.
    let tmp = tempfile::tempdir().unwrap();
    let content = b"squashfs bytes";
    let id = pvstate::ObjectId::of_bytes(content);
    let json = format!(
        r##"{{"#spec":"pantavisor-service-system@1","app/config.json":"{id}","app/root.squashfs":"{id}","app/run.json":{{"#spec":"service-manifest-run@1","config":"config.json","name":"app","root-volume":"root.squashfs","storage":{{}},"type":"lxc"}}}}"##
    );
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("json", json.as_bytes()),
        (&format!("objects/{id}")[..], &content[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o100644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let tarball = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarball).unwrap();
    let store = ObjectStore::open(tmp.path()).unwrap();
    let imported = import(&gz.finish().unwrap()[..], "app.tgz", Some(&store)).unwrap();
    assert_eq!(imported.state.to_canonical(), json.as_bytes());
    store.verify(&id).unwrap();
}
