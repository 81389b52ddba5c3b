//! The `mksquashfs` backend (squashfs-tools 4.5 or later).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{SquashOptions, SquashWriter};
use crate::error::{ComposeError, Result};

/// The oldest version with `-mem`, clamping to SOURCE_DATE_EPOCH and
/// reproducible output by default.
const MIN_VERSION: (u32, u32) = (4, 5);

#[derive(Debug, Clone)]
pub struct Mksquashfs {
    program: PathBuf,
    version: (u32, u32, u32),
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    // "mksquashfs version 4.5.1 (2022/03/17)" or "mksquashfs version 4.6-git ..."
    let rest = text.split("version").nth(1)?.trim_start();
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = token.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

impl Mksquashfs {
    /// Find `mksquashfs` (`$MKSQUASHFS` or the PATH) and check its version.
    pub fn find() -> Result<Self> {
        let program = std::env::var_os("MKSQUASHFS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("mksquashfs"));
        let out = Command::new(&program).arg("-version").output().map_err(|e| {
            ComposeError::Tool(format!(
                "cannot run {}: {e}; install squashfs-tools 4.5 or later (Debian: apt-get install squashfs-tools; Yocto: squashfs-tools-native)",
                program.display()
            ))
        })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let version = parse_version(&text).ok_or_else(|| {
            ComposeError::Tool(format!(
                "{} -version printed no version I understand: {:?}",
                program.display(),
                text.lines().next().unwrap_or("")
            ))
        })?;
        if (version.0, version.1) < MIN_VERSION {
            return Err(ComposeError::Tool(format!(
                "{} is version {}.{}.{}; 4.5 or later is needed (reproducible output, -mem)",
                program.display(),
                version.0,
                version.1,
                version.2
            )));
        }
        Ok(Mksquashfs { program, version })
    }

    /// The arguments after `SOURCE DEST`.
    fn args(&self, opts: &SquashOptions, exclude_file: Option<&Path>) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-noappend".into(),
            "-no-progress".into(),
            "-quiet".into(),
            "-reproducible".into(),
            "-comp".into(),
            opts.comp.to_string(),
            "-b".into(),
            opts.block_size.to_string(),
        ];
        if let Some(bcj) = opts.bcj {
            args.extend(["-Xbcj".into(), bcj.to_string()]);
        }
        args.push(if opts.xattrs { "-xattrs" } else { "-no-xattrs" }.into());
        if !opts.fragments {
            args.push("-no-fragments".into());
        }
        if let Some(p) = opts.processors {
            args.extend(["-processors".into(), p.to_string()]);
        }
        if let Some(mem) = opts.mem_mib {
            args.extend(["-mem".into(), format!("{mem}M")]);
        }
        if let Some(file) = exclude_file {
            args.extend([
                "-wildcards".into(),
                "-ef".into(),
                file.display().to_string(),
            ]);
        }
        args
    }
}

impl SquashWriter for Mksquashfs {
    fn describe(&self) -> String {
        format!(
            "mksquashfs {}.{}.{}",
            self.version.0, self.version.1, self.version.2
        )
    }

    fn write(&self, source: &Path, dest: &Path, opts: &SquashOptions) -> Result<()> {
        opts.check()?;
        let exclude_file = if opts.excludes.is_empty() {
            None
        } else {
            let mut f = tempfile::Builder::new()
                .prefix(".pvcompose-excludes-")
                .tempfile()
                .map_err(|e| ComposeError::io(std::env::temp_dir(), e))?;
            for x in &opts.excludes {
                writeln!(f, "{}", x.to_mksquashfs()).map_err(|e| ComposeError::io(f.path(), e))?;
            }
            Some(f)
        };
        let mut cmd = Command::new(&self.program);
        cmd.arg(source)
            .arg(dest)
            .args(self.args(opts, exclude_file.as_ref().map(|f| f.path())))
            .stdin(Stdio::null());
        // mksquashfs clamps every time stamp to SOURCE_DATE_EPOCH and uses it
        // as the image's time: that is what makes two packings identical.
        cmd.env_remove("SOURCE_DATE_EPOCH");
        if let Some(t) = opts.mtime {
            cmd.env("SOURCE_DATE_EPOCH", t.to_string());
        }
        let out = cmd.output().map_err(|e| {
            ComposeError::Tool(format!("cannot run {}: {e}", self.program.display()))
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let _ = std::fs::remove_file(dest);
            let detail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            return Err(ComposeError::Tool(format!(
                "mksquashfs failed on {} ({}): {}",
                source.display(),
                out.status,
                detail.join(" / ")
            )));
        }
        // mksquashfs reports some read problems as warnings and still exits 0;
        // a part with silently emptied files is not acceptable.
        if let Some(line) = stderr
            .lines()
            .find(|l| l.contains("Failed to") || l.contains("FATAL"))
        {
            let _ = std::fs::remove_file(dest);
            return Err(ComposeError::Tool(format!(
                "mksquashfs on {}: {line}",
                source.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("mksquashfs version 4.5.1 (2022/03/17)"),
            Some((4, 5, 1))
        );
        assert_eq!(
            parse_version("mksquashfs version 4.6-git (2023/03/26)\n"),
            Some((4, 6, 0))
        );
        assert_eq!(
            parse_version("mksquashfs version 4.4 (2019/08/29)"),
            Some((4, 4, 0))
        );
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn arguments() {
        let m = Mksquashfs {
            program: "mksquashfs".into(),
            version: (4, 5, 1),
        };
        let opts = SquashOptions {
            bcj: Some(super::super::Bcj::X86),
            mem_mib: Some(256),
            processors: Some(2),
            ..Default::default()
        };
        let args = m.args(&opts, Some(Path::new("/tmp/ex"))).join(" ");
        assert_eq!(
            args,
            "-noappend -no-progress -quiet -reproducible -comp xz -b 131072 -Xbcj x86 -xattrs -processors 2 -mem 256M -wildcards -ef /tmp/ex"
        );
        let opts = SquashOptions {
            fragments: false,
            ..Default::default()
        };
        assert!(m.args(&opts, None).contains(&"-no-fragments".to_string()));
    }
}
