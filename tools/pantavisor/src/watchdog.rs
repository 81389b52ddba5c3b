//! The hardware watchdog (`/dev/watchdog`, Linux's watchdog API): opened
//! with a timeout, pinged from the event loop while the loop turns, and
//! stopped on a clean power-off by the magic close (`V`, then close). A loop
//! that stops turning stops the pings, and the board resets.
//!
//! `watchdog.mode` (Pantavisor's `PV_WDT_MODE`): `disabled`, `always` (from
//! start to power-off), `startup` (until the first revision reached its
//! goals), `shutdown` (while stopping, Pantavisor's default).
//! `watchdog.timeout` (`PV_WDT_TIMEOUT`, seconds).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// When the watchdog is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disabled,
    Always,
    Startup,
    Shutdown,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.trim() {
            "disabled" | "" => Mode::Disabled,
            "always" => Mode::Always,
            "startup" => Mode::Startup,
            "shutdown" => Mode::Shutdown,
            other => {
                return Err(format!(
                    "watchdog.mode={other}: use disabled, always, startup or shutdown"
                ))
            }
        })
    }
}

/// An open, running watchdog.
pub struct Watchdog {
    file: File,
    last: Instant,
    /// The timeout the driver took.
    pub timeout: u32,
}

impl Watchdog {
    /// Open `path` and set its timeout (the driver may round it).
    pub fn open(path: &Path, timeout: u32) -> Result<Watchdog> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut t = timeout as libc::c_int;
        if crate::sys::watchdog_set_timeout(file.as_fd(), &mut t) < 0 {
            let e = std::io::Error::last_os_error();
            warn!(
                "watchdog {}: cannot set a {timeout} s timeout: {e}",
                path.display()
            );
        }
        let mut w = Watchdog {
            file,
            last: Instant::now(),
            timeout: t.max(1) as u32,
        };
        w.kick();
        Ok(w)
    }

    fn kick(&mut self) {
        let _ = self.file.write_all(b"\0");
        self.last = Instant::now();
    }

    /// Ping it, at most once a second.
    pub fn ping(&mut self) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.kick();
        }
    }

    /// Stop it: the magic close. A driver built with NOWAYOUT ignores it.
    pub fn stop(mut self) {
        let _ = self.file.write_all(b"V");
    }
}
