//! Container parts packed from trees with every file type, mounted by the
//! kernel and compared with their source; reproducibility.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn compose(rootfs: &std::path::Path, out: &std::path::Path, extra: &[&str]) {
    let mut args = vec![
        "container",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--name",
        "gw-app",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let (code, o, e) = pvcompose(&args);
    assert_eq!(code, 0, "pvcompose failed: {o}{e}");
}

#[test]
fn every_file_type_survives_packing_for_each_compressor() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    every_file_type(&rootfs);
    let (source, source_links) = describe(&rootfs);
    assert!(
        source_links.iter().any(|g| g.len() == 3),
        "the source has a 3-file hard-link group"
    );
    for comp in ["xz", "zstd", "lz4", "gzip"] {
        let out = tmp.path().join(format!("part-{comp}"));
        compose(&rootfs, &out, &["--comp", comp, "--mtime", "1700000000"]);
        let mounted = Mounted::new(&part_object(&out, "gw-app/root.squashfs"));
        let (packed, packed_links) = describe(mounted.path());
        assert_eq!(packed_links, source_links, "{comp}: hard-link groups");
        assert_eq!(
            packed.keys().collect::<Vec<_>>(),
            source.keys().collect::<Vec<_>>(),
            "{comp}: paths"
        );
        for (path, want) in &source {
            let got = &packed[path];
            assert_eq!(got.kind, want.kind, "{comp}: {path} kind");
            assert_eq!(got.mode, want.mode, "{comp}: {path} mode");
            assert_eq!(
                (got.uid, got.gid),
                (want.uid, want.gid),
                "{comp}: {path} owner"
            );
            assert_eq!(got.link, want.link, "{comp}: {path} symlink target");
            assert_eq!(got.content, want.content, "{comp}: {path} content");
            assert_eq!(got.xattrs, want.xattrs, "{comp}: {path} xattrs");
            if want.kind == "char" || want.kind == "block" {
                assert_eq!(got.rdev, want.rdev, "{comp}: {path} device number");
            }
        }
        // Times are clamped to --mtime.
        let t = fs::metadata(mounted.path().join("etc/hostname")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(t.mtime(), 1_700_000_000);
    }
}

#[test]
fn exclusions_leave_paths_out() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    every_file_type(&rootfs);
    let out = tmp.path().join("part");
    compose(
        &rootfs,
        &out,
        &[
            "--comp",
            "zstd",
            "--exclude",
            "lib/modules",
            "--exclude",
            "**/*.sock",
            "--exclude",
            "dev/tty*",
        ],
    );
    let mounted = Mounted::new(&part_object(&out, "gw-app/root.squashfs"));
    let (packed, _) = describe(mounted.path());
    let (source, _) = describe(&rootfs);
    let expected: Vec<&String> = source
        .keys()
        .filter(|p| {
            !p.starts_with("lib/modules") && !p.ends_with(".sock") && !p.starts_with("dev/tty")
        })
        .collect();
    assert_eq!(packed.keys().collect::<Vec<_>>(), expected);
    assert!(packed.contains_key("lib") && !packed.contains_key("lib/modules"));
    // The exclusions are recorded with the part.
    let json = part_json(&out);
    assert_eq!(
        json["gw-app/src.json"]["squashfs"]["exclude"][0],
        "lib/modules"
    );
}

#[test]
fn xz_with_bcj_and_a_rootfs_tarball() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    every_file_type(&rootfs);
    // A tarball of the tree, as Yocto's IMAGE_FSTYPES tar.gz makes.
    let tarball = tmp.path().join("rootfs.tar.gz");
    let status = Command::new("tar")
        .args([
            "--create",
            "--gzip",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--file",
        ])
        .arg(&tarball)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let out = tmp.path().join("part");
    compose(
        &tarball,
        &out,
        &["--comp", "xz", "--bcj", "x86", "--block-size", "256K"],
    );
    let json = part_json(&out);
    assert_eq!(json["gw-app/src.json"]["rootfs"]["type"], "tarball");
    assert_eq!(json["gw-app/src.json"]["squashfs"]["bcj"], "x86");
    let mounted = Mounted::new(&part_object(&out, "gw-app/root.squashfs"));
    let (packed, links) = describe(mounted.path());
    let (source, source_links) = describe(&rootfs);
    assert_eq!(links, source_links);
    for (path, want) in &source {
        if want.kind == "socket" {
            // tar cannot carry sockets ("socket ignored").
            assert!(!packed.contains_key(path));
            continue;
        }
        let got = &packed[path];
        assert_eq!(
            (got.kind, got.mode, got.uid, got.gid),
            (want.kind, want.mode, want.uid, want.gid),
            "{path}"
        );
        assert_eq!(got.rdev, want.rdev, "{path}");
        assert_eq!(got.xattrs, want.xattrs, "{path}");
        assert_eq!(got.content, want.content, "{path}");
    }
    // The unpacked tree is gone: the part holds json and objects only.
    assert_eq!(listing(&out), vec!["json", "objects"]);
}

