//! Minimal HTTP/1.1 over the control socket: one request per connection,
//! answered with JSON and closed.

use serde_json::Value;

pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Whether the head carries `Authorization: Bearer <token>` (compared in
/// constant time).
pub fn bearer_ok(head: &Head, token: &str) -> bool {
    let Some(given) = head
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Largest request accepted (headers and body).
pub const MAX_REQUEST: usize = 1 << 20;

/// The request line and the headers that matter.
pub struct Head {
    pub method: String,
    pub path: String,
    pub length: u64,
    /// Bytes of the request line and headers.
    pub header_len: usize,
    pub authorization: Option<String>,
}

/// Parse the head of a request: `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let header_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad request: {e}")),
    };
    let length = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(Some(0))
        .ok_or("bad Content-Length")?;
    let authorization = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Ok(Some(Head {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("/").to_string(),
        length,
        header_len,
        authorization,
    }))
}

/// Try to parse a complete request from `buf`: `Ok(None)` when more bytes
/// are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Request>, String> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let end = head.header_len as u64 + head.length;
    if end > MAX_REQUEST as u64 {
        return Err("request too large".into());
    }
    if (buf.len() as u64) < end {
        return Ok(None);
    }
    Ok(Some(Request {
        method: head.method,
        path: head.path,
        body: buf[head.header_len..end as usize].to_vec(),
    }))
}

pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        507 => "Insufficient Storage",
        _ => "Internal Server Error",
    }
}

pub fn response(code: u16, body: &Value) -> Vec<u8> {
    raw_response(
        code,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

pub fn raw_response(code: u16, content_type: &str, body: Vec<u8>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(code),
        body.len()
    )
    .into_bytes();
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_requests_only() {
        let full = b"PUT /containers/app HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\n{\"action\":\"stop\"}\n";
        assert!(parse(&full[..20]).unwrap().is_none());
        assert!(parse(&full[..full.len() - 1]).unwrap().is_none());
        let r = parse(full).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("PUT", "/containers/app")
        );
        assert_eq!(r.body, b"{\"action\":\"stop\"}\n");
        assert!(parse(b"GARBAGE\r\n\r\n").is_err());
        assert!(parse(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").is_err());
    }
}
