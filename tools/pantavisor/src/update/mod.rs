//! Updates: the [`machine`] decides (pure, unit-tested); the daemon carries
//! out its actions (`daemon::updates`).
//!
//! In appengine mode a "reboot" transition stops every container and brings
//! the new revision up from its first group, without touching the host. The
//! bootloader handshake (`pv_try`/`pv_trying`/`pv_rev`) is written before the
//! transition starts, so a daemon killed at any point comes back on a complete
//! revision: the committed one, or the one being tried if its try never began.

pub mod machine;

#[cfg(test)]
mod tests;