#[test]
fn the_same_inputs_on_other_paths_give_identical_bytes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("build-a/rootfs");
    every_file_type(&a);
    fs::create_dir_all(tmp.path().join("elsewhere/deep")).unwrap();
    let b = tmp.path().join("elsewhere/deep/tree");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(status.success());
    // Different time stamps on the copy: clamping must hide them.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(b.join("etc/hostname"), "gateway\n").unwrap();
    xattr::set(b.join("etc/hostname"), "user.origin", b"pvcompose-test").unwrap();
    let (out_a, out_b) = (tmp.path().join("a-out"), tmp.path().join("b-out"));
    for comp in ["xz", "zstd"] {
        compose(&a, &out_a, &["--comp", comp, "--mtime", "1650000000"]);
        compose(&b, &out_b, &["--comp", comp, "--mtime", "1650000000"]);
        assert_eq!(
            fs::read(out_a.join("json")).unwrap(),
            fs::read(out_b.join("json")).unwrap(),
            "{comp}: state JSON"
        );
        assert_eq!(
            listing(&out_a.join("objects")),
            listing(&out_b.join("objects")),
            "{comp}: objects"
        );
    }
    // SOURCE_DATE_EPOCH does the same as --mtime.
    let out_c = tmp.path().join("c-out");
    let out = Command::new(env!("CARGO_BIN_EXE_pvcompose"))
        .args([
            "container",
            "--quiet",
            "--comp",
            "zstd",
            "--name",
            "gw-app",
            "--rootfs",
        ])
        .arg(&b)
        .arg("--out")
        .arg(&out_c)
        .env("SOURCE_DATE_EPOCH", "1650000000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(out_a.join("json")).unwrap(),
        fs::read(out_c.join("json")).unwrap()
    );
}

#[test]
fn dm_verity_parts_carry_a_tree_veritysetup_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    small_tree(&rootfs, "v1");
    let out = tmp.path().join("part");
    compose(&rootfs, &out, &["--mtime", "1700000000", "--dm-verity"]);
    let json = part_json(&out);
    assert_eq!(json["gw-app/run.json"]["root-volume"], "dm:root.squashfs");
    let m = pvstate::verity::Manifest::parse(&json["gw-app/_dm/root.squashfs.json"]).unwrap();
    assert_eq!(m.data_device, "root.squashfs");
    assert_eq!(m.hash_device, "root.squashfs.hash");
    let data = part_object(&out, "gw-app/root.squashfs");
    let hash = part_object(&out, "gw-app/root.squashfs.hash");
    let verify = |data: &std::path::Path| {
        Command::new("veritysetup")
            .arg("verify")
            .arg(data)
            .arg(&hash)
            .arg(
                json["gw-app/_dm/root.squashfs.json"]["root_hash"]
                    .as_str()
                    .unwrap(),
            )
            .output()
            .expect("veritysetup (cryptsetup-bin; ci/test installs it)")
    };
    let out1 = verify(&data);
    assert!(out1.status.success(), "{out1:?}");
    // Reproducible: the same input gives the same tree and manifest.
    let again = tmp.path().join("again");
    compose(&rootfs, &again, &["--mtime", "1700000000", "--dm-verity"]);
    assert_eq!(part_json(&again), json);
    // A flipped byte in the image: the tree no longer matches.
    let mut bytes = fs::read(&data).unwrap();
    bytes[100] ^= 1;
    let copy = tmp.path().join("bad.squashfs");
    fs::write(&copy, bytes).unwrap();
    assert!(!verify(&copy).status.success());
}
