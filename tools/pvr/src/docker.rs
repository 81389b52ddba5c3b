//! `--type docker` sources: pull an image from a registry (Docker Registry HTTP
//! API v2 / OCI distribution) and apply its layers, whiteouts included, into a
//! root filesystem.
//!
//! Authentication follows the registry's 401 challenge: `Bearer` (a token from
//! the realm it names, asked with the credentials if any) or `Basic`.
//! Credentials come from `--username`/`--password`, `PVR_REGISTRY_USER`/
//! `PVR_REGISTRY_PASSWORD`, or `~/.docker/config.json` (`auths.REGISTRY.auth`).
//! Registries on localhost/127.0.0.1/::1 are spoken to over plain HTTP (as
//! docker does), others over HTTPS unless `--plain-http`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`, as docker writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// `sha256:` and 64 lowercase hex digits: the only digests we fetch (they
/// go into URLs and are sliced for display, so nothing else gets through).
pub fn digest_ok(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The digest of layer `i` of a manifest, checked.
fn layer_digest<'a>(r: &Reference, i: usize, layer: &'a Value) -> Result<&'a str> {
    let digest = layer["digest"]
        .as_str()
        .ok_or_else(|| Error::Registry(format!("{r}: layer {i} without a digest")))?;
    if !digest_ok(digest) {
        return Err(Error::Registry(format!(
            "{r}: layer {i} has a malformed digest {digest:?} (expected sha256: and 64 hex digits)"
        )));
    }
    Ok(digest)
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Usage(format!("--from {s}: {why}"));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !digest_ok(d) {
                    return Err(bad("a digest is sha256: and 64 hex digits"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            // Docker Hub by the names docker accepts for it: its registry
            // is registry-1.docker.io (the token service is named by its
            // 401 challenge).
            Some(("docker.io" | "index.docker.io" | "registry-1.docker.io", more)) => {
                ("registry-1.docker.io".to_string(), more.to_string())
            }
            Some((first, more))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), more.to_string())
            }
            _ => ("registry-1.docker.io".to_string(), rest.to_string()),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path.clone(), None),
        };
        if repository.is_empty()
            || !repository
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        {
            return Err(bad(
                "not an image name (lowercase letters, digits, . _ - /)",
            ));
        }
        let repository = if registry == "registry-1.docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if given, else the tag.
    fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `OS/ARCH[/VARIANT]`, e.g. linux/arm64 or linux/arm/v7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(Error::Usage(format!(
                "--platform {s}: expected OS/ARCH[/VARIANT], e.g. linux/arm64"
            ))),
        }
    }

    /// The platform this program runs on, in OCI's names.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    fn matches(&self, p: &Value) -> bool {
        p["os"].as_str() == Some(&self.os)
            && p["architecture"].as_str() == Some(&self.arch)
            && self
                .variant
                .as_deref()
                .map_or(true, |v| p["variant"].as_str() == Some(v))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn platform_of(p: &Value) -> String {
    let mut s = format!(
        "{}/{}",
        p["os"].as_str().unwrap_or("?"),
        p["architecture"].as_str().unwrap_or("?")
    );
    if let Some(v) = p["variant"].as_str() {
        s.push('/');
        s.push_str(v);
    }
    s
}

#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
}

impl Credentials {
    /// Flags first, then the environment, then docker's config file.
    fn resolve(&self, registry: &str) -> Option<(String, String)> {
        let user = self
            .user
            .clone()
            .or_else(|| std::env::var("PVR_REGISTRY_USER").ok());
        let password = self
            .password
            .clone()
            .or_else(|| std::env::var("PVR_REGISTRY_PASSWORD").ok());
        if let (Some(u), Some(p)) = (user, password) {
            return Some((u, p));
        }
        let home = std::env::var_os("HOME")?;
        let text = fs::read(Path::new(&home).join(".docker/config.json")).ok()?;
        let config: Value = serde_json::from_slice(&text).ok()?;
        let auths = config["auths"].as_object()?;
        let entry = auths
            .get(registry)
            .or_else(|| auths.get(&format!("https://{registry}")))
            .or_else(|| {
                (registry == "registry-1.docker.io")
                    .then(|| auths.get("https://index.docker.io/v1/"))
                    .flatten()
            })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(entry["auth"].as_str()?)
            .ok()?;
        let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// One registry, with the authorization it earned.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    name: String,
    login: Option<(String, String)>,
    auth: Option<String>,
}

impl Registry {
    pub fn new(registry: &str, creds: &Credentials, plain_http: bool) -> Self {
        let host = registry.split(':').next().unwrap_or(registry);
        let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.");
        let scheme = if plain_http || local { "http" } else { "https" };
        Registry {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(std::time::Duration::from_secs(20))
                .timeout_read(std::time::Duration::from_secs(120))
                .build(),
            base: format!("{scheme}://{registry}"),
            name: registry.to_string(),
            login: creds.resolve(registry),
            auth: None,
        }
    }

