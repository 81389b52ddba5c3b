//! `pvr sig add|up|ls`: pvs@2 signatures of parts, with the key options on
//! `pvr sig` (as Pantavisor's pvr takes them) or on the subcommand.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use pvstate::Entry;

use crate::error::{Error, Result};
use crate::repo::Repo;

#[derive(Subcommand)]
pub(crate) enum SigCommand {
    /// Sign part NAME (NAME/** and _config/NAME/**, without NAME/src.json),
    /// or, with --raw NAME, the keys --include/--exclude select; the
    /// signature is _sigs/NAME.json, committed.
    #[command(visible_alias = "a")]
    Add {
        #[arg(short, long, conflicts_with = "raw", required_unless_present = "raw")]
        part: Option<String>,
        /// A signature over the keys of --include minus --exclude (globs, ** crosses /).
        #[arg(short, long, requires = "include")]
        raw: Option<String>,
        #[arg(short, long, requires = "raw")]
        include: Vec<String>,
        #[arg(short, long, requires = "raw")]
        exclude: Vec<String>,
        /// Leave the part's _config/NAME/ overlay out of the signature.
        #[arg(short, long, requires = "part")]
        noconfig: bool,
        #[command(flatten)]
        keys: SigningArgs,
    },
    /// Sign every existing signature again (same keys selected), e.g. after
    /// an app update changed what a signature covers; or only those named
    /// (NAME or _sigs/NAME.json).
    #[command(visible_alias = "update")]
    Up {
        names: Vec<String>,
        #[command(flatten)]
        keys: SigningArgs,
    },
    /// Verify every signature of the committed state and show what each
    /// covers, and which keys no signature covers.
    Ls {
        /// Trusted public keys and CA certificates, PEM (default:
        /// $PVR_SIG_CACERTS, then ~/.pvr/pvs/cacerts.default.pem).
        #[arg(long, alias = "pubkey")]
        cacerts: Option<PathBuf>,
    },
}

/// `pvr sig`'s own options (Pantavisor's pvr puts them there).
#[derive(Args, Default)]
pub(crate) struct SigParentArgs {
    /// Private key, PEM (as the subcommands' --key).
    #[arg(short = 'k', long = "key", id = "parent_key", value_name = "KEY")]
    pub(crate) key: Option<PathBuf>,
    /// Certificate chain, PEM, or `no` for none (as the subcommands' --x5c).
    #[arg(short = 'x', long = "x5c", id = "parent_x5c", value_name = "X5C")]
    x5c: Option<PathBuf>,
    /// A public key or CA certificates, PEM, to verify with (sig ls).
    #[arg(
        short = 'p',
        long = "pubkey",
        id = "parent_pubkey",
        value_name = "PUBKEY",
        env = "PVR_SIG_PUBKEY"
    )]
    pub(crate) pubkey: Option<PathBuf>,
    /// Trusted certificates, PEM (sig ls; as its --cacerts).
    #[arg(
        short = 'c',
        long = "cacerts",
        id = "parent_cacerts",
        value_name = "CACERTS"
    )]
    pub(crate) cacerts: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct SigningArgs {
    /// Private key, PEM: EC P-256 (ES256), EC P-384 (ES384) or RSA (RS256)
    /// (default: $PVR_SIG_KEY, then ~/.pvr/pvs/key.default.pem).
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
    /// Certificate chain, PEM, the key's certificate first: put in the
    /// signature as x5c instead of the public key (default: $PVR_X5C_PATH,
    /// then ~/.pvr/pvs/x5c.default.pem when present); `no`: none.
    #[arg(long)]
    x5c: Option<PathBuf>,
}

impl SigningArgs {
    /// These, or else the parent `pvr sig` options.
    fn or(self, parent: &SigParentArgs) -> SigningArgs {
        SigningArgs {
            key: self.key.or_else(|| parent.key.clone()),
            x5c: self.x5c.or_else(|| parent.x5c.clone()),
        }
    }
}

