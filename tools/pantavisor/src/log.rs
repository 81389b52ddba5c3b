//! The daemon's own log: to stderr and to `logs/<rev>/pantavisor/pantavisor.log`,
//! rotated (to `pantavisor.log.1`) past a size, as container logs are.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

struct Sink {
    file: File,
    path: PathBuf,
    written: u64,
    max: u64,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Also write the log to `path` (appending), rotating it past `max` bytes.
pub fn to_file(path: &Path, max: u64) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(file) = OpenOptions::new().create(true).append(true).open(path) {
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Ok(mut sink) = SINK.lock() {
            *sink = Some(Sink {
                file,
                path: path.to_path_buf(),
                written,
                max: max.max(4096),
            });
        }
    }
}

/// The file the log goes to, if any (the boot revision's).
pub fn file() -> Option<PathBuf> {
    SINK.lock().ok()?.as_ref().map(|s| s.path.clone())
}

pub fn line(level: &str, message: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let text = format!(
        "[{}.{:03}] {level} {message}\n",
        now.as_secs(),
        now.subsec_millis()
    );
    let _ = std::io::stderr().write_all(text.as_bytes());
    if let Ok(mut sink) = SINK.lock() {
        if let Some(s) = sink.as_mut() {
            if s.written + text.len() as u64 > s.max {
                let _ = std::fs::rename(&s.path, s.path.with_extension("log.1"));
                if let Ok(f) = OpenOptions::new().create(true).append(true).open(&s.path) {
                    s.file = f;
                    s.written = 0;
                }
            }
            if s.file.write_all(text.as_bytes()).is_ok() {
                s.written += text.len() as u64;
            }
        }
    }
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::line("INFO", &format!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::line("WARN", &format!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::line("ERROR", &format!($($t)*)) } }