    /// GET with the registry's authentication dance; the answer is 2xx.
    fn get(&mut self, path: &str, accept: &[&str]) -> Result<ureq::Response> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let mut req = self.agent.get(&url);
            if !accept.is_empty() {
                req = req.set("Accept", &accept.join(", "));
            }
            if let Some(a) = &self.auth {
                req = req.set("Authorization", a);
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if attempt == 0 => {
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    self.auth = Some(self.authorize(&challenge)?);
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(Error::Registry(format!(
                        "{}: 401 Unauthorized for {path}: the registry refused the credentials{}",
                        self.name,
                        if self.login.is_none() {
                            " (none given: --username/--password or PVR_REGISTRY_USER/PVR_REGISTRY_PASSWORD)"
                        } else {
                            ""
                        }
                    )))
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let body = resp.into_string().unwrap_or_default();
                    let detail = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
                        .unwrap_or(body);
                    return Err(Error::Registry(format!(
                        "{}: {code} for {path}: {}",
                        self.name,
                        detail.trim()
                    )));
                }
                Err(e) => return Err(Error::Registry(format!("{}: {e}", self.name))),
            }
        }
        Err(Error::Registry(format!(
            "{}: authorization failed",
            self.name
        )))
    }

    /// The Authorization header a 401 challenge asks for.
    fn authorize(&self, challenge: &str) -> Result<String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let param = |key: &str| -> Option<String> {
            params.split(',').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k.eq_ignore_ascii_case(key)).then(|| v.trim_matches('"').to_string())
            })
        };
        let basic = self.login.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(|| {
                Error::Registry(format!(
                    "{}: 401 Unauthorized: the registry wants a login (Basic realm {:?}); give \
                     --username/--password or PVR_REGISTRY_USER/PVR_REGISTRY_PASSWORD",
                    self.name,
                    param("realm").unwrap_or_default()
                ))
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Registry(format!(
                "{}: 401 Unauthorized with an unsupported challenge {challenge:?}",
                self.name
            )));
        }
        let realm = param("realm").ok_or_else(|| {
            Error::Registry(format!("{}: Bearer challenge without a realm", self.name))
        })?;
        let mut req = self.agent.get(&realm);
        for key in ["service", "scope"] {
            if let Some(v) = param(key) {
                req = req.query(key, &v);
            }
        }
        if let Some(b) = &basic {
            req = req.set("Authorization", b);
        }
        let token: Value = match req.call() {
            Ok(r) => {
                let body = r
                    .into_string()
                    .map_err(|e| Error::Registry(format!("{realm}: token answer: {e}")))?;
                serde_json::from_str(&body)
                    .map_err(|e| Error::Registry(format!("{realm}: token answer: {e}")))?
            }
            Err(ureq::Error::Status(code, _)) => {
                return Err(Error::Registry(format!(
                    "{}: 401 Unauthorized; the token service {realm} answered {code}{}",
                    self.name,
                    if basic.is_none() {
                        " (no credentials given: --username/--password or PVR_REGISTRY_USER/PVR_REGISTRY_PASSWORD)"
                    } else {
                        ""
                    }
                )))
            }
            Err(e) => return Err(Error::Registry(format!("{realm}: {e}"))),
        };
        let t = token["token"]
            .as_str()
            .or_else(|| token["access_token"].as_str())
            .ok_or_else(|| Error::Registry(format!("{realm}: no token in the answer")))?;
        Ok(format!("Bearer {t}"))
    }

    /// A manifest (or index) and its digest, checked.
    fn manifest(&mut self, repo: &str, reference: &str) -> Result<(Value, String)> {
        let resp = self.get(
            &format!("/v2/{repo}/manifests/{reference}"),
            &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST],
        )?;
        let content_type = resp.content_type().to_string();
        let mut body = Vec::new();
        resp.into_reader()
            .take(8 << 20)
            .read_to_end(&mut body)
            .map_err(|e| Error::Registry(format!("{}: manifest: {e}", self.name)))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if reference.starts_with("sha256:") && reference != digest {
            return Err(Error::Registry(format!(
                "{}: manifest {reference} arrived with digest {digest}",
                self.name
            )));
        }
        let mut v: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Registry(format!("{}: manifest is not JSON: {e}", self.name)))?;
        if v.get("mediaType").is_none() {
            v["mediaType"] = json!(content_type);
        }
        Ok((v, digest))
    }

    /// Download a blob to `out`, checking its digest; returns its size.
    fn blob(
        &mut self,
        repo: &str,
        digest: &str,
        out: &mut File,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let resp = self.get(&format!("/v2/{repo}/blobs/{digest}"), &[])?;
        let mut reader = resp.into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| Error::Registry(format!("{}: blob {digest}: {e}", self.name)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::Registry(format!("blob {digest}: {e}")))?;
            total += n as u64;
            progress(total);
        }
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != digest {
            return Err(Error::Registry(format!(
                "{}: blob {digest} arrived with digest {got}",
                self.name
            )));
        }
        Ok(total)
    }
}

