//! Assembling a pvroot — the contents of a device's data partition — from a
//! YAML composition manifest (docs/pvroot-manifest.md): revision 0 made of the
//! BSP and the core containers, and the optional containers as factory
//! packages installed on first boot.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pvstate::pvrexport::{self, ExportOptions};
use pvstate::{canonical, Entry, ObjectStore, State};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::bsp::{self, BspJob};
use crate::container::{self, check_name, ContainerJob};
use crate::error::{ComposeError, Result};
use crate::output::StagedDir;
use crate::part;
use crate::report::{PartStats, Reporter};
use crate::spec::ContainerSettings;
use crate::squash::{parse_size, Bcj, SquashOptions, SquashWriter};
use crate::tree::Exclude;

/// Where the factory packages go inside the pvroot (meta-pantavisor's name).
pub const FACTORY_DIR: &str = pvstate::layout::FACTORY_DIR;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BspEntry {
    /// A composed BSP part (directory or pvrexport) …
    pub part: Option<PathBuf>,
    /// … or the files to compose it from.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub fdt: Vec<PathBuf>,
    pub modules: Option<PathBuf>,
    pub firmware: Option<PathBuf>,
    #[serde(default)]
    pub addons: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SquashSettings {
    pub comp: Option<String>,
    pub bcj: Option<String>,
    pub block_size: Option<String>,
    pub mtime: Option<u64>,
    pub mem: Option<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Bootloader {
    /// `boot/pv.env`, read by our initramfs (QEMU direct kernel boot).
    #[default]
    Plain,
    /// `boot/uboot.txt`, Pantavisor's U-Boot environment text.
    Uboot,
    /// Raspberry Pi A/B tryboot: `boot/pv.env` for the variables, and the
    /// daemon told (`bootloader=` in the configuration) to switch the
    /// firmware's `autoboot.txt` on the `bootsel` partition, and to write a
    /// tried revision's BSP to the boot partition the tryboot takes.
    #[serde(rename = "rpi-tryboot")]
    RpiTryboot,
}

/// The runtime setting of the Raspberry Pi tryboot backend: `autoboot.txt`
/// on the SD card's first partition (the daemon mounts it, and boot
/// partitions 2 and 3, as it needs them), as
/// files/wic/pantavisor-rpi-tryboot.wks.in lays them out.
pub const RPI_TRYBOOT_SETTING: &str = "rpi-tryboot:/dev/mmcblk0p1:2,3";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub bsp: BspEntry,
    /// Every container the manifest knows, by name.
    #[serde(default, deserialize_with = "unique_map")]
    pub containers: BTreeMap<String, serde_yaml::Value>,
    /// Containers of revision 0 (PVROOT_CONTAINERS_CORE).
    #[serde(default)]
    pub core: Vec<String>,
    /// Factory packages (PVROOT_CONTAINERS).
    #[serde(default)]
    pub optional: Vec<String>,
    /// A device.json file (groups, disks, volumes).
    pub device: Option<PathBuf>,
    /// `config/pantavisor.config` entries.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub bootloader: Bootloader,
    #[serde(default)]
    pub squashfs: SquashSettings,
    /// Sign every part (BSP, core containers, factory packages).
    pub sign: Option<SignSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignSettings {
    /// PEM private key, EC P-256, EC P-384 or RSA (PKCS#8, SEC1 or PKCS#1);
    /// each part gets `_sigs/PART.json` (ES256, ES384 or RS256).
    pub key: PathBuf,
}

fn load_signing_key(path: &Path) -> Result<pvstate::sig::PrivateKey> {
    let pem = fs::read_to_string(path).map_err(|e| ComposeError::io(path, e))?;
    pvstate::sig::PrivateKey::from_pem(&pem)
        .map_err(|e| ComposeError::input(format!("sign.key {}: {e}", path.display())))
}

/// Add `_sigs/PART.json` for each part, replacing a signature it carried.
fn sign_parts<'a>(
    state: &mut State,
    parts: impl IntoIterator<Item = &'a str>,
    key: &pvstate::sig::PrivateKey,
) -> Result<()> {
    for part in parts {
        let (include, exclude) = pvstate::sig::part_globs(part);
        let doc = pvstate::sig::sign_with(state, key, &[], &include, &exclude)
            .map_err(|e| ComposeError::input(format!("signing {part}: {e}")))?;
        state.insert(format!("_sigs/{part}.json"), Entry::Signature(doc));
    }
    Ok(())
}

/// A mapping whose keys must be unique (YAML parsers keep the last of two).
fn unique_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, serde_yaml::Value>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<String, serde_yaml::Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping of container names to their definitions")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, serde_yaml::Value>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!(
                        "container \"{k}\" is defined twice"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visitor)
}

