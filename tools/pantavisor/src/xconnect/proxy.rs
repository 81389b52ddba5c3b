//! The proxy: a listening socket per link in the consumer's namespace, and
//! for each connection a pair of sockets pumped both ways. One epoll (its
//! fd sits in the daemon's loop); every connection's sockets are edge
//! triggered and a connection is pumped until neither side can move, so
//! no thread and no busy loop per connection. A direction reads only when
//! what it read before went out, so each connection holds at most one
//! buffer per direction. Passed descriptors (SCM_RIGHTS) travel with the
//! bytes they came with.
//!
//! Bytes that need no rewriting move by splice(2) through a kernel pipe
//! (socket to pipe to socket: page references, no copy through the
//! daemon), as long as the bytes queued carry no descriptors: splicing
//! would drop them. The source socket's fdinfo says how many descriptors
//! its queue holds (`scm_fds`); when it holds any, or the kernel does not
//! say, the bytes go by recvmsg/sendmsg with their descriptors.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    self, accept4, bind, connect, listen, recvmsg, sendmsg, shutdown, AddressFamily, Backlog,
    ControlMessage, ControlMessageOwned, MsgFlags, Shutdown, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::Mode;

use super::filter::{self, Filter};
use super::{Kind, Link};

/// What one read takes at most.
const CHUNK: usize = 64 * 1024;
/// Descriptors one message may carry (the kernel's SCM_MAX_FD is 253).
const MAX_FDS: usize = 253;

const TAG_LISTENER: u64 = 0;
const TAG_CONSUMER: u64 = 1;
const TAG_PROVIDER: u64 = 2;

/// Bytes (and descriptors) read from one side, not yet written to the other.
#[derive(Default)]
struct Pipe {
    buf: Vec<u8>,
    pos: usize,
    fds: Vec<OwnedFd>,
    /// The source said it sends no more.
    eof: bool,
    /// ... and the destination was told so.
    shut: bool,
    /// The splice path, for a direction nothing rewrites.
    kernel: Option<Kernel>,
}

/// A kernel pipe between two sockets, and what it holds.
struct Kernel {
    r: OwnedFd,
    w: OwnedFd,
    held: usize,
    /// `/proc/self/fdinfo/N` of the source socket (its `scm_fds`).
    info: std::fs::File,
}

/// How much a kernel pipe holds (F_SETPIPE_SZ).
const PIPE_SIZE: usize = 1024 * 1024;

impl Kernel {
    /// A pipe for bytes read from `src`, or None when the kernel cannot
    /// say what descriptors `src` holds (splicing would lose them).
    fn new(src: &OwnedFd) -> Option<Kernel> {
        let info = std::fs::File::open(format!("/proc/self/fdinfo/{}", src.as_raw_fd())).ok()?;
        scm_fds(&info)?;
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        Some(Kernel {
            r,
            w,
            held: 0,
            info,
        })
    }
}

/// Descriptors queued on the socket whose fdinfo `info` is; None when the
/// kernel does not report them.
fn scm_fds(info: &std::fs::File) -> Option<u64> {
    let mut buf = [0u8; 256];
    let n = std::os::unix::fs::FileExt::read_at(info, &mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("scm_fds:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Bytes queued to read on socket `fd`.
fn queued(fd: &OwnedFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n.max(0) as usize
}

fn splice(from: &OwnedFd, to: &OwnedFd, len: usize) -> nix::Result<usize> {
    // SAFETY: splice between descriptors we own, no offsets.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

struct Conn {
    consumer: OwnedFd,
    provider: OwnedFd,
    /// Consumer to provider, through the filter.
    up: Pipe,
    down: Pipe,
    filter: Filter,
    /// What each side is registered for now (consumer, provider).
    interest: [EpollFlags; 2],
}

impl Pipe {
    fn pending(&self) -> bool {
        self.pos < self.buf.len() || self.kernel.as_ref().is_some_and(|k| k.held > 0)
    }

    /// Whether its source is worth reading now.
    fn wants_input(&self) -> bool {
        !self.eof && !self.pending()
    }
}

/// Edge triggered, and only for what a side waits for: readable while its
/// direction has room, writable while bytes wait for it. A wake-up for
/// anything else (each byte a peer reads frees room) would be wasted.
fn wanted(read: bool, write: bool) -> EpollFlags {
    let mut f = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    if read {
        f |= EpollFlags::EPOLLIN;
    }
    if write {
        f |= EpollFlags::EPOLLOUT;
    }
    f
}

struct Listener {
    link: Link,
    fd: OwnedFd,
    /// Connections accepted (for the graph and the log).
    accepted: u64,
    /// When a connection was last turned away, for a quiet log.
    refused_logged: Option<Instant>,
}

/// Every listener and connection of the mesh.
pub struct Mesh {
    epoll: Epoll,
    listeners: HashMap<u64, Listener>,
    conns: HashMap<u64, Conn>,
    /// Providers' init pids, by container name.
    pids: HashMap<String, i32>,
    next: u64,
    scratch: Vec<u8>,
}

fn token(id: u64, tag: u64) -> u64 {
    (id << 2) | tag
}

/// `path` (absolute, inside a container) as components, `..` refused.
fn relative(path: &str) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{path}: .. is not allowed"),
                ))
            }
        }
    }
    Ok(out)
}

