//! The containers' stdout/stderr, from their pipes to
//! `logs/<rev>/<container>/stdout.log`, rotated past `log.maxsize`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use nix::sys::epoll::{EpollEvent, EpollFlags};

use super::Daemon;

impl Daemon {
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