/// How one container of the manifest is obtained.
#[derive(Debug, Clone)]
pub enum Source {
    Part(PathBuf),
    Compose(Box<ContainerJob>),
}

/// Defaults for composing, from flags; the manifest's `squashfs` overrides.
pub fn squash_options(base: &SquashOptions, s: &SquashSettings) -> Result<SquashOptions> {
    let mut o = base.clone();
    if let Some(c) = &s.comp {
        o.comp = c.parse()?;
    }
    if let Some(b) = &s.bcj {
        o.bcj = Some(b.parse::<Bcj>()?);
    }
    if let Some(b) = &s.block_size {
        o.block_size = u32::try_from(parse_size(b)?)
            .map_err(|_| ComposeError::input(format!("block size {b} is too large")))?;
    }
    if let Some(m) = &s.mem {
        o.mem_mib = Some(parse_size(m)? / (1024 * 1024));
    }
    if s.mtime.is_some() {
        o.mtime = s.mtime;
    }
    for x in &s.exclude {
        o.excludes.push(Exclude::parse(x)?);
    }
    o.check()?;
    Ok(o)
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| ComposeError::io(path, e))?;
        serde_yaml::from_str(&text)
            .map_err(|e| ComposeError::input(format!("{}: {e}", path.display())))
    }

    /// Check the names and lists, and turn each container entry into a source.
    pub fn plan(
        &self,
        manifest_path: &Path,
        base_opts: &SquashOptions,
    ) -> Result<BTreeMap<String, Source>> {
        let here = manifest_path.parent().unwrap_or(Path::new("."));
        let ctx = |m: String| ComposeError::input(format!("{}: {m}", manifest_path.display()));
        let defaults = squash_options(base_opts, &self.squashfs)?;
        let mut listed = BTreeSet::new();
        for (list, names) in [("core", &self.core), ("optional", &self.optional)] {
            for name in names {
                check_name(name).map_err(|e| ctx(format!("{list}: {e}")))?;
                if !self.containers.contains_key(name) {
                    return Err(ctx(format!(
                        "{list}: container \"{name}\" is not defined under containers"
                    )));
                }
                if !listed.insert(name.clone()) {
                    return Err(ctx(format!("{list}: container \"{name}\" is listed twice (a name is core or optional, once)")));
                }
            }
        }
        let mut sources = BTreeMap::new();
        for (name, entry) in &self.containers {
            check_name(name).map_err(|e| ctx(format!("containers: {e}")))?;
            if !listed.contains(name) {
                continue;
            }
            let mut map = match entry {
                serde_yaml::Value::Mapping(m) => m.clone(),
                serde_yaml::Value::Null => serde_yaml::Mapping::new(),
                _ => {
                    return Err(ctx(format!(
                        "containers.{name}: expected a mapping with part: or rootfs:"
                    )))
                }
            };
            let mut take = |key: &str| map.remove(serde_yaml::Value::String(key.into()));
            let as_path = |key: &str, v: Option<serde_yaml::Value>| -> Result<Option<PathBuf>> {
                match v {
                    None => Ok(None),
                    Some(serde_yaml::Value::String(s)) => Ok(Some(resolve(here, Path::new(&s)))),
                    Some(_) => Err(ctx(format!("containers.{name}.{key}: expected a path"))),
                }
            };
            let part = as_path("part", take("part"))?;
            let rootfs = as_path("rootfs", take("rootfs"))?;
            let config_dir = as_path("config_dir", take("config_dir"))?;
            let squash: SquashSettings = match take("squashfs") {
                None => SquashSettings::default(),
                Some(v) => serde_yaml::from_value(v)
                    .map_err(|e| ctx(format!("containers.{name}.squashfs: {e}")))?,
            };
            let settings: ContainerSettings =
                serde_yaml::from_value(serde_yaml::Value::Mapping(map))
                    .map_err(|e| ctx(format!("containers.{name}: {e}")))?;
            let source = match (part, rootfs) {
                (Some(p), None) => {
                    if settings != ContainerSettings::default() || config_dir.is_some() {
                        return Err(ctx(format!("containers.{name}: a prebuilt part takes no settings; they are in its run.json")));
                    }
                    Source::Part(p)
                }
                (None, Some(r)) => Source::Compose(Box::new(ContainerJob {
                    name: name.clone(),
                    rootfs: r,
                    settings,
                    config_dir,
                    squash: squash_options(&defaults, &squash)
                        .map_err(|e| ctx(format!("containers.{name}.squashfs: {e}")))?,
                    src_extra: Default::default(),
                })),
                _ => {
                    return Err(ctx(format!(
                        "containers.{name}: give exactly one of part: or rootfs:"
                    )))
                }
            };
            sources.insert(name.clone(), source);
        }
        Ok(sources)
    }
}