/// Open `rel` below the container root `root` with every symlink resolved
/// inside that root (a container's absolute symlink never leads out).
fn open_in(root: BorrowedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = if rel.is_empty() { "." } else { rel };
    let fd = openat2(root.as_raw_fd(), rel, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn proc_root(pid: i32) -> std::io::Result<OwnedFd> {
    let path = format!("/proc/{pid}/root");
    let fd = nix::fcntl::open(
        path.as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking, close-on-exec unix stream socket.
fn stream_socket() -> nix::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// A listening socket at `target` in the mount namespace of `pid`: its
/// directories made, whatever was at the path replaced, mode 0666.
pub fn listen_in(pid: i32, target: &str) -> std::io::Result<OwnedFd> {
    let root = proc_root(pid)?;
    let parts = relative(target)?;
    let Some((base, dirs)) = parts.split_last() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "target names no file",
        ));
    };
    let mut so_far = String::new();
    let mut dir = open_in(root.as_fd(), "", OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    for d in dirs {
        match nix::sys::stat::mkdirat(
            Some(dir.as_raw_fd()),
            d.as_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(d);
        dir = open_in(root.as_fd(), &so_far, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    }
    // O_PATH descriptors cannot unlink; a real one of the directory can.
    let real = open_in(root.as_fd(), &so_far, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    drop(dir);
    match nix::unistd::unlinkat(
        Some(real.as_raw_fd()),
        base.as_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let sock = stream_socket()?;
    let addr = UnixAddr::new(format!("/proc/self/fd/{}/{base}", real.as_raw_fd()).as_str())?;
    bind(sock.as_raw_fd(), &addr)?;
    let name = CString::new(base.as_str()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: a plain syscall on descriptors and a C string we own.
    let rc = unsafe { libc::fchmodat(real.as_raw_fd(), name.as_ptr(), 0o666, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    listen(&sock, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(sock)
}

/// Connect to `socket` in the mount namespace of `pid`, as `uid` when one
/// is given (the bus then sees that UID as the peer).
pub fn connect_in(pid: i32, socket_path: &str, uid: Option<u32>) -> std::io::Result<OwnedFd> {
    let root = proc_root(pid)?;
    let rel = relative(socket_path)?.join("/");
    // The socket itself, its path resolved inside the provider: connect
    // through the descriptor, never through a path a symlink could bend.
    let target = open_in(root.as_fd(), &rel, OFlag::O_PATH)?;
    let sock = stream_socket()?;
    let addr = UnixAddr::new(format!("/proc/self/fd/{}", target.as_raw_fd()).as_str())?;
    let result = match uid {
        None => connect(sock.as_raw_fd(), &addr),
        Some(uid) => as_euid(uid, || connect(sock.as_raw_fd(), &addr)),
    };
    match result {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(sock),
        Err(e) => Err(e.into()),
    }
}

/// Run `f` with effective UID `uid` (the daemon runs as root and returns
/// to it; it has one thread, so nothing else runs meanwhile).
fn as_euid<T>(uid: u32, f: impl FnOnce() -> nix::Result<T>) -> nix::Result<T> {
    let me = nix::unistd::geteuid();
    nix::unistd::seteuid(nix::unistd::Uid::from_raw(uid))?;
    let r = f();
    let back = nix::unistd::seteuid(me);
    // Changing the effective UID clears the dumpable flag; keep /proc/self
    // the daemon's own.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    back?;
    r
}

/// The UID a link's role has for its provider (dbus), read from the
/// provider's `/etc/passwd`.
fn provider_uid(pid: i32, role: &str) -> u32 {
    let passwd = proc_root(pid)
        .ok()
        .and_then(|root| open_in(root.as_fd(), "etc/passwd", OFlag::O_RDONLY).ok())
        .and_then(|fd| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).ok()?;
            Some(text)
        })
        .unwrap_or_default();
    filter::role_uid(role, &passwd)
}

enum Step {
    Progress,
    Blocked,
    Dead,
}

/// Write what `p` holds to `dst`; Blocked when `dst` takes no more now.
fn flush(dst: &OwnedFd, p: &mut Pipe) -> Step {
    let mut moved = false;
    if let Some(k) = p.kernel.as_mut() {
        while k.held > 0 {
            match splice(&k.r, dst, k.held) {
                Ok(0) => return Step::Dead,
                Ok(n) => {
                    k.held -= n;
                    moved = true;
                }
                Err(Errno::EAGAIN) => return Step::Blocked,
                Err(Errno::EINTR) => continue,
                Err(_) => return Step::Dead,
            }
        }
    }
    while p.pos < p.buf.len() {
        let iov = [IoSlice::new(&p.buf[p.pos..])];
        let raw: Vec<RawFd> = p.fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
        match sendmsg::<()>(
            dst.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(n) => {
                p.pos += n;
                p.fds.clear();
                moved = true;
            }
            Err(Errno::EAGAIN) => return Step::Blocked,
            Err(Errno::EINTR) => continue,
            Err(_) => return Step::Dead,
        }
    }
    p.buf.clear();
    p.pos = 0;
    if p.eof && !p.shut {
        let _ = shutdown(dst.as_raw_fd(), Shutdown::Write);
        p.shut = true;
        moved = true;
    }
    if moved {
        Step::Progress
    } else {
        Step::Blocked
    }
}

/// Read from `src` into the empty pipe `p` (through `filter` when given).
fn fill(src: &OwnedFd, p: &mut Pipe, filter: Option<&mut Filter>, scratch: &mut Vec<u8>) -> Step {
    if p.eof || p.pending() {
        return Step::Blocked;
    }
    let raw = filter.as_ref().map_or(true, |f| f.is_raw());
    if let (true, Some(k)) = (raw, p.kernel.as_mut()) {
        // Only bytes queued before the queue was seen to hold no
        // descriptors are spliced: later ones may carry some.
        let q = queued(src);
        if q == 0 {
            // Nothing queued: the end, or nothing yet (a byte peeked, not
            // taken, when one arrived meanwhile).
            let mut b = [0u8; 1];
            return match socket::recv(
                src.as_raw_fd(),
                &mut b,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => {
                    p.eof = true;
                    Step::Progress
                }
                Ok(_) | Err(Errno::EINTR) => Step::Progress,
                Err(Errno::EAGAIN) => Step::Blocked,
                Err(_) => Step::Dead,
            };
        }
        if scm_fds(&k.info) == Some(0) {
            match splice(src, &k.w, q.min(PIPE_SIZE)) {
                Ok(n) if n > 0 => {
                    k.held = n;
                    return Step::Progress;
                }
                Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(_) => return Step::Dead,
            }
        }
    }
    // By copy, with any descriptors: into the scratch buffer (zeroed once,
    // kept at its size), then to the pipe as they are or filtered.
    if scratch.len() < CHUNK {
        scratch.resize(CHUNK, 0);
    }
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut scratch[..CHUNK])];
        match recvmsg::<()>(
            src.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = m.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(list) = c {
                            // SAFETY: the kernel just installed these
                            // descriptors for us; nothing else owns them.
                            fds.extend(
                                list.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                            );
                        }
                    }
                }
                break (m.bytes, fds);
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Step::Blocked,
            Err(_) => return Step::Dead,
        }
    };
    p.fds.extend(fds);
    if n == 0 {
        p.eof = true;
        return Step::Progress;
    }
    p.buf.clear();
    p.pos = 0;
    match filter {
        Some(f) if !raw => {
            if f.feed(&scratch[..n], &mut p.buf).is_err() {
                return Step::Dead;
            }
        }
        _ => p.buf.extend_from_slice(&scratch[..n]),
    }
    Step::Progress
}

impl Conn {
    /// Bring each side's registration to what it waits for now; false
    /// when the epoll refuses.
    fn register(&mut self, epoll: &Epoll, id: u64) -> bool {
        let want = [
            wanted(self.up.wants_input(), self.down.pending()),
            wanted(self.down.wants_input(), self.up.pending()),
        ];
        for (i, (fd, tag)) in [
            (&self.consumer, TAG_CONSUMER),
            (&self.provider, TAG_PROVIDER),
        ]
        .into_iter()
        .enumerate()
        {
            if want[i] != self.interest[i] {
                let mut ev = EpollEvent::new(want[i], token(id, tag));
                if epoll.modify(fd, &mut ev).is_err() {
                    return false;
                }
                self.interest[i] = want[i];
            }
        }
        true
    }

    /// Move bytes both ways until neither can; false when the connection
    /// is over (both directions ended, or an error).
    fn pump(&mut self, scratch: &mut Vec<u8>) -> bool {
        loop {
            let mut progress = false;
            for step in [
                flush(&self.provider, &mut self.up),
                fill(
                    &self.consumer,
                    &mut self.up,
                    Some(&mut self.filter),
                    scratch,
                ),
                flush(&self.provider, &mut self.up),
                flush(&self.consumer, &mut self.down),
                fill(&self.provider, &mut self.down, None, scratch),
                flush(&self.consumer, &mut self.down),
            ] {
                match step {
                    Step::Dead => return false,
                    Step::Progress => progress = true,
                    Step::Blocked => {}
                }
            }
            if self.up.shut && self.down.shut {
                return false;
            }
            if !progress {
                return true;
            }
        }
    }
}

impl Mesh {
    pub fn new() -> std::io::Result<Self> {
        Ok(Mesh {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            listeners: HashMap::new(),
            conns: HashMap::new(),
            pids: HashMap::new(),
            next: 1,
            scratch: Vec::with_capacity(CHUNK),
        })
    }

    /// The epoll descriptor, for the daemon's loop.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// Container `name`'s init is `pid` (None: it does not run).
    pub fn set_pid(&mut self, name: &str, pid: Option<i32>) {
        match pid {
            Some(p) => self.pids.insert(name.to_string(), p),
            None => self.pids.remove(name),
        };
    }

    /// Serve `link` on `fd`, a socket [`listen_in`] bound in its consumer.
    pub fn add(&mut self, link: Link, fd: OwnedFd) -> std::io::Result<()> {
        let id = self.next;
        self.next += 1;
        self.epoll.add(
            &fd,
            EpollEvent::new(EpollFlags::EPOLLIN, token(id, TAG_LISTENER)),
        )?;
        self.listeners.insert(
            id,
            Listener {
                link,
                fd,
                accepted: 0,
                refused_logged: None,
            },
        );
        Ok(())
    }

    /// Close the listeners of consumer `name` (it stopped; its sockets died
    /// with its namespace).
    pub fn drop_consumer(&mut self, name: &str) {
        let ids: Vec<u64> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.link.consumer == name)
            .map(|(id, _)| *id)
            .collect();
        self.close_listeners(ids);
    }

    fn close_listeners(&mut self, ids: Vec<u64>) {
        for id in ids {
            if let Some(l) = self.listeners.remove(&id) {
                let _ = self.epoll.delete(&l.fd);
            }
        }
    }

    /// After a revision change: each listener takes the link of the new
    /// plan with its consumer and target, or closes when there is none.
    pub fn reconcile(&mut self, links: &[Link]) {
        let mut gone = Vec::new();
        for (id, l) in self.listeners.iter_mut() {
            match links
                .iter()
                .find(|n| n.consumer == l.link.consumer && n.target == l.link.target)
            {
                Some(n) => l.link = n.clone(),
                None => gone.push(*id),
            }
        }
        self.close_listeners(gone);
    }

    /// The links served now, and how many connections each accepted.
    pub fn served(&self) -> Vec<(&Link, u64)> {
        let mut v: Vec<(&Link, u64)> = self
            .listeners
            .values()
            .map(|l| (&l.link, l.accepted))
            .collect();
        v.sort_by(|a, b| (&a.0.consumer, &a.0.target).cmp(&(&b.0.consumer, &b.0.target)));
        v
    }

    /// Handle what is ready, without waiting.
    pub fn poll(&mut self) {
        self.poll_within(EpollTimeout::ZERO)
    }

    /// Handle what is ready, waiting up to `timeout` for something to be
    /// (for a mesh run on its own, as in the benchmark).
    pub fn poll_within(&mut self, timeout: EpollTimeout) {
        let mut events = [EpollEvent::empty(); 256];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(_) => return,
        };
        for ev in events.iter().take(n) {
            let t = ev.data();
            let id = t >> 2;
            match t & 3 {
                TAG_LISTENER => self.accept(id),
                _ => {
                    let alive = match self.conns.get_mut(&id) {
                        Some(c) => c.pump(&mut self.scratch) && c.register(&self.epoll, id),
                        None => continue,
                    };
                    if !alive {
                        self.close(id);
                    }
                }
            }
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            let _ = self.epoll.delete(&c.consumer);
            let _ = self.epoll.delete(&c.provider);
        }
    }

    fn accept(&mut self, lid: u64) {
        loop {
            let Some(l) = self.listeners.get_mut(&lid) else {
                return;
            };
            let fd = match accept4(
                l.fd.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                // SAFETY: accept4 returned a new descriptor nothing owns.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => continue,
                Err(_) => return,
            };
            let link = &l.link;
            let provider = self.pids.get(&link.provider).copied();
            let upstream = match provider {
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!("container {} does not run", link.provider),
                )),
                Some(pid) => {
                    let uid = (link.kind == Kind::Dbus).then(|| provider_uid(pid, &link.role));
                    connect_in(pid, &link.socket, uid).map(|s| (s, uid))
                }
            };
            let (upstream, uid) = match upstream {
                Ok(u) => u,
                Err(e) => {
                    // Turned away: the consumer sees the connection close
                    // and may retry. Logged at most every 10 s per link.
                    let now = Instant::now();
                    if l.refused_logged
                        .map_or(true, |t| now.duration_since(t) > Duration::from_secs(10))
                    {
                        l.refused_logged = Some(now);
                        warn!(
                            "xconnect: {} -> {} ({}): {}: connection refused",
                            link.consumer, link.name, link.socket, e
                        );
                    }
                    drop(fd);
                    continue;
                }
            };
            l.accepted += 1;
            let filter = match link.kind {
                Kind::Unix => Filter::Raw,
                Kind::Rest => Filter::Rest(filter::Rest::new(&link.consumer, &link.role)),
                Kind::Dbus => Filter::Dbus(filter::Dbus::new(uid.unwrap_or(65534))),
            };
            let id = self.next;
            self.next += 1;
            let flags = wanted(true, false);
            let ok = self
                .epoll
                .add(&fd, EpollEvent::new(flags, token(id, TAG_CONSUMER)))
                .and_then(|_| {
                    self.epoll
                        .add(&upstream, EpollEvent::new(flags, token(id, TAG_PROVIDER)))
                });
            let up = Pipe {
                kernel: if filter.is_raw() {
                    Kernel::new(&fd)
                } else {
                    None
                },
                ..Pipe::default()
            };
            let down = Pipe {
                kernel: Kernel::new(&upstream),
                ..Pipe::default()
            };
            let mut conn = Conn {
                consumer: fd,
                provider: upstream,
                up,
                down,
                filter,
                interest: [flags, flags],
            };
            if ok.is_err() {
                let _ = self.epoll.delete(&conn.consumer);
                continue;
            }
            // Whatever is already there moves now (edge triggered: no event
            // would say so again).
            if conn.pump(&mut self.scratch) && conn.register(&self.epoll, id) {
                self.conns.insert(id, conn);
            } else {
                let _ = self.epoll.delete(&conn.consumer);
                let _ = self.epoll.delete(&conn.provider);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn link(dir: &Path, kind: Kind) -> Link {
        Link {
            consumer: "app".into(),
            provider: "broker".into(),
            name: "svc".into(),
            kind,
            role: "reader".into(),
            interface: kind.as_str().into(),
            target: dir.join("in/app/svc.sock").display().to_string(),
            socket: dir.join("provider.sock").display().to_string(),
            required: true,
        }
    }

    /// Run the mesh in this thread until `done`.
    fn serve(mesh: &mut Mesh, done: &AtomicBool) {
        while !done.load(Ordering::SeqCst) {
            mesh.poll_within(EpollTimeout::from(20u8));
        }
    }

    #[test]
    fn bytes_and_a_passed_descriptor_cross_and_a_dead_provider_costs_only_its_connections() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let l = link(tmp.path(), Kind::Unix);
        let mut mesh = Mesh::new().unwrap();
        // The consumer's directories are made; the provider does not run yet.
        let fd = listen_in(me, &l.target).unwrap();
        mesh.add(l.clone(), fd).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let (target, socket) = (l.target.clone(), l.socket.clone());
        let d = done.clone();
        let client = std::thread::spawn(move || {
            // No provider: the connection is accepted and closed at once.
            let mut s = UnixStream::connect(&target).unwrap();
            let mut buf = Vec::new();
            assert_eq!(s.read_to_end(&mut buf).unwrap(), 0);
            // The provider comes up (the test registers its pid below).
            let server = UnixListener::bind(&socket).unwrap();
            std::fs::write(format!("{socket}.up"), "").unwrap();
            let t = std::thread::spawn(move || {
                let (conn, _) = server.accept().unwrap();
                let mut data = [0u8; 64];
                let mut space = nix::cmsg_space!([RawFd; 2]);
                let mut iov = [IoSliceMut::new(&mut data)];
                let m = recvmsg::<()>(
                    conn.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::empty(),
                )
                .unwrap();
                let n = m.bytes;
                let mut passed = None;
                for c in m.cmsgs().unwrap() {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        passed = fds.first().copied();
                    }
                }
                let msg = String::from_utf8_lossy(&data[..n]).to_string();
                // SAFETY: received just now, ours alone.
                let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(passed.unwrap()) });
                let mut content = String::new();
                f.read_to_string(&mut content).unwrap();
                (&conn)
                    .write_all(format!("got {msg} and {content}").as_bytes())
                    .unwrap();
            });
            while !std::path::Path::new(&format!("{socket}.go")).exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
            let s = UnixStream::connect(&target).unwrap();
            let file = std::fs::File::open(format!("{socket}.up")).unwrap();
            std::fs::write(format!("{socket}.up"), "the file").unwrap();
            let raw = [file.as_raw_fd()];
            sendmsg::<()>(
                s.as_raw_fd(),
                &[IoSlice::new(b"hello")],
                &[ControlMessage::ScmRights(&raw)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
            let mut reply = String::new();
            (&s).read_to_string(&mut reply).unwrap();
            t.join().unwrap();
            d.store(true, Ordering::SeqCst);
            reply
        });
        let up = format!("{}.up", l.socket);
        let d2 = done.clone();
        let mut mesh2 = mesh;
        let go = format!("{}.go", l.socket);
        let runner = std::thread::spawn(move || {
            let mut registered = false;
            while !d2.load(Ordering::SeqCst) {
                if !registered && std::path::Path::new(&up).exists() {
                    mesh2.set_pid("broker", Some(me));
                    std::fs::write(&go, "").unwrap();
                    registered = true;
                }
                mesh2.poll_within(EpollTimeout::from(20u8));
            }
            mesh2
        });
        let reply = client.join().unwrap();
        let mesh = runner.join().unwrap();
        assert_eq!(reply, "got hello and the file");
        assert_eq!(mesh.served()[0].1, 1, "one connection reached the provider");
    }

    #[test]
    fn rest_requests_reach_the_provider_with_the_daemons_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let l = link(tmp.path(), Kind::Rest);
        let mut mesh = Mesh::new().unwrap();
        mesh.add(l.clone(), listen_in(me, &l.target).unwrap())
            .unwrap();
        mesh.set_pid("broker", Some(me));
        let server = UnixListener::bind(&l.socket).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let target = l.target.clone();
        let t = std::thread::spawn(move || {
            let mut s = UnixStream::connect(&target).unwrap();
            s.write_all(b"GET /m HTTP/1.1\r\nHost: x\r\nX-PV-Role: admin\r\n\r\n")
                .unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let (mut conn, _) = server.accept().unwrap();
            let mut got = String::new();
            conn.read_to_string(&mut got).unwrap();
            d.store(true, Ordering::SeqCst);
            got
        });
        serve(&mut mesh, &done);
        let got = t.join().unwrap();
        assert!(
            got.contains("X-PV-Client: app\r\nX-PV-Role: reader\r\n"),
            "{got}"
        );
        assert!(!got.contains("admin"), "{got}");
    }

    #[test]
    fn a_target_climbing_out_is_refused() {
        let me = std::process::id() as i32;
        assert!(listen_in(me, "/run/../../etc/x.sock").is_err());
        assert!(listen_in(me, "/").is_err());
    }
}
