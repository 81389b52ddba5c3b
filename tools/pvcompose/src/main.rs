//! The `pvcompose` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use pvcompose::bsp::{self, BspJob};
use pvcompose::container::{self, ContainerJob};
use pvcompose::output::StagedDir;
use pvcompose::report::{Mode, Reporter};
use pvcompose::spec::ContainerSettings;
use pvcompose::squash::{parse_size, Mksquashfs, SquashOptions, SquashWriter};
use pvcompose::tree::Exclude;
use pvcompose::{check, part, pvroot, ComposeError};
use pvstate::model::{AutoRecovery, RestartPolicy, Role, StatusGoal};
use pvstate::pvrexport::{self, ExportOptions};
use pvstate::ObjectStore;

#[derive(Parser)]
#[command(
    name = "pvcompose",
    version,
    about = "Compose and check Pantavisor revisions",
    long_about = "Compose and check Pantavisor revisions: container and BSP parts, \
                  the pvroot of a device's data partition, and their state JSON.\n\n\
                  A part is written as a directory holding `json` (its state) and \
                  `objects/<sha256>`, i.e. an unpacked pvrexport; --pvrexport also \
                  writes the archive. Outputs appear whole or not at all."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How squashfs images are packed.
#[derive(Args, Clone)]
struct SquashArgs {
    /// Compressor: xz, zstd, lz4 or gzip.
    #[arg(long, default_value = "xz")]
    comp: String,
    /// BCJ filter for xz: x86, arm or armthumb (better compression of code).
    #[arg(long)]
    bcj: Option<String>,
    /// Block size (4K to 1M, a power of two).
    #[arg(long, default_value = "128K")]
    block_size: String,
    /// Leave out paths of the rootfs (relative to its root; `*`, `?`, `[..]`
    /// per component, a leading `**/` at any depth), e.g. lib/modules. Repeatable.
    #[arg(long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Clamp every time stamp to this time (seconds since the epoch) so the
    /// output is byte-identical for the same input. Default: $SOURCE_DATE_EPOCH.
    #[arg(long)]
    mtime: Option<u64>,
    /// Memory cap for mksquashfs, e.g. 512M.
    #[arg(long)]
    mem: Option<String>,
    /// Compression threads per image (default: all cores).
    #[arg(long)]
    processors: Option<usize>,
    /// Do not store extended attributes.
    #[arg(long)]
    no_xattrs: bool,
    /// No fragment blocks: each file's data in blocks of its own (larger
    /// image; an unchanged file keeps its bytes, for chunk deltas).
    #[arg(long)]
    no_fragments: bool,
}

impl SquashArgs {
    fn options(&self) -> Result<SquashOptions, ComposeError> {
        let mtime = match self.mtime {
            Some(t) => Some(t),
            None => match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) if !v.is_empty() => Some(v.trim().parse().map_err(|_| {
                    ComposeError::input(format!(
                        "SOURCE_DATE_EPOCH=\"{v}\" is not a number of seconds"
                    ))
                })?),
                _ => None,
            },
        };
        let opts = SquashOptions {
            comp: self.comp.parse()?,
            bcj: self.bcj.as_deref().map(str::parse).transpose()?,
            block_size: u32::try_from(parse_size(&self.block_size)?).map_err(|_| {
                ComposeError::input(format!("block size {} is too large", self.block_size))
            })?,
            excludes: self
                .excludes
                .iter()
                .map(|x| Exclude::parse(x))
                .collect::<Result<_, _>>()?,
            mtime,
            mem_mib: self
                .mem
                .as_deref()
                .map(parse_size)
                .transpose()?
                .map(|b| (b / (1024 * 1024)).max(1)),
            processors: self.processors,
            xattrs: !self.no_xattrs,
            fragments: !self.no_fragments,
        };
        opts.check()?;
        Ok(opts)
    }
}

