//! Our dm-verity hash trees against cryptsetup's `veritysetup` (an
//! independent implementation; ci/test installs cryptsetup-bin): it accepts
//! our trees and builds the same bytes from the same salt and uuid.

use std::path::Path;
use std::process::Command;

use pvstate::verity::{build, Superblock};

fn veritysetup(args: &[&str]) -> (bool, String) {
    let out = Command::new("veritysetup")
        .args(args)
        .output()
        .expect("veritysetup (cryptsetup-bin; ci/test installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn squashfs(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    // Enough data for a two-level tree (more than 128 blocks).
    for i in 0..40 {
        let body: Vec<u8> = (0..20_000u32)
            .map(|n| (n.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8)
            .collect();
        std::fs::write(tree.join(format!("bin/f{i}")), body).unwrap();
    }
    let image = dir.join("root.squashfs");
    let out = Command::new("mksquashfs")
        .arg(&tree)
        .arg(&image)
        .args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-noI",
            "-noD",
            "-noF",
            "-noX",
        ])
        .output()
        .expect("mksquashfs (squashfs-tools; ci/test installs it)");
    assert!(out.status.success(), "{out:?}");
    image
}

#[test]
fn veritysetup_verifies_our_tree_and_builds_the_same_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let image = squashfs(d);
    let data = std::fs::read(&image).unwrap();
    assert!(data.len() / 4096 > 128, "{} bytes", data.len());
    let (device, m) = build(
        &mut &data[..],
        b"seed",
        "root.squashfs",
        "root.squashfs.hash",
    )
    .unwrap();
    let hash = d.join("root.squashfs.hash");
    std::fs::write(&hash, &device).unwrap();
    let root = hex::encode(m.root_hash);
    let (ok, text) = veritysetup(&[
        "verify",
        image.to_str().unwrap(),
        hash.to_str().unwrap(),
        &root,
    ]);
    assert!(ok, "{text}");

    // Given our salt and uuid, veritysetup makes the same bytes and root.
    let theirs = d.join("theirs.hash");
    let (ok, text) = veritysetup(&[
        "format",
        image.to_str().unwrap(),
        theirs.to_str().unwrap(),
        "--salt",
        &hex::encode(&m.salt),
        "--uuid",
        &m.uuid,
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("Root hash:      \t{root}")) || text.contains(&root),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&theirs).unwrap(),
        device,
        "the hash devices differ"
    );
    let sb = Superblock::parse(&device).unwrap();
    assert_eq!(sb.data_bytes(), data.len() as u64);

    // One flipped byte of the data: veritysetup refuses it.
    let mut bad = data.clone();
    bad[4096 * 7 + 100] ^= 0x40;
    std::fs::write(&image, &bad).unwrap();
    let (ok, text) = veritysetup(&[
        "verify",
        image.to_str().unwrap(),
        hash.to_str().unwrap(),
        &root,
    ]);
    assert!(!ok, "a corrupted block must not verify: {text}");
}