/// `--FLAG`, then `$ENV`, then `~/.pvr/pvs/FILE` (or `$PVR_CONFIG_DIR/pvs/FILE`) if it exists.
pub(crate) fn key_file(flag: Option<PathBuf>, env: &str, file: &str) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os(env).map(PathBuf::from))
        .or_else(|| {
            let base = std::env::var_os("PVR_CONFIG_DIR")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pvr")))?;
            Some(base.join("pvs").join(file)).filter(|p| p.exists())
        })
}

pub(crate) fn load_signer(keys: SigningArgs) -> Result<(pvstate::sig::PrivateKey, Vec<Vec<u8>>)> {
    let key_path = key_file(keys.key, "PVR_SIG_KEY", "key.default.pem").ok_or_else(|| {
        Error::Usage(
            "no signing key: give --key FILE, set PVR_SIG_KEY, or put one in ~/.pvr/pvs/key.default.pem"
                .into(),
        )
    })?;
    let pem = std::fs::read_to_string(&key_path).map_err(|e| Error::io(&key_path, e))?;
    let key = pvstate::sig::PrivateKey::from_pem(&pem)
        .map_err(|e| Error::Usage(format!("{}: {e}", key_path.display())))?;
    let x5c = match key_file(keys.x5c, "PVR_X5C_PATH", "x5c.default.pem") {
        // Pantavisor's pvr: --x5c no leaves the chain out.
        Some(p) if p.as_os_str() == "no" => Vec::new(),
        Some(p) => {
            let pem = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            pvstate::sig::certs_from_pem(&pem)
                .map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?
        }
        None => Vec::new(),
    };
    Ok((key, x5c))
}

pub(crate) fn sig_add(
    dir: &Path,
    part: Option<String>,
    raw: Option<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    noconfig: bool,
    keys: SigningArgs,
) -> Result<()> {
    let repo = Repo::open(dir)?;
    let mut state = repo.committed()?;
    let (name, include, exclude) = match (part, raw) {
        (Some(part), _) => {
            if state.part_keys(&part).is_empty() {
                return Err(Error::Usage(format!(
                    "unknown part \"{part}\": the committed state has no {part}/ keys"
                )));
            }
            let (mut inc, exc) = pvstate::sig::part_globs(&part);
            if noconfig {
                inc.retain(|g| !g.starts_with("_config/"));
            }
            (part, inc, exc)
        }
        (None, Some(raw)) => {
            let mut exclude = exclude;
            exclude.push(format!("_sigs/{raw}.json"));
            (raw, include, exclude)
        }
        (None, None) => return Err(Error::Usage("give --part NAME or --raw NAME".into())),
    };
    pvcompose::container::check_name(&name)
        .map_err(|e| Error::Usage(format!("signature name: {e}")))?;
    let (covered, _) = pvstate::sig::payload(&state, &include, &exclude);
    if covered.is_empty() {
        return Err(Error::Usage(format!(
            "signature {name}: --include {include:?} selects no key of the committed state"
        )));
    }
    let (key, x5c) = load_signer(keys)?;
    let doc =
        pvstate::sig::sign_with(&state, &key, &x5c, &include, &exclude).map_err(Error::Usage)?;
    let key_name = format!("_sigs/{name}.json");
    repo.write_file(&key_name, &serde_json::to_value(&doc).unwrap_or_default())?;
    state.insert(key_name.clone(), Entry::Signature(doc));
    repo.write_committed(&state)?;
    println!(
        "signed {} key(s) as {key_name} ({}{}) and committed it",
        covered.len(),
        key.alg(),
        if x5c.is_empty() { "" } else { ", x5c" }
    );
    Ok(())
}

