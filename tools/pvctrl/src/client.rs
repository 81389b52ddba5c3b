//! The pv-ctrl client: one request per connection, as the daemon serves it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::proto;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("{target}: {source}")]
    Io { target: String, source: io::Error },
    #[error("{target}: malformed answer: {why}")]
    Malformed { target: String, why: String },
    /// The daemon answered with a non-2xx status.
    #[error("{method} {path}: {status}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// Print each request and its answer's status to stderr (`pvr -d`).
static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turn [`DEBUG`] on or off for the process.
pub fn set_debug(on: bool) {
    DEBUG.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The control socket.
    Socket(PathBuf),
    /// The remote API: `HOST:PORT`.
    Tcp(String),
}

/// The remote API's port when an address names none (Pantavisor's pvr-sdk's).
pub const DEFAULT_PORT: u16 = 12368;

impl Target {
    /// `unix:/run/pv-ctrl`, `/run/pv-ctrl`, `http://HOST[:PORT][/…]` (Pantavisor's
    /// `http://HOST:12368/cgi-bin/pvr` too) or, as Pantavisor's pvr takes
    /// them, a bare `HOST[:PORT]` or IP address: port 12368 when none is named.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let with_port = |addr: &str| {
            // [v6]:port, host:port, or a bare host / v4 / [v6] address.
            let has_port = match addr.rsplit_once(':') {
                Some((h, p)) => {
                    !p.is_empty()
                        && p.bytes().all(|b| b.is_ascii_digit())
                        && (!h.contains(':') || h.ends_with(']'))
                }
                None => false,
            };
            if has_port {
                addr.to_string()
            } else {
                format!("{addr}:{DEFAULT_PORT}")
            }
        };
        if let Some(rest) = text.strip_prefix("http://") {
            let addr = rest.split('/').next().unwrap_or("");
            if addr.is_empty() {
                return Err(Error::Usage(format!("{text}: expected http://HOST[:PORT]")));
            }
            return Ok(Target::Tcp(with_port(addr)));
        }
        if text.starts_with("https://") {
            return Err(Error::Usage(format!(
                "{text}: https is not supported by this client yet; use http://HOST[:PORT] on a trusted network"
            )));
        }
        // A bare host or address (no '/', not an existing file): the remote API.
        let host_like = !text.is_empty()
            && !text.starts_with("unix:")
            && !text.contains('/')
            && !Path::new(text).exists()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if host_like {
            return Ok(Target::Tcp(with_port(text)));
        }
        let path = text.strip_prefix("unix:").unwrap_or(text);
        if path.contains("://") || path.is_empty() {
            return Err(Error::Usage(format!(
                "{text}: use unix:PATH or http://HOST:PORT"
            )));
        }
        Ok(Target::Socket(PathBuf::from(path)))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Target::Socket(p) => write!(f, "unix:{}", p.display()),
            Target::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

