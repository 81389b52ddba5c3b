//! What the proxy does to the bytes a consumer sends, per mediation type:
//! nothing (`unix`), identity headers in every HTTP request (`rest`), the
//! SASL EXTERNAL identity of a D-Bus connection (`dbus`). The provider's
//! replies always pass as they are.

/// Longest request head (or SASL line) accepted; a longer one ends the
/// connection rather than growing a buffer without bound.
pub const MAX_HEAD: usize = 64 * 1024;

pub enum Filter {
    Raw,
    Rest(Rest),
    Dbus(Dbus),
}

impl Filter {
    /// Append what the provider gets for `input` to `out`; an error ends
    /// the connection (`why`).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Filter::Raw => {
                out.extend_from_slice(input);
                Ok(())
            }
            Filter::Rest(r) => r.feed(input, out),
            Filter::Dbus(d) => d.feed(input, out),
        }
    }

    pub fn is_raw(&self) -> bool {
        matches!(self, Filter::Raw)
    }
}

enum RestState {
    /// Collecting a request head.
    Head,
    /// This many body bytes to pass.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data: this many bytes.
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, to the empty line.
    Trailers,
    /// After an upgrade (e.g. a WebSocket): bytes as they come.
    Raw,
}

/// HTTP/1.x requests with `X-PV-Client` and `X-PV-Role` set by the daemon.
pub struct Rest {
    client: String,
    role: String,
    state: RestState,
    line: Vec<u8>,
}