/// What `resolve` found: the digest the reference names now and the image
/// manifest chosen for the platform.
pub struct Resolved {
    /// Digest of what the reference points at (an index or a manifest).
    pub digest: String,
    pub manifest: Value,
    pub manifest_digest: String,
}

/// Ask the registry what the reference points at and pick the manifest for
/// `platform` out of an index.
pub fn resolve(reg: &mut Registry, r: &Reference, platform: &Platform) -> Result<Resolved> {
    let (top, digest) = reg.manifest(&r.repository, r.reference())?;
    let media = top["mediaType"].as_str().unwrap_or("");
    if media == OCI_INDEX || media == DOCKER_LIST || top.get("manifests").is_some() {
        let entries = top["manifests"].as_array().cloned().unwrap_or_default();
        let chosen = entries
            .iter()
            .find(|m| platform.matches(&m["platform"]))
            .ok_or_else(|| {
                let have: BTreeSet<String> = entries
                    .iter()
                    .map(|m| platform_of(&m["platform"]))
                    .collect();
                Error::Registry(format!(
                    "{r}: no image for {platform} in its index (it has {}); pass --platform",
                    have.into_iter().collect::<Vec<_>>().join(", ")
                ))
            })?;
        let want = chosen["digest"]
            .as_str()
            .ok_or_else(|| Error::Registry(format!("{r}: index entry without a digest")))?
            .to_string();
        let (manifest, manifest_digest) = reg.manifest(&r.repository, &want)?;
        return Ok(Resolved {
            digest,
            manifest,
            manifest_digest,
        });
    }
    if media != OCI_MANIFEST && media != DOCKER_MANIFEST && top.get("layers").is_none() {
        return Err(Error::Registry(format!(
            "{r}: unsupported manifest type {media:?} (schema 1 images are not supported)"
        )));
    }
    Ok(Resolved {
        manifest_digest: digest.clone(),
        digest,
        manifest: top,
    })
}

/// An image pulled into a root filesystem.
pub struct Pulled {
    /// The image configuration's `config` (Entrypoint, Cmd, Env, …).
    pub config: Value,
    /// When the image was made (RFC 3339), for reproducible time stamps.
    pub created: Option<String>,
    pub layers: usize,
    pub bytes: u64,
}