/// Check that `state` holds exactly container `name` and nothing of others.
fn check_part_holds(name: &str, origin: &str, state: &State) -> Result<()> {
    let containers: Vec<&str> = state.containers().keys().copied().collect();
    if containers != [name] {
        return Err(ComposeError::input(format!(
            "{origin}: the manifest calls it \"{name}\" but the part holds container(s) {containers:?}"
        )));
    }
    let own = format!("{name}/");
    let config = format!("_config/{name}/");
    let sig = format!("_sigs/{name}.json");
    if let Some(stray) = state
        .entries()
        .keys()
        .find(|k| !(*k == "#spec" || k.starts_with(&own) || k.starts_with(&config) || **k == sig))
    {
        return Err(ComposeError::input(format!(
            "{origin}: part \"{name}\" also holds \"{stray}\", which belongs to no part of it"
        )));
    }
    Ok(())
}

/// What assembling produced.
#[derive(Debug)]
pub struct PvrootReport {
    pub out: PathBuf,
    pub state_id: String,
    pub core: Vec<String>,
    pub optional: Vec<String>,
    pub packed: Vec<PartStats>,
}

/// Run `jobs` on `workers` threads, each a part composed into `store`.
fn compose_parallel(
    jobs: Vec<(ContainerJob, bool)>,
    workers: usize,
    writer: &dyn SquashWriter,
    core_store: &ObjectStore,
    opt_store: &ObjectStore,
    scratch: &Path,
    reporter: &Reporter,
) -> Result<BTreeMap<String, (State, PartStats)>> {
    let queue = Mutex::new(jobs);
    let results = Mutex::new(BTreeMap::new());
    let failure: Mutex<Option<ComposeError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((job, core)) = next else { return };
                let store = if core { core_store } else { opt_store };
                match container::compose(&job, writer, store, scratch, reporter) {
                    Ok(r) => {
                        if let Ok(mut m) = results.lock() {
                            m.insert(job.name.clone(), r);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or(None) {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_default())
}

/// Assemble the pvroot of `manifest` into `out`, replacing it whole.
pub fn assemble(
    manifest_path: &Path,
    out: &Path,
    base_opts: &SquashOptions,
    writer: &dyn SquashWriter,
    jobs: usize,
    reporter: &Reporter,
) -> Result<PvrootReport> {
    let manifest = Manifest::load(manifest_path)?;
    let sources = manifest.plan(manifest_path, base_opts)?;
    let here = manifest_path.parent().unwrap_or(Path::new("."));
    let signing = match &manifest.sign {
        Some(s) => Some(load_signing_key(&resolve(here, &s.key))?),
        None => None,
    };
    let bsp_opts = squash_options(base_opts, &manifest.squashfs)?;

    let staged = StagedDir::new(out)?;
    let root = staged.path().to_path_buf();
    let store = pvstate::layout::Pvroot::at(&root).objects()?;
    let scratch = tempfile::Builder::new()
        .prefix(".scratch-")
        .tempdir_in(&root)
        .map_err(|e| ComposeError::io(&root, e))?;
    let opt_store = ObjectStore::open(scratch.path().join("objects"))?;

    // BSP.
    let mut packed = Vec::new();
    let bsp_state = match (
        &manifest.bsp.part,
        &manifest.bsp.kernel,
        &manifest.bsp.initrd,
    ) {
        (Some(p), None, None) => {
            let p = resolve(here, p);
            let state = part::load_into(&p, &store)?;
            if state.bsp().is_none() {
                return Err(ComposeError::input(format!(
                    "{}: not a BSP part (no bsp/run.json)",
                    p.display()
                )));
            }
            if let Some(k) = state
                .entries()
                .keys()
                .find(|k| !(*k == "#spec" || k.starts_with("bsp/") || *k == "_sigs/bsp.json"))
            {
                return Err(ComposeError::input(format!(
                    "{}: BSP part also holds \"{k}\"",
                    p.display()
                )));
            }
            state
        }
        (None, Some(kernel), Some(initrd)) => {
            let b = &manifest.bsp;
            let job = BspJob {
                kernel: resolve(here, kernel),
                initrd: resolve(here, initrd),
                fdts: b.fdt.iter().map(|f| resolve(here, f)).collect(),
                modules: b.modules.as_ref().map(|m| resolve(here, m)),
                firmware: b.firmware.as_ref().map(|f| resolve(here, f)),
                addons: b.addons.iter().map(|a| resolve(here, a)).collect(),
                squash: SquashOptions {
                    excludes: Vec::new(),
                    ..bsp_opts
                },
            };
            let (state, stats) = bsp::compose(&job, writer, &store, reporter)?;
            packed.extend(stats);
            state
        }
        _ => {
            return Err(ComposeError::input(format!(
                "{}: bsp: give either part: or kernel: and initrd:",
                manifest_path.display()
            )))
        }
    };

    // Containers: prebuilt parts are read, rootfs ones composed in parallel.
    let core: BTreeSet<&String> = manifest.core.iter().collect();
    let mut states: BTreeMap<String, State> = BTreeMap::new();
    let mut to_compose = Vec::new();
    for (name, source) in &sources {
        let is_core = core.contains(name);
        match source {
            Source::Part(p) => {
                let s = part::load_into(p, if is_core { &store } else { &opt_store })?;
                check_part_holds(name, &p.display().to_string(), &s)?;
                states.insert(name.clone(), s);
            }
            Source::Compose(job) => to_compose.push(((**job).clone(), is_core)),
        }
    }
    // Largest trees first keeps both cores busy to the end; the queue pops
    // from the back.
    to_compose.sort_by_cached_key(|(j, _)| dir_size_hint(&j.rootfs));
    let workers = jobs.min(to_compose.len()).max(1);
    // Each mksquashfs compresses on every core by itself; with several at
    // once, share the cores out instead of oversubscribing them.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for (job, _) in &mut to_compose {
        if job.squash.processors.is_none() && workers > 1 {
            job.squash.processors = Some((cores / workers).max(1));
        }
    }
    for (name, (state, stats)) in compose_parallel(
        to_compose,
        workers,
        writer,
        &store,
        &opt_store,
        scratch.path(),
        reporter,
    )? {
        states.insert(name, state);
        packed.push(stats);
    }

    // Revision 0: BSP + device.json + core containers.
    let mut merged: Map<String, Value> = match bsp_state.to_value() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(device) = &manifest.device {
        let path = resolve(here, device);
        let text = fs::read(&path).map_err(|e| ComposeError::io(&path, e))?;
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| ComposeError::input(format!("{}: not valid JSON: {e}", path.display())))?;
        merged.insert("device.json".into(), v);
    }
    for name in &manifest.core {
        for (k, v) in states[name].to_value().as_object().into_iter().flatten() {
            if k != "#spec" {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    let mut rev0 = State::parse(&canonical::to_vec(&Value::Object(merged))).map_err(|e| {
        ComposeError::input(format!("revision 0 of {}: {e}", manifest_path.display()))
    })?;
    if let Some(key) = &signing {
        let parts = std::iter::once("bsp").chain(manifest.core.iter().map(String::as_str));
        sign_parts(&mut rev0, parts, key)?;
    }
    pvstate::layout::Pvroot::at(&root).write_state("0", &rev0)?;
    pvstate::layout::Pvroot::at(&root).write_boot_links("0", &rev0)?;

    // Factory packages, checked against revision 0's groups and disks.
    if !manifest.optional.is_empty() {
        let dir = root.join(FACTORY_DIR);
        fs::create_dir_all(&dir).map_err(|e| ComposeError::io(&dir, e))?;
        for name in &manifest.optional {
            let mut state = states[name].clone();
            if let Some(key) = &signing {
                sign_parts(&mut state, [name.as_str()], key)?;
            }
            let state = &state;
            let mut with_rev0 = rev0.to_value();
            for (k, v) in state.to_value().as_object().into_iter().flatten() {
                with_rev0[k] = v.clone();
            }
            State::parse(&canonical::to_vec(&with_rev0)).map_err(|e| {
                ComposeError::input(format!(
                    "optional container {name} on top of revision 0: {e}"
                ))
            })?;
            let file = dir.join(format!("{name}.pvrexport.tgz"));
            pvrexport::export_file(state, &opt_store, &file, ExportOptions::default())?;
        }
    }

    // Boot environment and configuration.
    let boot = root.join("boot");
    fs::create_dir_all(&boot).map_err(|e| ComposeError::io(&boot, e))?;
    let (env_file, env) = match manifest.bootloader {
        Bootloader::Plain => ("pv.env", "pv_rev=0\npv_try=\n"),
        Bootloader::Uboot => ("uboot.txt", "pv_rev=0\n"),
        Bootloader::RpiTryboot => ("pv.env", "pv_rev=0\npv_try=\n"),
    };
    // One build setting drives the runtime too: the daemon's backend.
    let mut settings = manifest.config.clone();
    if manifest.bootloader == Bootloader::RpiTryboot {
        match settings.get("bootloader") {
            None => {
                settings.insert("bootloader".into(), RPI_TRYBOOT_SETTING.into());
            }
            Some(v) if v.starts_with("rpi-tryboot:") => {}
            Some(v) => {
                return Err(ComposeError::input(format!(
                    "bootloader rpi-tryboot, but config sets bootloader={v}"
                )))
            }
        }
    }
    pvstate::store::write_atomic(&boot.join(env_file), env.as_bytes())?;
    let config = root.join("config");
    fs::create_dir_all(&config).map_err(|e| ComposeError::io(&config, e))?;
    let mut text = String::new();
    for (k, v) in &settings {
        if k.is_empty() || k.contains(['=', '\n']) || v.contains('\n') {
            return Err(ComposeError::input(format!(
                "config: \"{k}\" is not a KEY=VALUE setting"
            )));
        }
        text.push_str(&format!("{k}={v}\n"));
    }
    pvstate::store::write_atomic(&root.join(pvstate::layout::CONFIG_FILE), text.as_bytes())?;
    for d in ["logs", "disks"] {
        fs::create_dir_all(root.join(d)).map_err(|e| ComposeError::io(root.join(d), e))?;
    }
    drop(scratch);
    let out = staged.commit()?;
    Ok(PvrootReport {
        out,
        state_id: rev0.id().to_string(),
        core: manifest.core.clone(),
        optional: manifest.optional.clone(),
        packed,
    })
}

/// The size of a rootfs, to order jobs: a tarball's size, or the bytes of a
/// tree's files (metadata only).
fn dir_size_hint(path: &Path) -> u64 {
    let Ok(meta) = fs::metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    crate::tree::scan_size(path)
}