impl Rest {
    pub fn new(client: &str, role: &str) -> Self {
        Rest {
            client: client.to_string(),
            role: role.to_string(),
            state: RestState::Head,
            line: Vec::new(),
        }
    }

    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            match self.state {
                RestState::Raw => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                RestState::Body(n) => {
                    let take = (n as usize).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        RestState::Head
                    } else {
                        RestState::Body(left)
                    };
                }
                RestState::ChunkData(n) => {
                    let take = (n as usize).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        RestState::ChunkEnd(2)
                    } else {
                        RestState::ChunkData(left)
                    };
                }
                RestState::ChunkEnd(k) => {
                    let take = (k as usize).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = k - take as u8;
                    self.state = if left == 0 {
                        RestState::ChunkSize
                    } else {
                        RestState::ChunkEnd(left)
                    };
                }
                RestState::ChunkSize | RestState::Trailers => {
                    let Some(end) = input.iter().position(|&b| b == b'\n') else {
                        self.collect(input)?;
                        out.extend_from_slice(input);
                        return Ok(());
                    };
                    self.collect(&input[..=end])?;
                    out.extend_from_slice(&input[..=end]);
                    input = &input[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\r', '\n']);
                    if matches!(self.state, RestState::Trailers) {
                        if text.is_empty() {
                            self.state = RestState::Head;
                        }
                        continue;
                    }
                    let size = text.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| format!("bad chunk size line {text:?}"))?;
                    self.state = if size == 0 {
                        RestState::Trailers
                    } else {
                        RestState::ChunkData(size)
                    };
                }
                RestState::Head => {
                    // Blank lines between requests are tolerated (RFC 9112 2.2).
                    if self.line.is_empty() {
                        let skip = input.iter().take_while(|&&b| b == b'\r' || b == b'\n');
                        let n = skip.count();
                        out.extend_from_slice(&input[..n]);
                        input = &input[n..];
                        if input.is_empty() {
                            return Ok(());
                        }
                    }
                    let before = self.line.len();
                    let start = before.saturating_sub(3);
                    self.collect(input)?;
                    let Some(end) = find(&self.line[start..], b"\r\n\r\n").map(|i| start + i + 4)
                    else {
                        return Ok(());
                    };
                    // Bytes of `input` past the head go round again.
                    let used = end - before;
                    self.line.truncate(end);
                    input = &input[used..];
                    let head = std::mem::take(&mut self.line);
                    self.rewrite_head(&head, out)?;
                }
            }
        }
        Ok(())
    }

    fn collect(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.line.len() + bytes.len() > MAX_HEAD {
            return Err(format!("request head over {MAX_HEAD} bytes"));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// The head with our identity headers in place of any the client sent;
    /// sets what follows it.
    fn rewrite_head(&mut self, head: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
            Err(e) => return Err(format!("not an HTTP request: {e}")),
        }
        let mut length = None;
        let mut chunked = false;
        let mut upgrade = false;
        out.extend_from_slice(
            format!(
                "{} {} HTTP/1.{}\r\n",
                req.method.unwrap_or("GET"),
                req.path.unwrap_or("/"),
                req.version.unwrap_or(1)
            )
            .as_bytes(),
        );
        for h in req.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            let value = String::from_utf8_lossy(h.value);
            match name.as_str() {
                "x-pv-client" | "x-pv-role" => continue,
                "content-length" => {
                    length = Some(
                        value
                            .trim()
                            .parse::<u64>()
                            .map_err(|_| format!("bad Content-Length {value:?}"))?,
                    )
                }
                "transfer-encoding" => chunked |= value.to_ascii_lowercase().contains("chunked"),
                "connection" => upgrade |= value.to_ascii_lowercase().contains("upgrade"),
                _ => {}
            }
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(
            format!(
                "X-PV-Client: {}\r\nX-PV-Role: {}\r\n\r\n",
                self.client, self.role
            )
            .as_bytes(),
        );
        self.state = if upgrade {
            RestState::Raw
        } else if chunked {
            RestState::ChunkSize
        } else {
            match length {
                Some(n) if n > 0 => RestState::Body(n),
                _ => RestState::Head,
            }
        };
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

enum DbusState {
    /// The credentials byte (a NUL) every D-Bus client sends first.
    Nul,
    /// SASL lines, up to BEGIN.
    Auth,
    Raw,
}

/// A D-Bus connection authenticated as `uid`: the SASL EXTERNAL identity
/// the client sends is replaced by it (the proxy connected as that UID, so
/// the bus's peer credentials agree).
pub struct Dbus {
    uid: u32,
    state: DbusState,
    line: Vec<u8>,
}

impl Dbus {
    pub fn new(uid: u32) -> Self {
        Dbus {
            uid,
            state: DbusState::Nul,
            line: Vec::new(),
        }
    }

    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            match self.state {
                DbusState::Raw => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                DbusState::Nul => {
                    if input[0] != 0 {
                        return Err("a D-Bus client starts with a NUL byte".into());
                    }
                    out.push(0);
                    input = &input[1..];
                    self.state = DbusState::Auth;
                }
                DbusState::Auth => {
                    let Some(end) = input.iter().position(|&b| b == b'\n') else {
                        if self.line.len() + input.len() > MAX_HEAD {
                            return Err("SASL line too long".into());
                        }
                        self.line.extend_from_slice(input);
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input[..=end]);
                    input = &input[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\r', '\n']);
                    let mut words = text.split(' ');
                    match (words.next(), words.next(), words.next()) {
                        (Some("AUTH"), Some("EXTERNAL"), Some(_)) => {
                            let id = hex::encode(self.uid.to_string());
                            out.extend_from_slice(format!("AUTH EXTERNAL {id}\r\n").as_bytes());
                        }
                        (Some("BEGIN"), None, None) => {
                            out.extend_from_slice(&line);
                            self.state = DbusState::Raw;
                        }
                        _ => out.extend_from_slice(&line),
                    }
                }
            }
        }
        Ok(())
    }
}

/// The UID `role` has in `passwd` (a provider's `/etc/passwd`): a numeric
/// role is the UID itself; a role the file does not name is `nobody`
/// (65534), as Pantavisor does.
pub fn role_uid(role: &str, passwd: &str) -> u32 {
    if let Ok(uid) = role.parse::<u32>() {
        return uid;
    }
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == role)
        .and_then(|(_, uid)| uid.parse().ok())
        .unwrap_or(65534)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: &mut Filter, pieces: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for p in pieces {
            f.feed(p, &mut out).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_request_gets_the_daemons_identity_and_a_forged_one_is_dropped() {
        let mut f = Filter::Rest(Rest::new("edge-app", "reader"));
        let a = b"POST /v1/x HTTP/1.1\r\nHost: x\r\nX-PV-Client: admin\r\nx-pv-role: root\r\nContent-Length: 5\r\n\r\nhello";
        let b = b"GET /v1/y HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /z HTTP/1.1\r\n\r\n";
        // Fed a byte at a time and whole: the same result.
        let whole = run(&mut f, &[a, b]);
        let mut g = Filter::Rest(Rest::new("edge-app", "reader"));
        let bytes: Vec<&[u8]> = a.iter().chain(b.iter()).map(std::slice::from_ref).collect();
        assert_eq!(run(&mut g, &bytes), whole);
        assert_eq!(
            whole.matches("X-PV-Client: edge-app\r\n").count(),
            3,
            "{whole}"
        );
        assert_eq!(whole.matches("X-PV-Role: reader\r\n").count(), 3, "{whole}");
        assert!(
            !whole.contains("admin") && !whole.contains("root"),
            "{whole}"
        );
        // Bodies pass untouched, and a body that looks like a head is a body.
        assert!(whole.contains("\r\n\r\nhello"), "{whole}");
        assert!(whole.contains("3\r\nabc\r\n0\r\n\r\nGET /z"), "{whole}");
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_rewritten() {
        let mut f = Filter::Rest(Rest::new("c", "any"));
        let body = "GET / HTTP/1.1\r\nX-PV-Role: admin\r\n\r\n";
        let req = format!(
            "PUT /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = run(&mut f, &[req.as_bytes()]);
        assert!(out.ends_with(body), "{out}");
    }

    #[test]
    fn garbage_and_endless_heads_end_the_connection() {
        let mut f = Filter::Rest(Rest::new("c", "any"));
        assert!(f
            .feed(b"\x16\x03\x01 not http\r\n\r\n", &mut Vec::new())
            .is_err());
        let mut f = Filter::Rest(Rest::new("c", "any"));
        let big = vec![b'a'; MAX_HEAD + 1];
        assert!(f.feed(&big, &mut Vec::new()).is_err());
    }

    #[test]
    fn dbus_external_identity_is_the_roles_uid() {
        let mut f = Filter::Dbus(Dbus::new(1001));
        let out = run(
            &mut f,
            &[
                b"\0AUTH EXTERNAL 30\r\nNEGOTIATE_UNIX_FD\r\n",
                b"BEGIN\r\nl\x01\x00\x01AUTH EXTERNAL 30\r\n",
            ],
        );
        assert_eq!(
            out,
            "\0AUTH EXTERNAL 31303031\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\nl\x01\x00\x01AUTH EXTERNAL 30\r\n"
        );
        assert!(Filter::Dbus(Dbus::new(1))
            .feed(b"AUTH", &mut Vec::new())
            .is_err());
    }

    #[test]
    fn roles_map_to_the_providers_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\noperator:x:1001:1001::/:/bin/false\n";
        assert_eq!(role_uid("operator", passwd), 1001);
        assert_eq!(role_uid("root", passwd), 0);
        assert_eq!(role_uid("4242", passwd), 4242);
        assert_eq!(role_uid("stranger", passwd), 65534);
    }
}
