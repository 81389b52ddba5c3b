//! The control API's transport: the unix socket (callers identified by
//! their peer credentials) and the optional remote TCP listener (bearer
//! token), one request per connection, object uploads streamed to storage.
//! It has its own epoll, which the daemon's loop watches as one fd.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use pvstate::store::ObjectWriter;
use serde_json::json;

use super::conn::Conn;
use super::{http, routes, status, Answer, Caller, Service};
use crate::config::Options;
use crate::error::{Error, Refusal, Result};

const TOKEN_UNIX: u64 = 1;
const TOKEN_TCP: u64 = 2;
const TOKEN_CLIENT_BASE: u64 = 1_000;

/// An object upload under way.
struct Upload {
    writer: ObjectWriter,
    remaining: u64,
}

struct Client {
    stream: Conn,
    caller: Caller,
    /// Came over TCP: the bearer token is checked once the head is in.
    remote: bool,
    buf: Vec<u8>,
    upload: Option<Upload>,
}

pub struct Server {
    epoll: Epoll,
    unix: UnixListener,
    tcp: Option<TcpListener>,
    token: Option<String>,
    clients: HashMap<u64, Client>,
    next_client: u64,
    socket: std::path::PathBuf,
    /// The socket file we made, to remove only that one at the end.
    socket_inode: u64,
}

