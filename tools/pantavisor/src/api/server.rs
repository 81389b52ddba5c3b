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
use pvstate::ObjectId;
use serde_json::json;

use super::conn::Conn;
use super::{http, routes, status, Answer, Caller, Service};
use crate::config::Options;
use crate::error::{Error, Refusal, Result};

const TOKEN_UNIX: u64 = 1;
const TOKEN_TCP: u64 = 2;
const TOKEN_CLIENT_BASE: u64 = 1_000;

/// An object upload under way: the object itself, or a chunk delta
/// (`PUT /objects/SHA/delta`, pvstate::chunks) that builds it from objects
/// the device holds and the chunks it carries.
struct Upload {
    writer: Sink,
    remaining: u64,
}

enum Sink {
    Whole(ObjectWriter),
    Delta(Box<pvstate::chunks::DeltaWriter>),
}

impl Sink {
    fn write(&mut self, data: &[u8]) -> pvstate::Result<()> {
        match self {
            Sink::Whole(w) => w.write(data),
            Sink::Delta(d) => d.write(data),
        }
    }

    fn finish(self) -> pvstate::Result<(ObjectId, u64)> {
        match self {
            Sink::Whole(w) => w.finish(),
            Sink::Delta(d) => d.finish(),
        }
    }
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
        // bind(2) makes the file before listen(2) runs: a client connecting
        // in between is refused. Bind under a temporary name and rename the
        // listening socket into place, so the path appears ready.
        let tmp = path.with_extension("new");
        let _ = fs::remove_file(&tmp);
        let unix = UnixListener::bind(&tmp).map_err(|e| Error::io(&tmp, e))?;
        unix.set_nonblocking(true).map_err(|e| Error::io(&tmp, e))?;
        // Containers of any user may talk to the socket.
        let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666));
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        let socket_inode = fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
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

    /// Where the remote API listens, if it does.
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
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
            if client.upload.is_some() {
                if let Some(answer) = feed(&mut client.upload, &chunk[..n]) {
                    return (Some(answer), false);
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
                let (sha, delta) = match sha.strip_suffix("/delta") {
                    Some(s) => (s, true),
                    None => (sha, false),
                };
                let begun = svc.may_manage(&client.caller).and_then(|()| {
                    let id: ObjectId = sha
                        .parse()
                        .map_err(|_| Refusal::Invalid(format!("\"{sha}\" is not an object id")))?;
                    let writer = svc.begin_upload(&id, head.length)?;
                    Ok(if delta {
                        Sink::Delta(Box::new(pvstate::chunks::DeltaWriter::over(writer, &id)))
                    } else {
                        Sink::Whole(writer)
                    })
                });
                client.upload = match begun {
                    Ok(writer) => Some(Upload {
                        writer,
                        remaining: head.length,
                    }),
                    Err(r) => return (Some(status::response(&r)), false),
                };
                let body = client.buf.split_off(head.header_len);
                client.buf.clear();
                if let Some(answer) = feed(&mut client.upload, &body) {
                    return (Some(answer), false);
                }
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

/// Feed bytes to the upload under way. The answer once it ended: written
/// in full (its hash checked, the object put in place) or failed; the upload
/// is then gone (an unfinished one takes its temporary file with it).
fn feed(upload: &mut Option<Upload>, data: &[u8]) -> Option<Vec<u8>> {
    let up = upload.as_mut()?;
    let take = (data.len() as u64).min(up.remaining) as usize;
    if let Err(e) = up.writer.write(&data[..take]) {
        *upload = None;
        return Some(status::response(&object_refusal(e)));
    }
    up.remaining -= take as u64;
    if up.remaining > 0 {
        return None;
    }
    let up = upload.take()?;
    Some(match up.writer.finish() {
        Ok((id, _)) => http::response(200, &json!({"object": id.to_string()})),
        Err(e) => status::response(&object_refusal(e)),
    })
}

fn object_refusal(e: pvstate::Error) -> Refusal {
    match e {
        pvstate::Error::HashMismatch { .. } => Refusal::Corrupt(e.to_string()),
        pvstate::Error::Archive { .. } => Refusal::Invalid(e.to_string()),
        pvstate::Error::Io { ref source, .. } => Refusal::io("object", source),
        other => Refusal::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    //! The transport against a small [`Service`] of its own: real sockets,
    //! a real object store, no daemon (and no root).

    use super::*;
    use crate::config::{Mode, Paths};
    use pvctrl::{Client, Target};
    use pvstate::ObjectStore;
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Svc {
        objects: ObjectStore,
        /// Callers are containers without rights when set.
        plain: bool,
    }

    impl Service for Svc {
        fn caller_of(&self, _pid: i32) -> Caller {
            if self.plain {
                Caller::Container {
                    uid: 1,
                    name: "plain".into(),
                }
            } else {
                Caller::Host
            }
        }
        fn may_manage(&self, caller: &Caller) -> Result<(), Refusal> {
            match caller {
                Caller::Container { name, .. } => Err(Refusal::Denied(format!("{name} may not"))),
                _ => Ok(()),
            }
        }
        fn call(&mut self, caller: &Caller, call: super::super::Call) -> Result<Answer, Refusal> {
            Ok(Answer::Json(
                json!({"call": format!("{call:?}"), "caller": format!("{caller:?}")}),
            ))
        }
        fn begin_upload(
            &mut self,
            id: &pvstate::ObjectId,
            _len: u64,
        ) -> Result<ObjectWriter, Refusal> {
            self.objects
                .writer(Some(id))
                .map_err(|e| Refusal::Failed(e.to_string()))
        }
    }

    /// A server on a temporary socket (and loopback TCP with token "t"),
    /// served by a thread until the returned flag is set.
    fn serve(
        plain: bool,
    ) -> (
        tempfile::TempDir,
        Client,
        Client,
        Arc<AtomicBool>,
        std::thread::JoinHandle<Svc>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            storage: dir.path().into(),
            ctrl_socket: dir.path().join("pv-ctrl"),
            run_dir: dir.path().join("run"),
            cgroup_parent: None,
        };
        let opts = crate::config::Options::parse(
            "remote.listen=127.0.0.1:0\nremote.token=t\n",
            paths,
            Mode::Appengine,
        )
        .unwrap();
        let mut server = Server::bind(&opts).unwrap();
        let tcp = Target::Tcp(server.remote_addr().unwrap().to_string());
        let mut svc = Svc {
            objects: ObjectStore::open(dir.path().join("objects")).unwrap(),
            plain,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                server.poll(&mut svc);
                std::thread::sleep(Duration::from_millis(1));
            }
            server.close();
            svc
        });
        let unix = Client::socket(dir.path().join("pv-ctrl"));
        (dir, unix, Client::new(tcp), stop, thread)
    }

    #[test]
    fn requests_are_routed_and_remote_ones_need_the_token() {
        let (dir, unix, tcp, stop, thread) = serve(false);
        let v = unix.json("GET", "/buildinfo", b"").unwrap();
        assert_eq!(
            (v["call"].as_str(), v["caller"].as_str()),
            (Some("BuildInfo"), Some("Host"))
        );
        // Routing refusals keep their codes.
        assert_eq!(unix.call("GET", "/nowhere", b"").unwrap().status, 404);
        assert_eq!(unix.call("GARBAGE", "", b"").unwrap().status, 400);
        // Remote: no token, a wrong one, the right one.
        let r = tcp.call("GET", "/buildinfo", b"").unwrap();
        assert_eq!(
            (r.status, r.message().as_str()),
            (401, "a bearer token is required")
        );
        let r = tcp
            .clone()
            .with_token(Some("x".into()))
            .call("GET", "/buildinfo", b"")
            .unwrap();
        assert_eq!((r.status, r.message().as_str()), (401, "wrong token"));
        let v = tcp
            .with_token(Some("t".into()))
            .json("GET", "/buildinfo", b"")
            .unwrap();
        assert_eq!(v["caller"], "Remote");
        stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();
        assert!(
            !dir.path().join("pv-ctrl").exists(),
            "the socket is removed at the end"
        );
    }

    #[test]
    fn uploads_stream_to_the_store_and_bad_ones_leave_nothing() {
        let (dir, unix, _, stop, thread) = serve(false);
        // 3 MiB: more than one read of the socket, more than MAX_REQUEST.
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        let id = hex::encode(Sha256::digest(&data));
        let r = unix.call("PUT", &format!("/objects/{id}"), &data).unwrap();
        assert_eq!(r.status, 200, "{}", r.message());
        assert_eq!(
            std::fs::read(dir.path().join("objects").join(&id)).unwrap(),
            data
        );
        // Content that does not hash to its name: refused, nothing left.
        let wrong = "0".repeat(64);
        let r = unix
            .call("PUT", &format!("/objects/{wrong}"), b"not it")
            .unwrap();
        assert_eq!(r.status, 422, "{}", r.message());
        assert!(r.message().contains("content hashes to"), "{}", r.message());
        let r = unix.call("PUT", "/objects/xyz", b"x").unwrap();
        assert_eq!(r.status, 400);
        stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path().join("objects"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [id], "no temporary file remains");
    }

    #[test]
    fn a_chunk_delta_builds_an_object_from_one_the_store_holds() {
        use pvstate::chunks::{encode, Index};
        let (dir, unix, _, stop, thread) = serve(false);
        let old: Vec<u8> = (0..2u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let old_id = hex::encode(Sha256::digest(&old));
        assert_eq!(
            unix.call("PUT", &format!("/objects/{old_id}"), &old)
                .unwrap()
                .status,
            200
        );
        let mut new = old.clone();
        new[1_000_000..1_000_100].fill(7);
        let tmp = tempfile::tempdir().unwrap();
        let new_path = tmp.path().join("new");
        std::fs::write(&new_path, &new).unwrap();
        let (a, b) = (
            Index::of_reader(&old[..]).unwrap(),
            Index::of_file(&new_path).unwrap(),
        );
        let mut stream = Vec::new();
        encode(
            &b,
            &std::fs::File::open(&new_path).unwrap(),
            &[&a],
            &mut stream,
        )
        .unwrap();
        assert!(stream.len() < 200_000, "{}", stream.len());
        let path = format!("/objects/{}/delta", b.object);
        let r = unix.call("PUT", &path, &stream).unwrap();
        assert_eq!(r.status, 200, "{}", r.message());
        assert_eq!(
            std::fs::read(dir.path().join("objects").join(b.object.to_string())).unwrap(),
            new
        );
        // A delta whose base the device lacks: refused, saying what to do.
        let mut other = Vec::new();
        let c = Index::of_reader(&new[..100_000]).unwrap();
        std::fs::write(tmp.path().join("c"), &new[..100_000]).unwrap();
        let ghost = Index {
            object: "1".repeat(64).parse().unwrap(),
            ..a.clone()
        };
        encode(
            &c,
            &std::fs::File::open(tmp.path().join("c")).unwrap(),
            &[&ghost],
            &mut other,
        )
        .unwrap();
        let r = unix
            .call("PUT", &format!("/objects/{}/delta", c.object), &other)
            .unwrap();
        assert_eq!(r.status, 400, "{}", r.message());
        assert!(
            r.message().contains("send the object whole"),
            "{}",
            r.message()
        );
        // A delta cut off mid-body (the connection drops): what it built is
        // kept for the next transfer of that object.
        let mut new2 = new.clone();
        new2[10..20].fill(9);
        std::fs::write(&new_path, &new2).unwrap();
        let b2 = Index::of_file(&new_path).unwrap();
        let mut stream = Vec::new();
        encode(
            &b2,
            &std::fs::File::open(&new_path).unwrap(),
            &[&a],
            &mut stream,
        )
        .unwrap();
        {
            use std::io::Write;
            let mut s =
                std::os::unix::net::UnixStream::connect(dir.path().join("pv-ctrl")).unwrap();
            write!(
                s,
                "PUT /objects/{}/delta HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                b2.object,
                stream.len()
            )
            .unwrap();
            s.write_all(&stream[..stream.len() - 100]).unwrap();
        }
        let kept = dir
            .path()
            .join("objects/.partial")
            .join(b2.object.to_string());
        let mut waited = 0;
        while !kept.exists() && waited < 100 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            waited += 1;
        }
        let part = std::fs::read(&kept).unwrap();
        assert!(
            part.len() > 500_000 && new2.starts_with(&part),
            "{}",
            part.len()
        );
        stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();
    }

    #[test]
    fn callers_without_rights_may_only_signal() {
        let (dir, unix, _, stop, thread) = serve(true);
        let r = unix
            .call("PUT", &format!("/objects/{}", "0".repeat(64)), b"x")
            .unwrap();
        assert_eq!((r.status, r.message().as_str()), (403, "plain may not"));
        assert_eq!(unix.call("GET", "/containers", b"").unwrap().status, 403);
        let v = unix
            .json("POST", "/signal", br#"{"type":"ready"}"#)
            .unwrap();
        assert!(v["call"].as_str().unwrap().starts_with("Signal"), "{v}");
        stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("objects"))
                .unwrap()
                .count(),
            0
        );
    }
}