/// Download the image's config and layers (into `scratch`) and apply the
/// layers in order onto `rootfs`.
pub fn pull(
    reg: &mut Registry,
    r: &Reference,
    platform: &Platform,
    resolved: &Resolved,
    rootfs: &Path,
    scratch: &Path,
) -> Result<Pulled> {
    let m = &resolved.manifest;
    let config_digest = m["config"]["digest"]
        .as_str()
        .ok_or_else(|| Error::Registry(format!("{r}: manifest without a config")))?;
    let mut file = tempfile::tempfile_in(scratch).map_err(|e| Error::io(scratch, e))?;
    reg.blob(&r.repository, config_digest, &mut file, &mut |_| {})?;
    file.rewind().map_err(|e| Error::io(scratch, e))?;
    let image_config: Value = serde_json::from_reader(BufReader::new(&mut file))
        .map_err(|e| Error::Registry(format!("{r}: image config is not JSON: {e}")))?;
    let have = Platform {
        os: image_config["os"].as_str().unwrap_or("").to_string(),
        arch: image_config["architecture"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        variant: image_config["variant"].as_str().map(str::to_string),
    };
    if have.os != platform.os || have.arch != platform.arch {
        return Err(Error::Registry(format!(
            "{r} is an image for {have}, not {platform}; take an image (or a multi-arch index) \
             for {platform}, or pass --platform {have} to use it anyway"
        )));
    }
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    let total: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    let mut done = 0u64;
    for (i, layer) in layers.iter().enumerate() {
        let digest = layer_digest(r, i, layer)?;
        let media = layer["mediaType"].as_str().unwrap_or("");
        let gzip = if media.ends_with("+gzip") || media.ends_with(".tar.gzip") {
            true
        } else if media.ends_with(".tar") || media.ends_with("layer.v1.tar") {
            false
        } else {
            return Err(Error::Registry(format!(
                "{r}: layer {digest} is {media:?}; gzip and uncompressed tar layers are supported"
            )));
        };
        let mut file = tempfile::tempfile_in(scratch).map_err(|e| Error::io(scratch, e))?;
        let short = &digest[7..19];
        let size = reg.blob(&r.repository, digest, &mut file, &mut |n| {
            eprint!(
                "\r  layer {}/{} {short}: {} MiB of {} MiB",
                i + 1,
                layers.len(),
                (done + n) >> 20,
                total >> 20
            );
        })?;
        done += size;
        eprintln!();
        apply_layer(&mut file, gzip, rootfs)
            .map_err(|e| Error::Registry(format!("{r}: layer {digest}: {e}")))?;
    }
    Ok(Pulled {
        config: image_config["config"].clone(),
        created: image_config["created"].as_str().map(str::to_string),
        layers: layers.len(),
        bytes: done,
    })
}

/// The settings keys an image config gives a container.
pub fn settings_json(config: &Value) -> Value {
    let mut out = Map::new();
    for key in ["Entrypoint", "Cmd", "Env", "WorkingDir", "User"] {
        if let Some(v) = config.get(key).filter(|v| !v.is_null()) {
            out.insert(key.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// A layer member's path as a relative path without `.` or `..`.
fn clean(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("member {} leaves the root filesystem", path.display()),
                ))
            }
        }
    }
    Ok(out)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `rel`'s parents inside `root` are real directories (a whiteout or
/// member must not reach through a symlink out of the root filesystem).
fn parents_are_dirs(root: &Path, rel: &Path) -> bool {
    let mut p = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            p.push(c);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => return false,
                _ => {}
            }
        }
    }
    true
}