/// An answer: the status and the raw body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The daemon's reason (`{"Error": …}`), or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<proto::ErrorBody>(&self.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    token: Option<String>,
    timeout: Duration,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Client {
    pub fn new(target: Target) -> Self {
        Client {
            target,
            token: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// The control socket at `path`.
    pub fn socket(path: impl Into<PathBuf>) -> Self {
        Self::new(Target::Socket(path.into()))
    }

    /// Send `Authorization: Bearer TOKEN` (the remote API requires it).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// How long to wait for an answer (120 s by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn connect(&self) -> Result<Box<dyn Stream>, Error> {
        let target = self.target.to_string();
        let connect = |source| Error::Connect {
            target: target.clone(),
            source,
        };
        Ok(match &self.target {
            Target::Socket(p) => {
                let s = UnixStream::connect(p).map_err(connect)?;
                let _ = s.set_read_timeout(Some(self.timeout));
                Box::new(s)
            }
            Target::Tcp(addr) => {
                let s = TcpStream::connect(addr).map_err(connect)?;
                let _ = s.set_read_timeout(Some(self.timeout));
                Box::new(s)
            }
        })
    }

    /// One request with a body read from `body` (`length` bytes): the
    /// status and body of the answer, whatever the status.
    pub fn call_reader(
        &self,
        method: &str,
        path: &str,
        body: &mut dyn Read,
        length: u64,
    ) -> Result<Reply, Error> {
        let target = self.target.to_string();
        let io = |source| Error::Io {
            target: target.clone(),
            source,
        };
        let mut stream = self.connect()?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: pv-ctrl\r\n{auth}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).map_err(io)?;
        // The daemon may answer (and close) before it read a refused body:
        // its answer tells why, so a failed write is not the error.
        let _ = io::copy(&mut body.take(length), &mut stream);
        let mut out = Vec::new();
        stream.read_to_end(&mut out).map_err(io)?;
        let reply = parse_reply(&out).map_err(|why| Error::Malformed {
            target: target.clone(),
            why,
        })?;
        if DEBUG.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!(
                "pvr: {method} {target}{path} ({length} bytes) -> {} ({} bytes)",
                reply.status,
                reply.body.len()
            );
        }
        Ok(reply)
    }

    /// One request: the status and body of the answer, whatever the status.
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, Error> {
        let mut reader = body;
        self.call_reader(method, path, &mut reader, body.len() as u64)
    }

    /// A request that must succeed; its answer as JSON.
    pub fn json(&self, method: &str, path: &str, body: &[u8]) -> Result<Value, Error> {
        let reply = self.call(method, path, body)?;
        if !reply.ok() {
            return Err(Error::Status {
                method: method.into(),
                path: path.into(),
                status: reply.status,
                message: reply.message(),
            });
        }
        Ok(reply.json())
    }

    /// A request with a typed body and a typed answer.
    pub fn typed<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let v = self.json(method, path, &bytes)?;
        serde_json::from_value(v).map_err(|e| Error::Malformed {
            target: self.target.to_string(),
            why: format!("{method} {path}: {e}"),
        })
    }

    /// `POST /signal {"type":"ready"}`: the calling container is ready.
    pub fn signal_ready(&self) -> Result<(), Error> {
        let body = proto::Signal {
            kind: "ready".into(),
        };
        self.typed::<_, Value>("POST", "/signal", &body).map(|_| ())
    }

    /// `POST /commands`.
    pub fn command(&self, op: proto::Op, payload: &str) -> Result<Value, Error> {
        let body = proto::Command {
            op,
            payload: payload.into(),
        };
        self.typed("POST", "/commands", &body)
    }

    /// `PUT /containers/NAME`.
    pub fn container_action(
        &self,
        name: &str,
        action: proto::Action,
        signal: Option<i32>,
    ) -> Result<Value, Error> {
        let body = proto::ContainerAction { action, signal };
        self.typed("PUT", &format!("/containers/{name}"), &body)
    }

    /// `GET /containers`.
    pub fn containers(&self) -> Result<Vec<Value>, Error> {
        match self.json("GET", "/containers", b"")? {
            Value::Array(list) => Ok(list),
            other => Err(Error::Malformed {
                target: self.target.to_string(),
                why: format!("/containers is not a list: {other}"),
            }),
        }
    }
}

/// Split an HTTP answer into its status and body.
fn parse_reply(out: &[u8]) -> Result<Reply, String> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let status = String::from_utf8_lossy(&out[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    Ok(Reply {
        status,
        body: out[split + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("unix:/run/x").unwrap(),
            Target::Socket("/run/x".into())
        );
        assert_eq!(
            Target::parse("/run/x").unwrap(),
            Target::Socket("/run/x".into())
        );
        assert_eq!(
            Target::parse("http://10.0.0.2:12368/cgi-bin/pvr").unwrap(),
            Target::Tcp("10.0.0.2:12368".into())
        );
        // Addresses as Pantavisor's pvr takes them: port 12368 by default.
        for (given, addr) in [
            ("http://host", "host:12368"),
            ("192.168.1.3", "192.168.1.3:12368"),
            ("192.168.1.3:8080", "192.168.1.3:8080"),
            ("gateway.local", "gateway.local:12368"),
            ("[fe80::1]", "[fe80::1]:12368"),
            ("[fe80::1]:99", "[fe80::1]:99"),
        ] {
            assert_eq!(
                Target::parse(given).unwrap(),
                Target::Tcp(addr.into()),
                "{given}"
            );
        }
        assert!(Target::parse("http://").is_err());
        assert!(Target::parse("ftp://host").is_err());
        assert!(
            matches!(Target::parse("https://host"), Err(Error::Usage(m)) if m.contains("https"))
        );
    }

    /// A real socket answering once: the request as sent, and the client's
    /// reading of a refusal.
    #[test]
    fn one_request_one_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pv-ctrl");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.ends_with(b"LOCAL_RUN\",\"payload\":\"locals/a\"}") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client closed early");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 409 Conflict\r\nContent-Length: 28\r\n\r\n{\"Error\":\"already under way\"}")
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let client = Client::socket(&path).with_token(Some("t0k".into()));
        let err = client
            .command(proto::Op::LOCAL_RUN, "locals/a")
            .unwrap_err();
        let sent = server.join().unwrap();
        assert!(sent.starts_with("POST /commands HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("Authorization: Bearer t0k\r\n"), "{sent}");
        match err {
            Error::Status {
                status, message, ..
            } => assert_eq!((status, message.as_str()), (409, "already under way")),
            e => panic!("{e}"),
        }
        assert!(parse_reply(b"garbage").is_err());
    }
}
