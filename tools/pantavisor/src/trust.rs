//! The trust store the daemon checks signatures against: the built-in store
//! (`secureboot.truststore`, in the initramfs: the layer installs
//! `PVROOT_TRUST` there) and the OEM store beside it
//! (`secureboot.oem_truststore`), whose CA certificates must chain to the
//! built-in ones. Read once at start; nothing on the writable storage is
//! trusted by itself — `config/trust/` there is reported and ignored.

use std::fs;
use std::path::Path;

use pvstate::sig::{trust_store_from_pem, TrustStore, TrustedKey};

use crate::config::Options;

/// The keys and certificates of the `*.pem` / `*.crt` files in `dir`
/// (sorted by name); a file that does not parse is reported and skipped.
fn read_dir(dir: &Path, what: &str) -> Vec<TrustedKey> {
    let mut files: Vec<_> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "pem" || x == "crt"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            error!("{what} {}: {e}", dir.display());
            Vec::new()
        }
    };
    files.sort();
    let mut keys = Vec::new();
    for f in files {
        match fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|pem| trust_store_from_pem(&pem))
        {
            Ok(k) if k.is_empty() => warn!("{what} {}: no key or certificate in it", f.display()),
            Ok(k) => keys.extend(k),
            Err(e) => error!("{what} {}: {e}; not trusted", f.display()),
        }
    }
    keys
}

/// The device's trust store under `opts`; logs what it holds, the OEM
/// certificates it leaves out and a trust directory found on storage.
pub fn load(opts: &Options) -> TrustStore {
    let root = read_dir(&opts.truststore, "trust store");
    let oem = read_dir(&opts.oem_truststore, "OEM trust store");
    let (store, refused) = TrustStore::new(root).with_oem(oem);
    for r in refused {
        warn!("{r}; left out");
    }
    let (n, o) = store.len();
    info!(
        "trust store: {n} key(s)/CA(s) from {}, {o} OEM CA(s) from {}",
        opts.truststore.display(),
        opts.oem_truststore.display()
    );
    let legacy = opts.storage.join(pvstate::layout::TRUST_DIR);
    if fs::read_dir(&legacy).is_ok_and(|mut d| d.next().is_some()) {
        warn!(
            "{} is on the writable storage and is no longer trusted; \
             build the keys into the initramfs (PVROOT_TRUST) or set secureboot.truststore",
            legacy.display()
        );
    }
    store
}
