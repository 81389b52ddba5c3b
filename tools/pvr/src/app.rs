//! `pvr app add|update|install|rm|ls|info`: containers from a root file
//! system, a registry image or another repository, composed by pvcompose.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use pvcompose::container::ContainerJob;
use pvcompose::report::{Mode, Reporter};
use pvcompose::spec::ContainerSettings;
use pvcompose::squash::{Mksquashfs, SquashOptions};
use pvstate::State;
use serde_json::{json, Value};

use crate::docker;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::transfer::fetch_repo;

#[derive(Subcommand)]
pub(crate) enum AppCommand {
    /// Add a container: from a root filesystem (directory or tarball), a
    /// registry image (--type docker) or another repository (--type pvr).
    Add(Box<AppArgs>),
    /// Replace a container's root filesystem, keeping its settings unless
    /// flags change them; a docker image whose digest did not change is left alone.
    Update(Box<AppArgs>),
    /// Build the container again from the source its src.json records (a
    /// docker image by digest), e.g. after changing its settings file.
    Install {
        name: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Remove a container (its files, its _config/ overlay and its signature).
    Rm { name: String },
    /// List the containers of the working tree.
    Ls,
    /// Show a container's settings and where it came from.
    Info { name: String },
}

#[derive(Args, Clone, Default)]
pub(crate) struct RegistryArgs {
    /// Image platform OS/ARCH[/VARIANT] to take from a multi-arch index (default: this machine's).
    #[arg(long, env = "PVR_PLATFORM")]
    pub(crate) platform: Option<String>,
    /// Registry user (or $PVR_REGISTRY_USERNAME, $PVR_REGISTRY_USER, or ~/.docker/config.json).
    #[arg(short, long, env = "PVR_REGISTRY_USERNAME")]
    pub(crate) username: Option<String>,
    /// Registry password or token (or $PVR_REGISTRY_PASSWORD).
    #[arg(short, long, env = "PVR_REGISTRY_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Speak plain HTTP to the registry (always so for localhost).
    #[arg(long)]
    pub(crate) plain_http: bool,
}

#[derive(Args, Default)]
pub(crate) struct AppArgs {
    /// Container name.
    pub(crate) name: String,
    /// Where it comes from: a directory or tarball (rootfs), an image
    /// reference REGISTRY/REPO[:TAG][@DIGEST] (docker), or a pvr repository
    /// directory or pvrexport (pvr; the part named NAME, or PATH#PART).
    #[arg(long, env = "PVR_FROM")]
    pub(crate) from: String,
    /// Source type: rootfs, docker or pvr.
    #[arg(
        short = 't',
        long = "type",
        default_value = "rootfs",
        env = "PVR_SOURCE_TYPE"
    )]
    pub(crate) kind: String,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    #[arg(long, env = "PVR_GROUP")]
    pub(crate) group: Option<String>,
    /// MOUNTED, STARTED or READY.
    #[arg(long, env = "PVR_STATUS_GOAL")]
    pub(crate) status_goal: Option<String>,
    /// system or container.
    #[arg(long, env = "PVR_RESTART_POLICY")]
    pub(crate) restart_policy: Option<String>,
    /// A Docker image config (JSON: its `config` object, or the object
    /// itself): Entrypoint, Cmd, Env, WorkingDir, User, under --arg-json.
    #[arg(long, env = "PVR_CONFIG_JSON")]
    pub(crate) config_json: Option<PathBuf>,
    /// KEY=VALUE settings as args.json has them (a VALUE that is JSON is
    /// taken as JSON); over --arg-json; repeatable.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub(crate) template_args: Vec<String>,
    /// The part's format: oci (config.json, the default) or lxc
    /// (lxc.container.conf, as Pantavisor's pvr writes it: runs on
    /// Pantavisor's own devices too). Kept by app update; $PVR_FORMAT sets
    /// it for every container made (e.g. for parts exported to Pantavisor).
    #[arg(long, env = "PVR_FORMAT", value_parser = ["oci", "lxc"])]
    format: Option<String>,
    /// app add: replace a container that exists (as app update would, but
    /// from these settings only).
    #[arg(long)]
    pub(crate) force: bool,
    /// PATH:PERSISTENCE[@DISK]; repeatable.
    #[arg(long = "volume")]
    pub(crate) volumes: Vec<String>,
    /// Settings file (PV_* keys and Docker's Entrypoint, Cmd, Env, WorkingDir, User).
    #[arg(long)]
    pub(crate) arg_json: Option<PathBuf>,
    /// Compressor of the root squashfs: xz, zstd, lz4 or gzip.
    #[arg(long, default_value = "xz")]
    pub(crate) comp: String,
    /// More squashfs options, as pvr's --format-options: "-comp zstd -b 256K -Xbcj x86".
    #[arg(
        short = 'o',
        long,
        env = "PVR_FORMAT_OPTIONS",
        allow_hyphen_values = true
    )]
    pub(crate) format_options: Option<String>,
    /// Fixed time stamps (seconds) for a reproducible image; default $SOURCE_DATE_EPOCH.
    #[arg(long)]
    pub(crate) mtime: Option<u64>,
    /// Protect the root squashfs with dm-verity (Pantavisor's dm: layout:
    /// root.squashfs.hash and _dm/root.squashfs.json beside it).
    #[arg(long)]
    pub(crate) dm_verity: bool,
}

