//! Talking to a device: its control socket (`unix:PATH` or a socket path),
//! the same HTTP endpoints Pantavisor's pv-ctrl serves.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

pub struct Device {
    socket: PathBuf,
}

impl Device {
    /// `unix:/run/pv-ctrl` or `/run/pv-ctrl`.
    pub fn parse(target: &str) -> Result<Self> {
        let path = target.strip_prefix("unix:").unwrap_or(target);
        if path.contains("://") {
            return Err(Error::Usage(format!(
                "{target}: only a device's control socket (unix:PATH) is supported by this build"
            )));
        }
        Ok(Device {
            socket: PathBuf::from(path),
        })
    }

    pub fn url(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// One request; returns the status and the raw body.
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let mut s = UnixStream::connect(&self.socket)
            .map_err(|e| Error::Remote(format!("{}: {e}", self.socket.display())))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: pv-ctrl\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .map_err(|e| Error::Remote(e.to_string()))?;
        // The device may answer (and close) before it read a refused body.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .map_err(|e| Error::Remote(e.to_string()))?;
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| Error::Remote("malformed answer".into()))?;
        let status = String::from_utf8_lossy(&out[..split])
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| Error::Remote("malformed status line".into()))?;
        Ok((status, out[split + 4..].to_vec()))
    }

    /// A request whose answer must be 2xx JSON.
    pub fn json(&self, method: &str, path: &str, body: &[u8]) -> Result<Value> {
        let (code, bytes) = self.call(method, path, body)?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&code) {
            let msg = v
                .get("Error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::Remote(format!("{method} {path}: {code}: {msg}")));
        }
        Ok(v)
    }
}
