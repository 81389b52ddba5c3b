//! The daemon's own log: to stderr and to `logs/<rev>/pantavisor/pantavisor.log`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

static SINK: Mutex<Option<File>> = Mutex::new(None);

/// Also write the log to `path` (appending).
pub fn to_file(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(f) = OpenOptions::new().create(true).append(true).open(path) {
        if let Ok(mut sink) = SINK.lock() {
            *sink = Some(f);
        }
    }
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
        if let Some(f) = sink.as_mut() {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::line("INFO", &format!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::line("WARN", &format!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::line("ERROR", &format!($($t)*)) } }