pub(crate) fn run(dir: &Path, command: AppCommand) -> Result<()> {
    let repo = Repo::open(dir)?;
    let exists = |name: &str| -> Result<bool> {
        Ok(repo.working_state(false)?.containers().contains_key(name))
    };
    match command {
        AppCommand::Ls => {
            for (name, run) in repo.working_state(false)?.containers() {
                println!(
                    "{name}\t{}\t{}",
                    run.group.as_deref().unwrap_or("-"),
                    run.status_goal
                        .map(|g| g.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        AppCommand::Info { name } => {
            let working = repo.working_state(false)?;
            if !working.containers().contains_key(name.as_str()) {
                return Err(unknown_app(&name));
            }
            let mut info = serde_json::Map::new();
            for key in ["run.json", "src.json"] {
                if let Some(e) = working.get(&format!("{name}/{key}")) {
                    info.insert(key.into(), e.to_value());
                }
            }
            info.insert("keys".into(), json!(working.part_keys(&name)));
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Object(info)).unwrap_or_default()
            );
            Ok(())
        }
        AppCommand::Rm { name } => {
            if !exists(&name)? {
                return Err(unknown_app(&name));
            }
            repo.replace_part(&name, &State::new())?;
            let sig = repo.dir().join(format!("_sigs/{name}.json"));
            if sig.exists() {
                std::fs::remove_file(&sig).map_err(|e| Error::io(&sig, e))?;
            }
            println!("{name}: removed; run pvr commit to record it");
            Ok(())
        }
        AppCommand::Install { name, registry } => {
            let working = repo.working_state(false)?;
            let src = working
                .get(&format!("{name}/src.json"))
                .map(|e| e.to_value())
                .ok_or_else(|| unknown_app(&name))?;
            let (Some(image), Some(digest)) = (
                src["docker_source_ref"].as_str(),
                src["docker_digest"].as_str(),
            ) else {
                return Err(Error::Usage(format!(
                    "{name}: its src.json records no docker image to install from; use pvr app update --from"
                )));
            };
            let base = image.split('@').next().unwrap_or(image);
            let args = AppArgs {
                name,
                from: format!("{base}@{digest}"),
                kind: "docker".into(),
                registry: RegistryArgs {
                    platform: registry
                        .platform
                        .or_else(|| src["docker_platform"].as_str().map(str::to_string)),
                    ..registry
                },
                ..AppArgs::default()
            };
            build_app(&repo, args, true, true)
        }
        AppCommand::Add(a) => {
            if exists(&a.name)? && !a.force {
                return Err(Error::Usage(format!(
                    "container {} exists; use pvr app update",
                    a.name
                )));
            }
            build_app(&repo, *a, false, false)
        }
        AppCommand::Update(a) => {
            if !exists(&a.name)? {
                return Err(unknown_app(&a.name));
            }
            build_app(&repo, *a, true, false)
        }
    }
}

pub(crate) fn unknown_app(name: &str) -> Error {
    Error::Usage(format!(
        "unknown container \"{name}\" (pvr app ls lists them; pvr app add makes one)"
    ))
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00Z`,
/// fractions and offsets allowed), for image creation times.
pub(crate) fn rfc3339_seconds(t: &str) -> Option<u64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let hms: Vec<i64> = time
        .get(..8)?
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let offset = match time[8..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit()) {
        "Z" | "z" | "" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (h, mi) = o.get(1..)?.split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3600 + mi.parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2] - offset).ok()
}

/// pvr's `--format-options` (mksquashfs style) on top of `--comp`.
pub(crate) fn format_options(comp: &str, opts: Option<&str>) -> Result<SquashOptions> {
    let mut o = SquashOptions {
        comp: comp.parse()?,
        ..Default::default()
    };
    let words: Vec<&str> = opts.unwrap_or("").split_whitespace().collect();
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let mut value = || {
            it.next()
                .copied()
                .ok_or_else(|| Error::Usage(format!("--format-options: {w} needs a value")))
        };
        match *w {
            "-comp" => o.comp = value()?.parse()?,
            "-b" => {
                let v = value()?;
                o.block_size = u32::try_from(pvcompose::squash::parse_size(v)?)
                    .map_err(|_| Error::Usage(format!("--format-options: -b {v} is too large")))?
            }
            "-Xbcj" => o.bcj = Some(value()?.parse()?),
            // mksquashfs' exclude list: the paths up to the next option.
            "-e" => {
                let mut any = false;
                while let Some(p) = it.next_if(|p| !p.starts_with('-')) {
                    o.excludes.push(pvcompose::tree::Exclude::parse(p)?);
                    any = true;
                }
                if !any {
                    return Err(Error::Usage("--format-options: -e needs paths".into()));
                }
            }
            "-mem" => {
                let v = value()?;
                o.mem_mib = Some((pvcompose::squash::parse_size(v)? >> 20).max(1));
            }
            "-processors" => {
                let v = value()?;
                o.processors = Some(v.parse().map_err(|_| {
                    Error::Usage(format!("--format-options: -processors {v}: not a number"))
                })?);
            }
            "-xattrs" => o.xattrs = true,
            "-no-xattrs" => o.xattrs = false,
            // The image is always written anew, without a progress bar.
            "-noappend" | "-no-progress" | "-quiet" => {}
            other => {
                return Err(Error::Usage(format!(
                    "--format-options: {other} is not supported (supported: -comp, -b, -Xbcj, -e PATH…, -mem, -processors, -xattrs, -no-xattrs, -noappend, -no-progress, -quiet)"
                )))
            }
        }
    }
    Ok(o)
}

/// Make (or remake) container `args.name` from its source.
pub(crate) fn build_app(repo: &Repo, args: AppArgs, update: bool, force: bool) -> Result<()> {
    if args.kind == "pvr" {
        return app_from_pvr(repo, &args);
    }
    let working = repo.working_state(false)?;
    let src = working
        .get(&format!("{}/src.json", args.name))
        .map(|e| e.to_value());
    // Settings: those the container was made with (on update), the image's,
    // the file, then flags.
    let mut settings = match (&src, update) {
        (Some(v), true) => {
            serde_json::from_value::<ContainerSettings>(v["args"].clone()).unwrap_or_default()
        }
        _ => ContainerSettings::default(),
    };
    let flags_given = args.arg_json.is_some()
        || args.format.is_some()
        || args.config_json.is_some()
        || !args.template_args.is_empty()
        || args.group.is_some()
        || args.status_goal.is_some()
        || args.restart_policy.is_some()
        || !args.volumes.is_empty();
    let scratch = tempfile::Builder::new()
        .prefix("app-")
        .tempdir_in(repo.dir().join(".pvr"))
        .map_err(|e| Error::io(repo.dir().join(".pvr"), e))?;
    let mut src_extra = serde_json::Map::new();
    let mut mtime = args.mtime.or_else(|| {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let rootfs = match args.kind.as_str() {
        "rootfs" => PathBuf::from(&args.from),
        "docker" => {
            let reference = docker::Reference::parse(&args.from)?;
            let platform = match &args.registry.platform {
                Some(p) => docker::Platform::parse(p)?,
                None => docker::Platform::host(),
            };
            let creds = docker::Credentials {
                user: args.registry.username.clone(),
                password: args.registry.password.clone(),
            };
            let mut reg =
                docker::Registry::new(&reference.registry, &creds, args.registry.plain_http);
            let resolved = docker::resolve(&mut reg, &reference, &platform)?;
            let same = src.as_ref().is_some_and(|v| {
                v["docker_digest"].as_str() == Some(resolved.digest.as_str())
                    && v["docker_platform"].as_str() == Some(platform.to_string().as_str())
            });
            if update && same && !flags_given && !force {
                println!(
                    "{}: {reference} is still {} ({platform}); nothing to do",
                    args.name,
                    &resolved.digest[..19]
                );
                return Ok(());
            }
            let rootfs = scratch.path().join("rootfs");
            std::fs::create_dir(&rootfs).map_err(|e| Error::io(&rootfs, e))?;
            eprintln!(
                "{}: pulling {reference} ({platform}, {})",
                args.name,
                &resolved.manifest_digest[..19]
            );
            let pulled = docker::pull(
                &mut reg,
                &reference,
                &platform,
                &resolved,
                &rootfs,
                scratch.path(),
            )?;
            eprintln!(
                "{}: {} layers, {} bytes",
                args.name, pulled.layers, pulled.bytes
            );
            let image = ContainerSettings::from_json(
                &docker::settings_json(&pulled.config),
                &format!("{reference}: image config"),
            )?;
            settings = settings.overlay(image);
            if mtime.is_none() {
                mtime = pulled.created.as_deref().and_then(rfc3339_seconds);
            }
            let mut plain = reference.clone();
            plain.digest = None;
            src_extra.insert("docker_source_ref".into(), json!(plain.to_string()));
            src_extra.insert("docker_name".into(), json!(reference.repository));
            src_extra.insert("docker_tag".into(), json!(reference.tag));
            src_extra.insert("docker_digest".into(), json!(resolved.digest));
            src_extra.insert(
                "docker_manifest_digest".into(),
                json!(resolved.manifest_digest),
            );
            src_extra.insert("docker_platform".into(), json!(platform.to_string()));
            src_extra.insert("docker_source".into(), json!(reference.registry));
            rootfs
        }
        other => {
            return Err(Error::Usage(format!(
                "--type {other}: use rootfs, docker or pvr"
            )))
        }
    };
    // Settings files, each over the one before: the Docker image config,
    // args.json, then --arg KEY=VALUE.
    if let Some(p) = &args.config_json {
        let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("--config-json {}: {e}", p.display())))?;
        let inner = v
            .get("config")
            .or_else(|| v.get("Config"))
            .cloned()
            .unwrap_or(v);
        let file = scratch.path().join("config.json");
        std::fs::write(&file, inner.to_string()).map_err(|e| Error::io(&file, e))?;
        settings = settings.overlay(ContainerSettings::from_args_json(&file)?);
    }
    if let Some(p) = &args.arg_json {
        settings = settings.overlay(ContainerSettings::from_args_json(p)?);
    }
    if !args.template_args.is_empty() {
        let mut map = serde_json::Map::new();
        for a in &args.template_args {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("--arg {a}: expected KEY=VALUE")))?;
            let value = serde_json::from_str::<Value>(v)
                .ok()
                .filter(|j| j.is_array() || j.is_object())
                .unwrap_or_else(|| Value::String(v.to_string()));
            map.insert(k.to_string(), value);
        }
        let file = scratch.path().join("args.json");
        std::fs::write(&file, Value::Object(map).to_string()).map_err(|e| Error::io(&file, e))?;
        settings = settings.overlay(ContainerSettings::from_args_json(&file)?);
    }
    let flags = ContainerSettings {
        group: args.group.clone(),
        status_goal: enum_of(&args.status_goal)
            .map_err(|e| Error::Usage(format!("--status-goal: {e}")))?,
        restart_policy: enum_of(&args.restart_policy)
            .map_err(|e| Error::Usage(format!("--restart-policy: {e}")))?,
        volumes: args.volumes.clone(),
        dm_verity: args.dm_verity,
        format: enum_of(&args.format).map_err(|e| Error::Usage(format!("--format: {e}")))?,
        ..Default::default()
    };
    let settings = settings.overlay(flags);
    let mut squash = format_options(&args.comp, args.format_options.as_deref())?;
    squash.mtime = mtime;
    let job = ContainerJob {
        name: args.name.clone(),
        rootfs,
        settings,
        config_dir: None,
        squash,
        src_extra,
    };
    let pool = repo.pool()?;
    let (part, stats) = pvcompose::container::compose(
        &job,
        &Mksquashfs::find()?,
        &pool,
        scratch.path(),
        &Reporter::new(Mode::Human),
    )?;
    // The container's own keys change; its _config/ overlay and signature stay.
    let mut keep = State::new();
    for key in working.part_keys(&args.name) {
        if !key.starts_with(&format!("{}/", args.name)) {
            if let Some(e) = working.get(key) {
                keep.insert(key.to_string(), e.clone());
            }
        }
    }
    let mut merged = part;
    for (k, e) in keep.entries() {
        if k != "#spec" {
            merged.insert(k.clone(), e.clone());
        }
    }
    repo.replace_part(&args.name, &merged)?;
    println!(
        "{}: root.squashfs {} ({} bytes); run pvr commit to record it",
        args.name,
        &stats.object[..12],
        stats.bytes_out
    );
    Ok(())
}

/// `--type pvr`: take part NAME (or PART of PATH#PART) from another
/// repository or a pvrexport, objects included.
pub(crate) fn app_from_pvr(repo: &Repo, args: &AppArgs) -> Result<()> {
    let (path, part) = match args.from.rsplit_once('#') {
        Some((p, part)) => (PathBuf::from(p), part.to_string()),
        None => (PathBuf::from(&args.from), args.name.clone()),
    };
    if part != args.name {
        return Err(Error::Usage(format!(
            "--from {}: part {part} would be renamed to {}; a container keeps its name",
            args.from, args.name
        )));
    }
    let pool = repo.pool()?;
    let source: State = if path.is_dir() {
        fetch_repo(&path, &pool)?
    } else {
        pvstate::pvrexport::import_file(&path, Some(&pool))?.state
    };
    let keys = source.part_keys(&part);
    if !keys.iter().any(|k| k.starts_with(&format!("{part}/"))) {
        return Err(Error::Usage(format!(
            "{}: has no part \"{part}\"",
            path.display()
        )));
    }
    let mut sub = State::new();
    for k in keys {
        if let Some(e) = source.get(k) {
            sub.insert(k.to_string(), e.clone());
        }
    }
    repo.replace_part(&part, &sub)?;
    println!(
        "{part}: taken from {}; run pvr commit to record it",
        path.display()
    );
    Ok(())
}

pub(crate) fn enum_of<T: serde::de::DeserializeOwned>(
    v: &Option<String>,
) -> std::result::Result<Option<T>, serde_json::Error> {
    v.as_ref()
        .map(|s| serde_json::from_value(Value::String(s.clone())))
        .transpose()
}
