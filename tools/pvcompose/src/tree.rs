//! Walking a root filesystem tree before it is packed: what it holds (for
//! progress and ratios), that every file can be read (mksquashfs would
//! otherwise pack an unreadable file as an empty one and carry on), and which
//! paths the exclusion patterns remove.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{ComposeError, Result};

/// What a tree holds, after exclusions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    /// Entries of every kind (files, directories, links, devices …).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Bytes of regular files, hard-linked files counted once.
    pub bytes: u64,
}

/// An exclusion pattern: a path relative to the tree's root whose components
/// may use `*`, `?` and `[…]`; a leading `**/` matches at any depth. A match
/// excludes the path and everything below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclude {
    anywhere: bool,
    components: Vec<String>,
}

impl Exclude {
    pub fn parse(pattern: &str) -> Result<Self> {
        let trimmed = pattern.trim_start_matches('/').trim_end_matches('/');
        let (anywhere, rest) = match trimmed.strip_prefix("**/") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let components: Vec<String> = rest.split('/').map(str::to_string).collect();
        if rest.is_empty()
            || components
                .iter()
                .any(|c| c.is_empty() || c == "." || c == ".." || c == "**")
        {
            return Err(ComposeError::input(format!(
                "exclude pattern \"{pattern}\": expected a path below the root such as lib/modules, etc/*.conf or **/*.pyc"
            )));
        }
        Ok(Exclude {
            anywhere,
            components,
        })
    }

    /// The pattern in mksquashfs' `-wildcards` syntax.
    pub fn to_mksquashfs(&self) -> String {
        let path = self.components.join("/");
        if self.anywhere {
            format!("... {path}")
        } else {
            path
        }
    }

    /// Whether the path (components below the root) is excluded.
    pub fn matches(&self, path: &[&str]) -> bool {
        let n = self.components.len();
        let at = |start: usize| {
            path.len() >= start + n
                && self
                    .components
                    .iter()
                    .zip(&path[start..start + n])
                    .all(|(p, c)| pvstate::glob::fnmatch(p.as_bytes(), c.as_bytes()))
        };
        if self.anywhere {
            (0..path.len()).any(at)
        } else {
            at(0)
        }
    }
}

/// Walk `root`, skipping excluded paths, counting what is there and opening
/// every regular file to prove it can be read.
pub fn scan(root: &Path, excludes: &[Exclude]) -> Result<TreeStats> {
    let meta = fs::symlink_metadata(root).map_err(|e| ComposeError::io(root, e))?;
    if !meta.is_dir() {
        return Err(ComposeError::input(format!(
            "{}: not a directory",
            root.display()
        )));
    }
    let mut stats = TreeStats::default();
    let mut seen_links = std::collections::HashSet::new();
    let mut stack: Vec<(std::path::PathBuf, Vec<String>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| ComposeError::io(&dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| ComposeError::io(&dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy().into_owned();
            let mut child_rel = rel.clone();
            child_rel.push(name);
            let comps: Vec<&str> = child_rel.iter().map(String::as_str).collect();
            if excludes.iter().any(|x| x.matches(&comps)) {
                continue;
            }
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| ComposeError::io(&path, e))?;
            stats.entries += 1;
            if meta.is_dir() {
                stack.push((path, child_rel));
            } else if meta.is_file() {
                File::open(&path).map_err(|e| ComposeError::io(&path, e))?;
                stats.files += 1;
                if meta.nlink() > 1 && !seen_links.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                stats.bytes += meta.len();
            }
        }
    }
    Ok(stats)
}

/// Bytes of regular files under `root`, ignoring anything unreadable (an
/// estimate for ordering work, not a check).
pub fn scan_size(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').collect();
        Exclude::parse(pattern).unwrap().matches(&comps)
    }

    #[test]
    fn patterns() {
        assert!(m("lib/modules", "lib/modules"));
        assert!(m("lib/modules", "lib/modules/6.1/kernel/x.ko"));
        assert!(m("/lib/modules/", "lib/modules"));
        assert!(!m("lib/modules", "usr/lib/modules"));
        assert!(!m("lib/modules", "lib/modules-load.d"));
        assert!(m("etc/*.conf", "etc/a.conf"));
        assert!(!m("etc/*.conf", "etc/sub/a.conf"));
        assert!(m("**/*.pyc", "usr/lib/python3/x.pyc"));
        assert!(m("**/__pycache__", "a/b/__pycache__/c"));
        assert!(m("var/cache/ap?", "var/cache/apt"));
        assert!(m("dev/tty[0-9]", "dev/tty7"));
        assert!(!m("dev/tty[!0-9]", "dev/tty7"));
        assert!(m("x[", "x["));
    }

    #[test]
    fn bad_patterns() {
        for bad in ["", "/", "a/../b", "a//b", "**", "a/**/b"] {
            assert!(Exclude::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mksquashfs_syntax() {
        assert_eq!(
            Exclude::parse("lib/modules").unwrap().to_mksquashfs(),
            "lib/modules"
        );
        assert_eq!(
            Exclude::parse("**/*.pyc").unwrap().to_mksquashfs(),
            "... *.pyc"
        );
    }
}