impl AsFd for Server {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl Server {
    /// Bind the control socket (and the remote listener when configured).
    pub fn bind(opts: &Options) -> Result<Self> {
        let path = &opts.ctrl_socket;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let _ = fs::remove_file(path);
        let unix = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
        let socket_inode = fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
        unix.set_nonblocking(true).map_err(|e| Error::io(path, e))?;
        // Containers of any user may talk to the socket.
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o666));
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::sys("epoll", e))?;
        epoll
            .add(
                unix.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_UNIX),
            )
            .map_err(|e| Error::sys("epoll add", e))?;
        let tcp = match (&opts.remote_listen, &opts.remote_token) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::Other(
                    "remote.listen needs remote.token: no token, no remote access".into(),
                ))
            }
            (Some(addr), Some(_)) => {
                let l = TcpListener::bind(addr)
                    .map_err(|e| Error::Other(format!("remote.listen {addr}: {e}")))?;
                l.set_nonblocking(true)
                    .map_err(|e| Error::Other(format!("remote.listen {addr}: {e}")))?;
                epoll
                    .add(l.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TCP))
                    .map_err(|e| Error::sys("epoll add", e))?;
                info!("remote API on {addr} (bearer token required)");
                Some(l)
            }
        };
        Ok(Server {
            epoll,
            unix,
            tcp,
            token: opts.remote_token.clone(),
            clients: HashMap::new(),
            next_client: 0,
            socket: path.clone(),
            socket_inode,
        })
    }

    /// Serve whatever is ready, without blocking.
    pub fn poll(&mut self, svc: &mut dyn Service) {
        let mut events = vec![EpollEvent::empty(); 32];
        let n = self
            .epoll
            .wait(&mut events, EpollTimeout::ZERO)
            .unwrap_or(0);
        for ev in events.iter().take(n) {
            match ev.data() {
                TOKEN_UNIX => self.accept_unix(svc),
                TOKEN_TCP => self.accept_tcp(),
                t => self.on_client(t, svc),
            }
        }
    }

    /// Remove the socket file, if it is still ours.
    pub fn close(&self) {
        if fs::metadata(&self.socket).map(|m| m.ino()).ok() == Some(self.socket_inode) {
            let _ = fs::remove_file(&self.socket);
        }
    }

    fn accept_unix(&mut self, svc: &dyn Service) {
        loop {
            match self.unix.accept() {
                Ok((stream, _)) => {
                    let caller = getsockopt(&stream, PeerCredentials)
                        .map(|cred| svc.caller_of(cred.pid()))
                        .unwrap_or(Caller::Host);
                    self.add_client(Conn::Unix(stream), caller, false);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("control socket: {e}");
                    return;
                }
            }
        }
    }

    fn accept_tcp(&mut self) {
        loop {
            let Some(l) = self.tcp.as_ref() else { return };
            match l.accept() {
                Ok((stream, _)) => self.add_client(Conn::Tcp(stream), Caller::Remote, true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("remote API: {e}");
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, stream: Conn, caller: Caller, remote: bool) {
        let _ = stream.set_nonblocking(true);
        let token = TOKEN_CLIENT_BASE + self.next_client;
        self.next_client += 1;
        if self
            .epoll
            .add(stream.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
            .is_ok()
        {
            let client = Client {
                stream,
                caller,
                remote,
                buf: Vec::new(),
                upload: None,
            };
            self.clients.insert(token, client);
        }
    }

    fn on_client(&mut self, token: u64, svc: &mut dyn Service) {
        let Some(mut client) = self.clients.remove(&token) else {
            return;
        };
        let (reply, closed) = self.read_request(&mut client, svc);
        if reply.is_none() && !closed {
            self.clients.insert(token, client);
            return;
        }
        let _ = self.epoll.delete(client.stream.as_fd());
        // An upload the peer abandoned is dropped: its temporary file goes.
        client.upload = None;
        if let Some(bytes) = reply {
            let _ = client.stream.set_nonblocking(false);
            let _ = client
                .stream
                .set_write_timeout(Some(Duration::from_secs(30)));
            let _ = client.stream.write_all(&bytes);
        }
    }

    /// Read what the peer sent; the answer once there is one, and whether
    /// the peer closed.
    fn read_request(&self, client: &mut Client, svc: &mut dyn Service) -> (Option<Vec<u8>>, bool) {
        let mut chunk = vec![0u8; 65536];
        loop {
            let n = match client.stream.read(&mut chunk) {
                Ok(0) => return (None, true),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return (None, true),
            };
            if let Some(up) = client.upload.as_mut() {
                if let Some(answer) = feed(up, &chunk[..n]) {
                    return (Some(answer), false);
                }
                if up.remaining == 0 {
                    let up = client.upload.take();
                    return (up.map(finish), false);
                }
                continue;
            }
            client.buf.extend_from_slice(&chunk[..n]);
            let head = match http::parse_head(&client.buf) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    if client.buf.len() > http::MAX_REQUEST {
                        return (
                            Some(status::response(&Refusal::TooLarge(
                                "request too large".into(),
                            ))),
                            false,
                        );
                    }
                    continue;
                }
                Err(e) => return (Some(status::response(&Refusal::Invalid(e))), false),
            };
            if client.remote {
                let token = self.token.as_deref().unwrap_or("");
                if !http::bearer_ok(&head, token) {
                    let why = if head.authorization.is_some() {
                        "wrong token"
                    } else {
                        "a bearer token is required"
                    };
                    return (
                        Some(status::response(&Refusal::Unauthorized(why.into()))),
                        false,
                    );
                }
            }
            // An object upload is streamed to storage, not held in memory.
            if head.method == "PUT" && head.path.starts_with("/objects/") {
                let sha = &head.path["/objects/".len()..];
                let begun = svc.may_manage(&client.caller).and_then(|()| {
                    let id = sha
                        .parse()
                        .map_err(|_| Refusal::Invalid(format!("\"{sha}\" is not an object id")))?;
                    svc.begin_upload(&id, head.length)
                });
                let mut up = match begun {
                    Ok(writer) => Upload {
                        writer,
                        remaining: head.length,
                    },
                    Err(r) => return (Some(status::response(&r)), false),
                };
                let body = client.buf.split_off(head.header_len);
                client.buf.clear();
                if let Some(answer) = feed(&mut up, &body) {
                    return (Some(answer), false);
                }
                if up.remaining == 0 {
                    return (Some(finish(up)), false);
                }
                client.upload = Some(up);
                continue;
            }
            match http::parse(&client.buf) {
                Ok(Some(req)) => return (Some(answer(svc, &client.caller, &req)), false),
                Ok(None) => {}
                Err(e) => return (Some(status::response(&Refusal::Invalid(e))), false),
            }
        }
        (None, false)
    }
}

/// Route a complete request and answer it.
fn answer(svc: &mut dyn Service, caller: &Caller, req: &http::Request) -> Vec<u8> {
    let result = routes::route(req).and_then(|call| {
        if !call.open_to_all() {
            svc.may_manage(caller)?;
        }
        svc.call(caller, call)
    });
    match result {
        Ok(Answer::Json(v)) => http::response(200, &v),
        Ok(Answer::File(path)) => match fs::read(&path) {
            Ok(bytes) => http::raw_response(200, "application/octet-stream", bytes),
            Err(e) => status::response(&Refusal::io(path.display(), &e)),
        },
        Err(r) => status::response(&r),
    }
}

/// Feed upload bytes; an answer when the write failed.
fn feed(up: &mut Upload, data: &[u8]) -> Option<Vec<u8>> {
    let take = (data.len() as u64).min(up.remaining) as usize;
    if let Err(e) = up.writer.write(&data[..take]) {
        return Some(status::response(&object_refusal(e)));
    }
    up.remaining -= take as u64;
    None
}

/// The upload is complete: check its hash and put it in place.
fn finish(up: Upload) -> Vec<u8> {
    match up.writer.finish() {
        Ok((id, _)) => http::response(200, &json!({"object": id.to_string()})),
        Err(e) => status::response(&object_refusal(e)),
    }
}

fn object_refusal(e: pvstate::Error) -> Refusal {
    match e {
        pvstate::Error::HashMismatch { .. } => Refusal::Corrupt(e.to_string()),
        pvstate::Error::Io { ref source, .. } => Refusal::io("object", source),
        other => Refusal::Failed(other.to_string()),
    }
}