#[derive(Args, Clone, Copy)]
struct OutputArgs {
    /// Print one JSON object per packed tree on stdout (for build systems).
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

impl OutputArgs {
    fn reporter(&self) -> Reporter {
        Reporter::new(if self.quiet {
            Mode::Quiet
        } else if self.json {
            Mode::Json
        } else {
            Mode::Human
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Make a container part from a rootfs directory or tarball.
    ///
    /// Writes OUT/json and OUT/objects/: the root.squashfs object, run.json
    /// (type oci), the OCI runtime config.json, src.json and the _config/NAME/
    /// overlay. Settings come from --args-json and then the flags.
    Container {
        /// The root filesystem: a directory, or a tarball (unpacking one keeps
        /// owners and device nodes only when run as root or under pseudo).
        #[arg(long)]
        rootfs: PathBuf,
        /// Container name (letters, digits, - _ . +).
        #[arg(long)]
        name: String,
        /// Output directory (replaced whole).
        #[arg(long)]
        out: PathBuf,
        /// Also write the part as a pvrexport (.tgz gzipped).
        #[arg(long)]
        pvrexport: Option<PathBuf>,
        /// Files to overlay on the container (become _config/NAME/...).
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// Settings file: PV_GROUP, PV_STATUS_GOAL, PV_RESTART_POLICY,
        /// PV_AUTO_RECOVERY, PV_ROLES, PV_VOLUMES, PV_EXPORTS, PV_SERVICES,
        /// PV_HOST_NETWORK, Entrypoint, Cmd, Env, WorkingDir, User.
        #[arg(long)]
        args_json: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<SettingsArgs>,
        #[command(flatten)]
        squash: SquashArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Make the BSP part: kernel, initramfs, device trees, modules and firmware.
    Bsp {
        /// Kernel image (bsp/kernel.img).
        #[arg(long)]
        kernel: PathBuf,
        /// Initramfs with our init (bsp/pantavisor).
        #[arg(long)]
        initrd: PathBuf,
        /// Device tree blob; the first is the one booted. Repeatable.
        #[arg(long = "fdt")]
        fdts: Vec<PathBuf>,
        /// Kernel module tree (lib/modules/...), packed to modules.squashfs.
        #[arg(long)]
        modules: Option<PathBuf>,
        /// Firmware tree, packed to firmware.squashfs.
        #[arg(long)]
        firmware: Option<PathBuf>,
        /// cpio archive merged into the initramfs at boot. Repeatable.
        #[arg(long = "addon")]
        addons: Vec<PathBuf>,
        /// Output directory (replaced whole).
        #[arg(long)]
        out: PathBuf,
        /// Also write the part as a pvrexport.
        #[arg(long)]
        pvrexport: Option<PathBuf>,
        #[command(flatten)]
        squash: SquashArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Assemble a device's data partition from a YAML manifest.
    ///
    /// Writes trails/0/.pvr/json (BSP + core containers), objects/, boot/
    /// (initial bootloader env), config/pantavisor.config, and the optional
    /// containers as factory-pkgs.d/NAME.pvrexport.tgz. Containers given by
    /// rootfs are packed in parallel. See docs/pvroot-manifest.md.
    Pvroot {
        /// The composition manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// Output directory (replaced whole).
        #[arg(long)]
        out: PathBuf,
        /// Containers packed at once (default: number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        #[command(flatten)]
        squash: SquashArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Check a state and list every problem found.
    ///
    /// PATH may be a state JSON file, a part directory (json + objects/), a
    /// trail or pvr repository directory (holding .pvr/json; objects are
    /// checked when .pvr/objects or the storage's objects/ is beside it), a
    /// device storage directory (every trails/<rev> is checked against
    /// objects/), or a pvrexport (.tar/.tgz; every object is hashed).
    /// Exit status: 0 valid, 1 problems found, 2 the path could not be read or
    /// recognised.
    Validate {
        /// What to check.
        path: PathBuf,
        /// Accept a state that holds only some parts (no bsp/run.json).
        /// Implied for pvrexports and part directories.
        #[arg(long)]
        partial: bool,
        /// Print only the problems, not the summary line.
        #[arg(short, long)]
        quiet: bool,
    },
}

/// Container settings as flags (override --args-json).
#[derive(Args, Clone)]
struct SettingsArgs {
    /// Group the container starts in (data, root, platform, app, or device.json's).
    #[arg(long)]
    group: Option<String>,
    /// MOUNTED, STARTED or READY.
    #[arg(long, value_parser = parse_enum::<StatusGoal>)]
    status_goal: Option<StatusGoal>,
    /// system (a crash reboots; an update of it reboots) or container.
    #[arg(long, value_parser = parse_enum::<RestartPolicy>)]
    restart_policy: Option<RestartPolicy>,
    /// auto_recovery as JSON, e.g. '{"policy":"on-failure","max_retries":5}'.
    #[arg(long, value_parser = parse_json::<AutoRecovery>)]
    auto_recovery: Option<AutoRecovery>,
    /// mgmt or nobody. Repeatable.
    #[arg(long = "role", value_parser = parse_enum::<Role>)]
    roles: Vec<Role>,
    /// PATH:PERSISTENCE[@DISK] (permanent, revision, boot), or
    /// lxc-overlay:PERSISTENCE for the writable layer. Repeatable.
    #[arg(long = "volume")]
    volumes: Vec<String>,
    /// Name of a service this container exports (run.json exports, read by
    /// Pantavisor). Repeatable.
    #[arg(long = "export")]
    exports: Vec<String>,
    /// An xconnect service this container provides, NAME:TYPE:SOCKET (type
    /// unix, rest or dbus; SOCKET its path in the container), written to
    /// its services.json. Repeatable.
    #[arg(long = "provide")]
    provides: Vec<String>,
    /// An xconnect service this container requires, NAME:TYPE:TARGET[:ROLE]
    /// (TARGET: where its socket appears in this container; ROLE: the
    /// identity the provider sees). The container starts once the provider
    /// reached its status goal. Repeatable.
    #[arg(long = "require")]
    requires: Vec<String>,
    /// The program to run (first element of the command). Repeatable for its
    /// leading arguments.
    #[arg(long)]
    entrypoint: Vec<String>,
    /// Arguments after the entrypoint. Repeatable.
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// KEY=VALUE environment. Repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    workdir: Option<String>,
    /// UID[:GID] or USER[:GROUP] of the rootfs.
    #[arg(long)]
    user: Option<String>,
    /// Share the host's network namespace.
    #[arg(long)]
    host_network: bool,
    /// A host device node the container gets (e.g. /dev/ttyS1). Repeatable.
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Protect the root squashfs with dm-verity: a hash tree object and
    /// _dm/root.squashfs.json; the device checks each block as it reads it.
    #[arg(long)]
    dm_verity: bool,
    /// The part's format: oci (config.json, the default) or lxc
    /// (lxc.container.conf, as Pantavisor's pvr writes; Pantavisor's own
    /// devices run it too).
    #[arg(long, value_parser = parse_enum::<pvstate::model::ContainerType>)]
    format: Option<pvstate::model::ContainerType>,
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_str(s).map_err(|e| e.to_string())
}

impl SettingsArgs {
    fn settings(&self) -> pvcompose::error::Result<ContainerSettings> {
        let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let requires = self
            .requires
            .iter()
            .map(|r| pvcompose::spec::parse_require(r))
            .collect::<pvcompose::error::Result<Vec<_>>>()?;
        let provides = self
            .provides
            .iter()
            .map(|p| pvcompose::spec::parse_provide(p))
            .collect::<pvcompose::error::Result<Vec<_>>>()?;
        Ok(ContainerSettings {
            group: self.group.clone(),
            status_goal: self.status_goal,
            restart_policy: self.restart_policy,
            auto_recovery: self.auto_recovery.clone(),
            roles: self.roles.clone(),
            volumes: self.volumes.clone(),
            services: (!requires.is_empty()).then(|| pvstate::model::ServiceRequirements {
                required: Some(requires),
                optional: None,
                extra: Default::default(),
            }),
            exports: self.exports.clone(),
            provides,
            entrypoint: some_vec(&self.entrypoint),
            args: some_vec(&self.args),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            host_network: self.host_network,
            devices: self.devices.clone(),
            dm_verity: self.dm_verity,
            caps_keep: None,
            namespaces_keep: Vec::new(),
            format: self.format,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate {
            path,
            partial,
            quiet,
        } => return validate(&path, partial, quiet),
        Command::Container {
            rootfs,
            name,
            out,
            pvrexport,
            config_dir,
            args_json,
            settings,
            squash,
            output,
        } => (|| {
            let base = match &args_json {
                Some(p) => ContainerSettings::from_args_json(p)?,
                None => ContainerSettings::default(),
            };
            let job = ContainerJob {
                name,
                rootfs,
                settings: base.overlay(settings.settings()?),
                config_dir,
                squash: squash.options()?,
                src_extra: Default::default(),
            };
            write_part(&out, pvrexport.as_deref(), |writer, store, scratch| {
                Ok(container::compose(&job, writer, store, scratch, &output.reporter())?.0)
            })
        })(),
        Command::Bsp {
            kernel,
            initrd,
            fdts,
            modules,
            firmware,
            addons,
            out,
            pvrexport,
            squash,
            output,
        } => (|| {
            let job = BspJob {
                kernel,
                initrd,
                fdts,
                modules,
                firmware,
                addons,
                squash: squash.options()?,
            };
            write_part(&out, pvrexport.as_deref(), |writer, store, _| {
                Ok(bsp::compose(&job, writer, store, &output.reporter())?.0)
            })
        })(),
        Command::Pvroot {
            manifest,
            out,
            jobs,
            squash,
            output,
        } => (|| {
            let reporter = output.reporter();
            let writer = Mksquashfs::find()?;
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let r = pvroot::assemble(
                &manifest,
                &out,
                &squash.options()?,
                &writer,
                jobs,
                &reporter,
            )?;
            reporter.note(&format!(
                "{}: revision 0 ({}) with {} core container(s) {:?} and {} factory package(s) {:?}",
                r.out.display(),
                &r.state_id[..12],
                r.core.len(),
                r.core,
                r.optional.len(),
                r.optional
            ));
            Ok(())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvcompose: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Compose one part into `out` (json + objects/, replaced whole) with
/// `compose`, which packs into the given store using the given scratch
/// directory; optionally also write the pvrexport.
fn write_part(
    out: &Path,
    pvrexport_path: Option<&Path>,
    compose: impl FnOnce(&dyn SquashWriter, &ObjectStore, &Path) -> Result<pvstate::State, ComposeError>,
) -> Result<(), ComposeError> {
    let writer = Mksquashfs::find()?;
    let staged = StagedDir::new(out)?;
    let store = ObjectStore::open(staged.path().join("objects"))?;
    let scratch = tempfile::Builder::new()
        .prefix(".scratch-")
        .tempdir_in(staged.path())
        .map_err(|e| ComposeError::io(staged.path(), e))?;
    let state = compose(&writer, &store, scratch.path())?;
    drop(scratch);
    part::write_json(staged.path(), &state)?;
    let out = staged.commit()?;
    if let Some(file) = pvrexport_path {
        let store = ObjectStore::open(out.join("objects"))?;
        pvrexport::export_file(&state, &store, file, ExportOptions::default())?;
    }
    Ok(())
}

fn validate(path: &Path, partial: bool, quiet: bool) -> ExitCode {
    let reports = match check::check_path(path, partial) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pvcompose: {e}");
            return ExitCode::from(2);
        }
    };
    let mut valid = true;
    for r in &reports {
        for p in &r.problems {
            println!("{}: {p}", r.subject);
        }
        valid &= r.is_valid();
        if !quiet {
            let objects = if r.objects_checked {
                "checked"
            } else {
                "not checked"
            };
            if r.is_valid() {
                println!(
                    "{}: valid ({} keys, {} containers, {} objects {objects})",
                    r.subject, r.keys, r.containers, r.objects
                );
            } else {
                println!("{}: {} problem(s)", r.subject, r.problems.len());
            }
        }
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