pub(crate) fn sig_up(dir: &Path, names: &[String], keys: SigningArgs) -> Result<()> {
    let repo = Repo::open(dir)?;
    let mut state = repo.committed()?;
    // NAME or _sigs/NAME.json, as Pantavisor's pvr takes them.
    let wanted: Vec<String> = names
        .iter()
        .map(|n| {
            if n.ends_with(".json") {
                n.clone()
            } else {
                format!("_sigs/{n}.json")
            }
        })
        .collect();
    let sigs: Vec<(String, pvstate::model::SignatureDoc)> = state
        .entries()
        .iter()
        .filter(|(k, _)| wanted.is_empty() || wanted.contains(k))
        .filter_map(|(k, e)| match e {
            Entry::Signature(doc) => Some((k.clone(), doc.clone())),
            _ => None,
        })
        .collect();
    if let Some(w) = wanted.iter().find(|w| !sigs.iter().any(|(k, _)| k == *w)) {
        return Err(Error::Usage(format!(
            "{w}: no such signature in the committed state"
        )));
    }
    if sigs.is_empty() {
        return Err(Error::Usage(
            "the committed state has no signature to update; use pvr sig add".into(),
        ));
    }
    let (key, x5c) = load_signer(keys)?;
    for (k, doc) in sigs {
        let (include, exclude) = pvstate::sig::globs_of(&doc)
            .ok_or_else(|| Error::Usage(format!("{k}: its protected header is not readable")))?;
        let doc = pvstate::sig::sign_with(&state, &key, &x5c, &include, &exclude)
            .map_err(Error::Usage)?;
        repo.write_file(&k, &serde_json::to_value(&doc).unwrap_or_default())?;
        state.insert(k.clone(), Entry::Signature(doc));
        println!("re-signed {k}");
    }
    repo.write_committed(&state)?;
    Ok(())
}

pub(crate) fn sig_ls(dir: &Path, cacerts: Option<PathBuf>) -> Result<()> {
    let repo = Repo::open(dir)?;
    let state = repo.committed()?;
    let path = key_file(cacerts, "PVR_SIG_CACERTS", "cacerts.default.pem").ok_or_else(|| {
        Error::Usage(
            "no trust store: give --cacerts FILE, set PVR_SIG_CACERTS, or put one in ~/.pvr/pvs/cacerts.default.pem"
                .into(),
        )
    })?;
    let pem = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let trusted = pvstate::sig::trust_store_from_pem(&pem).map_err(Error::Usage)?;
    let mut covered = BTreeSet::new();
    let mut bad = 0;
    for (key, entry) in state.entries() {
        if let Entry::Signature(doc) = entry {
            match pvstate::sig::verify(doc, &state, &trusted) {
                Ok(keys) => {
                    println!("{key}: verified, covers {} key(s)", keys.len());
                    for k in &keys {
                        println!("    {k}");
                    }
                    covered.extend(keys);
                }
                Err(e) => {
                    bad += 1;
                    println!("{key}: NOT VERIFIED: {e}");
                }
            }
        }
    }
    let uncovered: Vec<&String> = state
        .entries()
        .keys()
        .filter(|k| *k != "#spec" && !k.starts_with("_sigs/") && !covered.contains(*k))
        .collect();
    println!("{} key(s) no signature covers", uncovered.len());
    for k in uncovered {
        println!("    {k}");
    }
    if bad > 0 {
        return Err(Error::Usage(format!("{bad} signature(s) do not verify")));
    }
    Ok(())
}

/// `pvr sig [OPTIONS] SUBCOMMAND`: the subcommand's key options, else the
/// parent's.
pub(crate) fn run(dir: &Path, parent: SigParentArgs, command: SigCommand) -> Result<()> {
    match command {
        SigCommand::Add {
            part,
            raw,
            include,
            exclude,
            noconfig,
            keys,
        } => sig_add(dir, part, raw, include, exclude, noconfig, keys.or(&parent)),
        SigCommand::Up { names, keys } => sig_up(dir, &names, keys.or(&parent)),
        SigCommand::Ls { cacerts } => sig_ls(dir, cacerts.or(parent.cacerts).or(parent.pubkey)),
    }
}
