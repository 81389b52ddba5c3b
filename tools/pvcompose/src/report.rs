//! What the composer tells its user: a line per part on a terminal, JSON
//! lines for build systems, or nothing.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

/// Numbers of one packed tree.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartStats {
    /// Part name (container name, `bsp/modules`, …).
    pub name: String,
    /// Entries packed (files, directories, links, devices …).
    pub entries: u64,
    /// Regular files packed.
    pub files: u64,
    /// Bytes of regular files in (hard links once).
    pub bytes_in: u64,
    /// Bytes of the squashfs object out.
    pub bytes_out: u64,
    /// Object id of the squashfs.
    pub object: String,
    /// Wall time of the packing, seconds.
    pub seconds: f64,
}

impl PartStats {
    /// Output size over input size.
    pub fn ratio(&self) -> f64 {
        if self.bytes_in == 0 {
            0.0
        } else {
            self.bytes_out as f64 / self.bytes_in as f64
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Quiet,
    Human,
    Json,
}

/// Thread-safe reporter shared by parallel packing jobs.
pub struct Reporter {
    mode: Mode,
    lock: Mutex<()>,
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

impl Reporter {
    pub fn new(mode: Mode) -> Self {
        Reporter {
            mode,
            lock: Mutex::new(()),
        }
    }

    /// A tree is about to be packed.
    pub fn start(&self, name: &str, files: u64, bytes: u64, how: &str) {
        if self.mode == Mode::Human {
            let _g = self.lock.lock();
            eprintln!("{name}: packing {files} files, {} with {how}", mib(bytes));
        }
    }

    /// A tree was packed.
    pub fn done(&self, s: &PartStats) {
        let _g = self.lock.lock();
        match self.mode {
            Mode::Quiet => {}
            Mode::Human => eprintln!(
                "{}: {} files, {} in, {} out ({:.1} %), {:.1} s, object {}",
                s.name,
                s.files,
                mib(s.bytes_in),
                mib(s.bytes_out),
                s.ratio() * 100.0,
                s.seconds,
                &s.object[..12]
            ),
            Mode::Json => {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["ratio"] = serde_json::json!((s.ratio() * 10000.0).round() / 10000.0);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{v}");
            }
        }
    }

    /// A free-form note (human mode only).
    pub fn note(&self, text: &str) {
        if self.mode == Mode::Human {
            let _g = self.lock.lock();
            eprintln!("{text}");
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
}
