//! Packing a directory tree into a squashfs image.
//!
//! [`SquashWriter`] is the seam: the first backend drives `mksquashfs`
//! (see docs/decisions/0002-squashfs-writer.md); an in-process writer can
//! stand beside it later without touching the callers.

mod mksquashfs;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use mksquashfs::Mksquashfs;

use crate::error::{ComposeError, Result};
use crate::tree::Exclude;

/// Compressors every backend must offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compressor {
    Xz,
    Zstd,
    Lz4,
    Gzip,
}

impl FromStr for Compressor {
    type Err = ComposeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "xz" => Ok(Compressor::Xz),
            "zstd" => Ok(Compressor::Zstd),
            "lz4" => Ok(Compressor::Lz4),
            "gzip" => Ok(Compressor::Gzip),
            other => Err(ComposeError::input(format!(
                "unknown compressor \"{other}\"; use xz, zstd, lz4 or gzip"
            ))),
        }
    }
}

impl fmt::Display for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compressor::Xz => "xz",
            Compressor::Zstd => "zstd",
            Compressor::Lz4 => "lz4",
            Compressor::Gzip => "gzip",
        })
    }
}

/// Branch/call/jump filters that make xz compress machine code better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bcj {
    X86,
    Arm,
    Armthumb,
}

impl FromStr for Bcj {
    type Err = ComposeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "x86" => Ok(Bcj::X86),
            "arm" => Ok(Bcj::Arm),
            "armthumb" => Ok(Bcj::Armthumb),
            other => Err(ComposeError::input(format!(
                "unknown BCJ filter \"{other}\"; use x86, arm or armthumb (xz only)"
            ))),
        }
    }
}

impl fmt::Display for Bcj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bcj::X86 => "x86",
            Bcj::Arm => "arm",
            Bcj::Armthumb => "armthumb",
        })
    }
}

/// How to pack.
#[derive(Debug, Clone, PartialEq)]
pub struct SquashOptions {
    pub comp: Compressor,
    /// Only with xz.
    pub bcj: Option<Bcj>,
    /// Block size in bytes, a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    pub excludes: Vec<Exclude>,
    /// Clamp every time stamp (and the image's) to this many seconds since
    /// the epoch: with it the output is byte-identical for the same tree.
    pub mtime: Option<u64>,
    /// Cap on the packer's memory, in MiB.
    pub mem_mib: Option<u64>,
    /// Threads for compression; all cores when None.
    pub processors: Option<usize>,
    pub xattrs: bool,
    /// Pack small files and tails together in fragment blocks (smaller
    /// images). Without (`-no-fragments`) every file's blocks are its own,
    /// so an unchanged file keeps its bytes in a changed image and chunk
    /// deltas find it (docs/deltas.md measures both).
    pub fragments: bool,
}

impl Default for SquashOptions {
    fn default() -> Self {
        SquashOptions {
            comp: Compressor::Xz,
            bcj: None,
            block_size: 128 * 1024,
            excludes: Vec::new(),
            mtime: None,
            mem_mib: None,
            fragments: true,
            processors: None,
            xattrs: true,
        }
    }
}

impl SquashOptions {
    /// Reject combinations no backend can honour.
    pub fn check(&self) -> Result<()> {
        if !(4096..=1024 * 1024).contains(&self.block_size) || !self.block_size.is_power_of_two() {
            return Err(ComposeError::input(format!(
                "block size {} is not a power of two from 4K to 1M",
                self.block_size
            )));
        }
        if self.bcj.is_some() && self.comp != Compressor::Xz {
            return Err(ComposeError::input(format!(
                "a BCJ filter needs xz compression, not {}",
                self.comp
            )));
        }
        if self.processors == Some(0) {
            return Err(ComposeError::input("processors must be at least 1"));
        }
        Ok(())
    }
}

/// Parse a size such as `131072`, `128K`, `1M`.
pub fn parse_size(s: &str) -> Result<u64> {
    let (num, scale) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1024),
        Some('m' | 'M') => (&s[..s.len() - 1], 1024 * 1024),
        Some('g' | 'G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            ComposeError::input(format!("\"{s}\" is not a size like 131072, 128K or 1M"))
        })
}

/// Something that turns a directory tree into a squashfs image.
pub trait SquashWriter: Send + Sync {
    /// A short name and version for logs and `src.json`.
    fn describe(&self) -> String;
    /// Pack `source` into a new file `dest`.
    fn write(&self, source: &Path, dest: &Path, opts: &SquashOptions) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("131072").unwrap(), 131072);
        assert_eq!(parse_size("128K").unwrap(), 131072);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert!(parse_size("1T").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn options() {
        assert!(SquashOptions::default().check().is_ok());
        let bad_block = SquashOptions {
            block_size: 100_000,
            ..Default::default()
        };
        assert!(bad_block.check().is_err());
        let bcj_zstd = SquashOptions {
            comp: Compressor::Zstd,
            bcj: Some(Bcj::X86),
            ..Default::default()
        };
        assert!(bcj_zstd
            .check()
            .unwrap_err()
            .to_string()
            .contains("needs xz"));
        assert!("brotli"
            .parse::<Compressor>()
            .unwrap_err()
            .to_string()
            .contains("unknown compressor"));
    }
}
