#![allow(dead_code)]
//! Helpers of the QEMU tests: paths, commands, workspace binaries, and the
//! device's remote API through a forwarded port (token `tok`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_pantavisor")).with_file_name(name);
    if !path.exists() {
        run(Command::new(env!("CARGO")).args(["build", "-p", package]));
    }
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The device's remote API through the forwarded port.
pub fn api(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Value::Null);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        return (0, Value::Null);
    };
    (
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

pub fn pvr(dir: &Path, args: &[&str]) -> String {
    run(Command::new(workspace_bin("pvr", "pvr"))
        .arg("-C")
        .arg(dir)
        .args(args))
}
