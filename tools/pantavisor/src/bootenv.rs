//! The bootloader handshake kept on the data partition (`boot/pv.env`, or
//! `boot/uboot.txt` as Pantavisor writes it): `pv_rev` is the committed
//! revision, `pv_try` one being tried, `pv_trying` the latch saying its try
//! has begun. A try that began and was never committed is never run twice:
//! the next start finds `pv_trying == pv_try` and goes back to `pv_rev`.
//! Every write is atomic (temp, fsync, rename, directory fsync).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEnv {
    file: PathBuf,
    pub rev: String,
    pub try_rev: Option<String>,
    pub trying: Option<String>,
}

fn value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key)
            .then(|| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

impl BootEnv {
    pub fn load(storage: &Path) -> Result<Self> {
        let plain = storage.join("boot/pv.env");
        let uboot = storage.join("boot/uboot.txt");
        let file = if !plain.exists() && uboot.exists() {
            uboot
        } else {
            plain
        };
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(&file, e)),
        };
        Ok(BootEnv {
            rev: value(&text, "pv_rev").unwrap_or_else(|| "0".into()),
            try_rev: value(&text, "pv_try"),
            trying: value(&text, "pv_trying"),
            file,
        })
    }

    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.file.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = format!(
            "pv_rev={}\npv_try={}\npv_trying={}\n",
            self.rev,
            self.try_rev.as_deref().unwrap_or(""),
            self.trying.as_deref().unwrap_or("")
        );
        pvstate::store::write_atomic(&self.file, text.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let env = BootEnv::load(tmp.path()).unwrap();
        assert_eq!(
            (env.rev.as_str(), env.try_rev.clone(), env.trying.clone()),
            ("0", None, None)
        );
        let mut env = env;
        env.try_rev = Some("locals/new".into());
        env.trying = Some("locals/new".into());
        env.save().unwrap();
        let again = BootEnv::load(tmp.path()).unwrap();
        assert_eq!(again, env);
        // Pantavisor's uboot.txt is read when there is no pv.env.
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("boot")).unwrap();
        fs::write(tmp.path().join("boot/uboot.txt"), "pv_rev=3\n").unwrap();
        assert_eq!(BootEnv::load(tmp.path()).unwrap().rev, "3");
    }
}
