//! The containers' stdout/stderr, from their pipes to
//! `logs/<rev>/<container>/stdout.log`, rotated past `log.maxsize`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use nix::sys::epoll::{EpollEvent, EpollFlags};

use super::Daemon;

impl Daemon {
    /// `GET /logs/NAME`: a chunk of the running revision's log of container
    /// NAME (`pantavisor`: the daemon's own, since it started): `max` bytes from `offset`, or
    /// the last `max` bytes. `next` is the offset to ask for to follow it;
    /// a log rotated since (`offset` past its end) starts again at 0.
    pub(super) fn log_chunk(
        &self,
        name: &str,
        offset: Option<u64>,
        max: u64,
    ) -> Result<serde_json::Value, crate::error::Refusal> {
        use std::io::{Read, Seek, SeekFrom};
        let path = if name == "pantavisor" {
            // Where the daemon has logged since it started.
            crate::log::file().unwrap_or_else(|| {
                self.rt
                    .storage
                    .log_dir(&self.run.name, name)
                    .join("pantavisor.log")
            })
        } else if self.run.ctrs.iter().any(|c| c.name == name) {
            self.rt
                .storage
                .log_dir(&self.run.name, name)
                .join("stdout.log")
        } else {
            return Err(crate::error::Refusal::NotFound(format!(
                "no container {name} in revision {}",
                self.run.name
            )));
        };
        let mut f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => {
                return Ok(serde_json::json!({
                    "revision": self.run.name, "container": name,
                    "offset": 0, "next": 0, "size": 0, "data": ""
                }))
            }
        };
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let (start, rotated) = match offset {
            Some(o) if o > size => (0, true),
            Some(o) => (o, false),
            None => (size.saturating_sub(max), false),
        };
        let mut data = Vec::new();
        let _ = f.seek(SeekFrom::Start(start));
        let _ = f.take(max).read_to_end(&mut data);
        Ok(serde_json::json!({
            "revision": self.run.name,
            "container": name,
            "offset": start,
            "next": start + data.len() as u64,
            "size": size,
            "rotated": rotated,
            "data": String::from_utf8_lossy(&data),
        }))
    }

    pub(super) fn watch_log(&mut self, i: usize) {
        let c = &self.run.ctrs[i];
        if let Some(fd) = c.log_pipe.as_ref() {
            let _ = nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            let _ = self.epoll.add(
                fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, Self::log_token(c.uid)),
            );
        }
    }

    /// Stop watching a container's pipe (it leaves the revision).
    pub(super) fn unwatch_log(&mut self, i: usize) {
        if let Some(fd) = self.run.ctrs[i].log_pipe.take() {
            let _ = self.epoll.delete(fd.as_fd());
        }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.rt
            .storage
            .log_dir(&self.run.name, &self.run.ctrs[i].name)
            .join("stdout.log")
    }

    /// Read what the container wrote (until the pipe is empty or closed).
    pub(super) fn on_log(&mut self, i: usize) {
        let mut buf = [0u8; 16384];
        loop {
            let Some(fd) = self.run.ctrs[i].log_pipe.as_ref() else {
                return;
            };
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                // Every writer is gone.
                Ok(0) => return self.unwatch_log(i),
                Ok(n) => self.append_log(i, &buf[..n]),
                Err(_) => return,
            }
        }
    }

    fn append_log(&mut self, i: usize, data: &[u8]) {
        let path = self.log_path(i);
        let size = self
            .log_sizes
            .entry(path.clone())
            .or_insert_with(|| fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
        if *size + data.len() as u64 > self.rt.opts.log_max_bytes {
            let _ = fs::rename(&path, path.with_extension("log.1"));
            *size = 0;
        }
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&path) {
            if f.write_all(data).is_ok() {
                *size += data.len() as u64;
            }
        }
    }
}
