//! Talking to a device: its control socket (`unix:PATH` or a socket path) or
//! its remote API (`http://HOST:PORT`, with a bearer token from `--token` or
//! `PVR_TOKEN`), the same HTTP endpoints Pantavisor's pv-ctrl serves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

pub enum Device {
    Socket(PathBuf),
    Http { addr: String, token: Option<String> },
}

impl Device {
    /// `unix:/run/pv-ctrl`, `/run/pv-ctrl` or `http://HOST:PORT[/…]`.
    pub fn parse(target: &str, token: Option<String>) -> Result<Self> {
        if let Some(rest) = target.strip_prefix("http://") {
            let addr = rest.split('/').next().unwrap_or("").to_string();
            if !addr.contains(':') {
                return Err(Error::Usage(format!("{target}: expected http://HOST:PORT")));
            }
            return Ok(Device::Http { addr, token });
        }
        let path = target.strip_prefix("unix:").unwrap_or(target);
        if path.contains("://") {
            return Err(Error::Usage(format!(
                "{target}: use unix:PATH or http://HOST:PORT"
            )));
        }
        Ok(Device::Socket(PathBuf::from(path)))
    }

    pub fn url(&self) -> String {
        match self {
            Device::Socket(p) => format!("unix:{}", p.display()),
            Device::Http { addr, .. } => format!("http://{addr}"),
        }
    }

    /// One request; returns the status and the raw body.
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let (mut stream, auth): (Box<dyn ReadWrite>, String) = match self {
            Device::Socket(p) => {
                let s = UnixStream::connect(p)
                    .map_err(|e| Error::Remote(format!("{}: {e}", p.display())))?;
                let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                (Box::new(s), String::new())
            }
            Device::Http { addr, token } => {
                let s =
                    TcpStream::connect(addr).map_err(|e| Error::Remote(format!("{addr}: {e}")))?;
                let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                let auth = token
                    .as_ref()
                    .map(|t| format!("Authorization: Bearer {t}\r\n"))
                    .unwrap_or_default();
                (Box::new(s), auth)
            }
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: pv-ctrl\r\n{auth}Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .map_err(|e| Error::Remote(e.to_string()))?;
        // The device may answer (and close) before it read a refused body.
        let _ = stream.write_all(body);
        let mut out = Vec::new();
        stream
            .read_to_end(&mut out)
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

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
