#![allow(dead_code)]
//! Helpers for the composer's integration tests: running the binary, making
//! trees with every kind of file, mounting images and describing trees.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn pvcompose(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pvcompose"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// These tests mount images and make device nodes: they need root, and CI
/// runs them as root. Anywhere else they fail loudly instead of skipping.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (loop mounts, device nodes, ownership); run it as root as CI does"
    );
}

fn mknod(path: &Path, mode: u32, major: u32, minor: u32) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let dev = libc::makedev(major, minor);
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with every kind of file a Yocto rootfs has.
pub fn every_file_type(root: &Path) {
    for d in [
        "bin",
        "etc/ssl",
        "dev",
        "lib/modules/6.1",
        "var/lib/app",
        "usr/share/doc",
        "run",
        "tmp",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("bin/busybox"), vec![0x7fu8; 300_000]).unwrap();
    chmod(&root.join("bin/busybox"), 0o4755); // setuid
    fs::hard_link(root.join("bin/busybox"), root.join("bin/sh")).unwrap();
    fs::hard_link(root.join("bin/busybox"), root.join("bin/ls")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/cat")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("etc/dangling")).unwrap();
    fs::write(root.join("etc/hostname"), "gateway\n").unwrap();
    fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    chmod(&root.join("etc/shadow"), 0o640);
    chown(&root.join("etc/shadow"), 0, 42);
    fs::write(root.join("etc/ssl/key.pem"), "secret").unwrap();
    chmod(&root.join("etc/ssl/key.pem"), 0o000);
    fs::write(
        root.join("var/lib/app/data"),
        (0..100_000u32)
            .flat_map(|i| i.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    chown(&root.join("var/lib/app"), 1000, 1001);
    chown(&root.join("var/lib/app/data"), 1000, 1001);
    fs::write(root.join("usr/share/doc/big-uid"), "x").unwrap();
    chown(&root.join("usr/share/doc/big-uid"), 65534, 70000);
    chmod(&root.join("usr/share/doc"), 0o2775); // setgid dir
    chmod(&root.join("tmp"), 0o1777); // sticky
    fs::write(root.join("lib/modules/6.1/driver.ko"), "module").unwrap();
    fs::write(root.join("empty"), "").unwrap();
    mknod(&root.join("dev/null"), libc::S_IFCHR | 0o666, 1, 3);
    mknod(&root.join("dev/ttyUSB300"), libc::S_IFCHR | 0o660, 188, 300);
    mknod(&root.join("dev/sda1"), libc::S_IFBLK | 0o660, 8, 1);
    mknod(
        &root.join("dev/big-minor"),
        libc::S_IFBLK | 0o600,
        259,
        70000,
    );
    mknod(&root.join("run/initctl"), libc::S_IFIFO | 0o600, 0, 0);
    drop(std::os::unix::net::UnixListener::bind(root.join("run/app.sock")).unwrap());
    xattr::set(
        root.join("bin/busybox"),
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    )
    .unwrap();
    xattr::set(root.join("etc/hostname"), "user.origin", b"pvcompose-test").unwrap();
    xattr::set(root.join("var/lib/app"), "user.dir-attr", b"").unwrap();
    xattr::set(root.join("var/lib/app"), "trusted.overlay.opaque", b"y").unwrap();
}

/// What a tree entry is, as compared between a source tree and its mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: (u32, u32),
    pub link: Option<String>,
    pub content: Option<Vec<u8>>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every entry below `root` by relative path, and the hard-link groups.
pub fn describe(root: &Path) -> (BTreeMap<String, Meta>, Vec<Vec<String>>) {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let m = fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else if ft.is_socket() {
                "socket"
            } else {
                "other"
            };
            if kind == "file" && m.nlink() > 1 {
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            let mut xattrs = BTreeMap::new();
            if kind != "symlink" {
                for name in xattr::list(&path).unwrap() {
                    let name = name.to_string_lossy().into_owned();
                    let value = xattr::get(&path, &name).unwrap().unwrap_or_default();
                    xattrs.insert(name, value);
                }
            }
            let rdev = m.rdev();
            entries.insert(
                rel,
                Meta {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    rdev: (libc::major(rdev), libc::minor(rdev)),
                    link: (kind == "symlink")
                        .then(|| fs::read_link(&path).unwrap().to_string_lossy().into_owned()),
                    content: (kind == "file").then(|| fs::read(&path).unwrap()),
                    xattrs,
                },
            );
        }
    }
    let mut groups: Vec<Vec<String>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (entries, groups)
}

/// A squashfs image mounted read-only through a loop device; unmounted on drop.
pub struct Mounted {
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn new(image: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(image)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The part's state JSON as a value.
pub fn part_json(part: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(part.join("json")).unwrap()).unwrap()
}

/// The object file a key of a part names.
pub fn part_object(part: &Path, key: &str) -> PathBuf {
    let v = part_json(part);
    part.join("objects").join(
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} not an object")),
    )
}

/// Names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A small tree for containers whose content does not matter much.
pub fn small_tree(root: &Path, tag: &str) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("etc/os-release"), format!("NAME={tag}\n")).unwrap();
    fs::write(root.join("usr/bin/app"), tag.repeat(5000)).unwrap();
    chmod(&root.join("usr/bin/app"), 0o755);
}