/// Apply one layer (a tar, gzip-compressed or not) onto `root`: first its
/// whiteouts (`.wh.NAME` deletes NAME of the layers below, `.wh..wh..opq`
/// empties its directory), then its members, each replacing what was there.
pub fn apply_layer(file: &mut File, gzip: bool, root: &Path) -> io::Result<()> {
    let open = |file: &mut File| -> io::Result<Box<dyn Read>> {
        file.rewind()?;
        let f = BufReader::new(file.try_clone()?);
        Ok(if gzip {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            Box::new(f)
        })
    };
    // Pass 1: whiteouts, which apply to the layers below wherever they sit
    // in this layer's tar.
    let mut archive = tar::Archive::new(open(file)?);
    for entry in archive.entries()? {
        let entry = entry?;
        let rel = clean(&entry.path()?)?;
        let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let dir = rel.parent().unwrap_or(Path::new(""));
        if !parents_are_dirs(root, &rel) {
            continue;
        }
        if name == ".wh..wh..opq" {
            if let Ok(children) = fs::read_dir(root.join(dir)) {
                for child in children {
                    remove_any(&child?.path())?;
                }
            }
        } else if let Some(target) = name.strip_prefix(".wh.") {
            remove_any(&root.join(dir).join(target))?;
        }
    }
    // Pass 2: the members.
    let mut archive = tar::Archive::new(open(file)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel = clean(&entry.path()?)?;
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(".wh.") || rel.as_os_str().is_empty() {
            continue;
        }
        if !parents_are_dirs(root, &rel) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("member {} is under a symbolic link", rel.display()),
            ));
        }
        let dest = root.join(&rel);
        let is_dir = entry.header().entry_type().is_dir();
        if let Ok(m) = fs::symlink_metadata(&dest) {
            // A directory stays (and merges) only if the member is one too.
            if !(is_dir && m.is_dir()) {
                remove_any(&dest)?;
            }
        }
        entry.unpack_in(root)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_docker_does() {
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.registry, "registry-1.docker.io");
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse("localhost:5000/org/app:1.4.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "org/app", Some("1.4.2"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("registry.example.com/modbus@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.tag, None);
        // Docker Hub's other names: the registry-1 host, library/ for
        // official images.
        for name in [
            "docker.io/library/alpine:3.20",
            "docker.io/alpine:3.20",
            "index.docker.io/alpine:3.20",
        ] {
            let r = Reference::parse(name).unwrap();
            assert_eq!(
                (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
                ("registry-1.docker.io", "library/alpine", Some("3.20")),
                "{name}"
            );
        }
        assert!(Reference::parse("Bad/Name").is_err());
        assert!(Reference::parse("x@sha256:12").is_err());
        assert!(Reference::parse(&format!("x@sha256:{}", "z".repeat(64))).is_err());
    }

    #[test]
    fn platforms() {
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!(Platform::parse("arm64").is_err());
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(&json!({"os": "linux", "architecture": "arm64", "variant": "v8"})));
        assert!(!p.matches(&json!({"os": "linux", "architecture": "amd64"})));
    }

    /// A tar layer from (path, contents or None for a directory).
    fn layer(members: &[(&str, Option<&str>)]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        {
            let mut b = tar::Builder::new(&mut file);
            for (path, data) in members {
                let mut h = tar::Header::new_gnu();
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1_700_000_000);
                match data {
                    Some(d) => {
                        h.set_entry_type(tar::EntryType::Regular);
                        h.set_size(d.len() as u64);
                        h.set_mode(0o644);
                        b.append_data(&mut h, path, d.as_bytes()).unwrap();
                    }
                    None => {
                        h.set_entry_type(tar::EntryType::Directory);
                        h.set_size(0);
                        h.set_mode(0o755);
                        b.append_data(&mut h, path, &[][..]).unwrap();
                    }
                }
            }
            b.finish().unwrap();
        }
        file
    }

    #[test]
    fn whiteouts_delete_and_opaque_directories_empty_lower_layers() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut l1 = layer(&[
            ("etc/", None),
            ("etc/a", Some("a")),
            ("etc/b", Some("b")),
            ("opt/", None),
            ("opt/dir/", None),
            ("opt/dir/x", Some("x")),
            ("opt/dir/y", Some("y")),
            ("var/", None),
            ("var/keep", Some("1")),
        ]);
        apply_layer(&mut l1, false, r).unwrap();
        // The opaque marker comes after a new member of the same directory:
        // it still empties only what the lower layers put there.
        let mut l2 = layer(&[
            ("opt/dir/z", Some("z")),
            ("opt/dir/.wh..wh..opq", Some("")),
            ("etc/.wh.b", Some("")),
            ("var/keep", Some("2")),
        ]);
        apply_layer(&mut l2, false, r).unwrap();
        assert!(r.join("etc/a").exists());
        assert!(!r.join("etc/b").exists());
        assert!(!r.join("opt/dir/x").exists() && !r.join("opt/dir/y").exists());
        assert_eq!(fs::read_to_string(r.join("opt/dir/z")).unwrap(), "z");
        assert_eq!(fs::read_to_string(r.join("var/keep")).unwrap(), "2");
        assert!(!r.join("etc/.wh.b").exists());
        assert!(!r.join("opt/dir/.wh..wh..opq").exists());
    }

    #[test]
    fn a_member_escaping_the_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        // tar::Builder refuses to write "..", so write the name by hand.
        let mut file = tempfile::tempfile().unwrap();
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        file.write_all(h.as_bytes()).unwrap();
        file.write_all(&[b'x'; 512]).unwrap();
        file.write_all(&[0u8; 1024]).unwrap();
        let err = apply_layer(&mut file, false, root.path()).unwrap_err();
        assert!(err.to_string().contains("leaves the root"), "{err}");
    }

    /// Defect: a manifest whose layer digest was short panicked (a slice
    /// for the progress line) instead of failing with the reason.
    #[test]
    fn a_malformed_layer_digest_is_an_error() {
        let r = Reference::parse("localhost:5000/app:1").unwrap();
        for bad in [json!("sha256:12"), json!("sha256:é"), json!(7), json!(null)] {
            let layer =
                json!({"digest": bad, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"});
            let e = layer_digest(&r, 0, &layer).unwrap_err().to_string();
            assert!(e.contains("layer 0"), "{e}");
        }
        let good = format!("sha256:{}", "0a".repeat(32));
        assert_eq!(layer_digest(&r, 0, &json!({"digest": good})).unwrap(), good);
    }
}
