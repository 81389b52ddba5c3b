//! `pvr`: the developer/operator CLI, compatible in its command names and
//! repository layout with Pantavisor's pvr for the commands it has.

mod docker;
mod error;
mod remote;
mod repo;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pvcompose::container::ContainerJob;
use pvcompose::report::{Mode, Reporter};
use pvcompose::spec::ContainerSettings;
use pvcompose::squash::{Mksquashfs, SquashOptions};
use pvstate::diff::plan;
use pvstate::{Entry, State};
use serde_json::{json, Value};

use error::{Error, Result};
use pvctrl::Client as Device;
use repo::Repo;

#[derive(Parser)]
#[command(
    name = "pvr",
    version,
    about = "Clone a device, update its containers, sign them and post only what changed",
    long_about = "pvr works on a repository: a working tree of a revision's files, its committed \
                  state in .pvr/json and an object pool in .pvr/objects. A device is addressed \
                  by its control socket, unix:PATH (for example unix:/run/pantavisor/pv-ctrl), \
                  or its remote API, http://HOST:PORT, with a bearer token (--token or PVR_TOKEN)."
)]
struct Cli {
    /// Run as if started in this directory.
    #[arg(short = 'C', long, global = true, default_value = ".")]
    dir: PathBuf,
    /// Bearer token for a device's remote API (http://HOST:PORT).
    #[arg(long, global = true, env = "PVR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make an empty repository here.
    Init,
    /// Copy a device's running revision (state and objects) into a new repository.
    #[command(visible_alias = "c")]
    Clone {
        /// The device: unix:PATH of its control socket.
        device: String,
        /// Directory to create (default: the current one, which must be empty).
        dir: Option<PathBuf>,
    },
    /// List the keys the working tree adds, changes or removes.
    #[command(visible_alias = "s")]
    Status,
    /// Print the committed state JSON.
    Json,
    /// Get the state of a device (unix:PATH, http://HOST:PORT), another
    /// repository or a pvrexport — whole, or only SOURCE#PART,PART — into
    /// the committed state and check it out (default: the clone's remote).
    Get { source: Option<String> },
    /// Kept for pvr's scripts: every file of the working tree is tracked;
    /// this checks the paths exist.
    Add { paths: Vec<PathBuf> },
    /// Record the working tree as the committed state.
    Commit {
        /// A message for the revision (kept in .pvr/commitmsg, posted with it).
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Throw away working-tree changes: write the committed state's files again.
    #[command(visible_aliases = ["reset", "co", "r"])]
    Checkout,
    /// Add, update or inspect containers ("apps").
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Write the committed state (or some parts of it) and its objects as a pvrexport.
    Export {
        /// Parts to export (directories such as app1, bsp, _config/app1); all when none.
        #[arg(short, long, value_delimiter = ',')]
        parts: Vec<String>,
        /// The archive (.tgz/.gz is gzipped).
        file: PathBuf,
    },
    /// Replace the committed state with a pvrexport's (objects verified) and check it out.
    Import { file: PathBuf },
    /// Merge a pvrexport's parts into the committed state (replacing those parts whole) and check it out.
    Merge { file: PathBuf },
    /// Put pvrexports together into a device storage's revision 0
    /// (trails/0/.pvr/json and objects/), as an image build does.
    Deploy {
        /// The storage directory (the data partition's contents).
        storage: PathBuf,
        /// The pvrexports; later ones replace the parts of earlier ones.
        #[arg(required = true)]
        exports: Vec<PathBuf>,
    },
    /// Sign parts of the committed state (pvs@2) and commit the signature.
    ///
    /// The key options may come before the subcommand, as Pantavisor's pvr
    /// takes them (`pvr sig --key K --x5c no add --part P`, `pvr sig
    /// --pubkey P ls`), or after it; after it wins.
    Sig {
        #[command(flatten)]
        keys: SigParentArgs,
        #[command(subcommand)]
        command: SigCommand,
    },
    /// Show what changed in the working tree since the last commit (each
    /// changed key with its committed and its working value, as JSON); with
    /// --plan, what the device will do with the committed state instead:
    /// transition, containers restarted, objects to send.
    Diff {
        /// Ask the device for its plan instead of diffing the working tree.
        #[arg(long)]
        plan: bool,
        /// With --plan: the device (unix:PATH, a socket path or
        /// http://HOST:PORT); default: where the repository was cloned from.
        #[arg(requires = "plan")]
        device: Option<String>,
    },
    /// Send the committed state to a device: only the objects it lacks, then
    /// the state as revision --rev; with --run the device runs it, with
    /// --wait pvr follows it to its end.
    ///
    /// Exit codes with --wait: 0 DONE or UPDATED; 3 ERROR (the device
    /// rolled back; its reason is printed); 4 WONTGO (refused); 5 no end
    /// within --timeout.
    #[command(visible_alias = "po")]
    Post {
        /// The device (default: where the repository was cloned from).
        device: Option<String>,
        /// Revision name on the device (locals/NAME).
        #[arg(long, short = 'r')]
        rev: Option<String>,
        /// Commit message for the revision (Pantavisor's pvr: --commit-msg).
        #[arg(short, long, alias = "commit-msg")]
        message: Option<String>,
        /// Send every object again, also those the device has.
        #[arg(short, long)]
        force: bool,
        /// Then ask the device to run the revision (LOCAL_RUN).
        #[arg(long)]
        run: bool,
        /// Then follow the revision's progress until DONE, UPDATED, ERROR
        /// or WONTGO (through reboots), with the exit code saying which.
        #[arg(long)]
        wait: bool,
        /// Seconds --wait waits for the end.
        #[arg(long, default_value_t = 600, requires = "wait")]
        timeout: u64,
    },
    /// Ask a device about itself.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Print a container's log of the running revision (the daemon's own
    /// without CONTAINER): the last --max bytes, then, with --follow, what
    /// comes.
    Logs {
        /// A container of the running revision; default: the daemon.
        container: Option<String>,
        /// The device (default: where the repository was cloned from).
        #[arg(long)]
        device: Option<String>,
        /// Keep printing what is appended (until interrupted).
        #[arg(short, long)]
        follow: bool,
        /// Bytes to print first (the device sends at most 1 MiB at once).
        #[arg(long, default_value_t = 16384)]
        max: u64,
    },
}

#[derive(Subcommand)]
enum AppCommand {
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
struct RegistryArgs {
    /// Image platform OS/ARCH[/VARIANT] to take from a multi-arch index (default: this machine's).
    #[arg(long, env = "PVR_PLATFORM")]
    platform: Option<String>,
    /// Registry user (or $PVR_REGISTRY_USERNAME, $PVR_REGISTRY_USER, or ~/.docker/config.json).
    #[arg(short, long, env = "PVR_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Registry password or token (or $PVR_REGISTRY_PASSWORD).
    #[arg(short, long, env = "PVR_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Speak plain HTTP to the registry (always so for localhost).
    #[arg(long)]
    plain_http: bool,
}

#[derive(Args, Default)]
struct AppArgs {
    /// Container name.
    name: String,
    /// Where it comes from: a directory or tarball (rootfs), an image
    /// reference REGISTRY/REPO[:TAG][@DIGEST] (docker), or a pvr repository
    /// directory or pvrexport (pvr; the part named NAME, or PATH#PART).
    #[arg(long, env = "PVR_FROM")]
    from: String,
    /// Source type: rootfs, docker or pvr.
    #[arg(
        short = 't',
        long = "type",
        default_value = "rootfs",
        env = "PVR_SOURCE_TYPE"
    )]
    kind: String,
    #[command(flatten)]
    registry: RegistryArgs,
    #[arg(long, env = "PVR_GROUP")]
    group: Option<String>,
    /// MOUNTED, STARTED or READY.
    #[arg(long, env = "PVR_STATUS_GOAL")]
    status_goal: Option<String>,
    /// system or container.
    #[arg(long, env = "PVR_RESTART_POLICY")]
    restart_policy: Option<String>,
    /// A Docker image config (JSON: its `config` object, or the object
    /// itself): Entrypoint, Cmd, Env, WorkingDir, User, under --arg-json.
    #[arg(long, env = "PVR_CONFIG_JSON")]
    config_json: Option<PathBuf>,
    /// KEY=VALUE settings as args.json has them (a VALUE that is JSON is
    /// taken as JSON); over --arg-json; repeatable.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    template_args: Vec<String>,
    /// app add: replace a container that exists (as app update would, but
    /// from these settings only).
    #[arg(long)]
    force: bool,
    /// PATH:PERSISTENCE[@DISK]; repeatable.
    #[arg(long = "volume")]
    volumes: Vec<String>,
    /// Settings file (PV_* keys and Docker's Entrypoint, Cmd, Env, WorkingDir, User).
    #[arg(long)]
    arg_json: Option<PathBuf>,
    /// Compressor of the root squashfs: xz, zstd, lz4 or gzip.
    #[arg(long, default_value = "xz")]
    comp: String,
    /// More squashfs options, as pvr's --format-options: "-comp zstd -b 256K -Xbcj x86".
    #[arg(
        short = 'o',
        long,
        env = "PVR_FORMAT_OPTIONS",
        allow_hyphen_values = true
    )]
    format_options: Option<String>,
    /// Fixed time stamps (seconds) for a reproducible image; default $SOURCE_DATE_EPOCH.
    #[arg(long)]
    mtime: Option<u64>,
    /// Protect the root squashfs with dm-verity (Pantavisor's dm: layout:
    /// root.squashfs.hash and _dm/root.squashfs.json beside it).
    #[arg(long)]
    dm_verity: bool,
}

#[derive(Subcommand)]
enum SigCommand {
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
struct SigParentArgs {
    /// Private key, PEM (as the subcommands' --key).
    #[arg(short = 'k', long = "key", id = "parent_key", value_name = "KEY")]
    key: Option<PathBuf>,
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
    pubkey: Option<PathBuf>,
    /// Trusted certificates, PEM (sig ls; as its --cacerts).
    #[arg(
        short = 'c',
        long = "cacerts",
        id = "parent_cacerts",
        value_name = "CACERTS"
    )]
    cacerts: Option<PathBuf>,
}

#[derive(Args)]
struct SigningArgs {
    /// Private key, PEM: EC P-256 (ES256), EC P-384 (ES384) or RSA (RS256)
    /// (default: $PVR_SIG_KEY, then ~/.pvr/pvs/key.default.pem).
    #[arg(long)]
    key: Option<PathBuf>,
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
fn key_file(flag: Option<PathBuf>, env: &str, file: &str) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os(env).map(PathBuf::from))
        .or_else(|| {
            let base = std::env::var_os("PVR_CONFIG_DIR")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pvr")))?;
            Some(base.join("pvs").join(file)).filter(|p| p.exists())
        })
}

fn main() -> ExitCode {
    // `pvr status | head -1`: a closed pipe ends pvr quietly, as it does
    // cat or git, instead of a panic in println!.
    // SAFETY: SIG_DFL installs no handler: no code of ours runs at signal time.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Outcome { code, message }) => {
            eprintln!("pvr: {message}");
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("pvr: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let dir = cli.dir;
    let token = cli.token;
    match cli.command {
        Command::Init => {
            Repo::init(&dir)?;
            println!("initialised an empty repository in {}", dir.display());
            Ok(())
        }
        Command::Clone {
            device,
            dir: target,
        } => clone(&device, &target.unwrap_or(dir), token),
        Command::Get { source } => get(&dir, source, token),
        Command::Add { paths } => {
            for p in &paths {
                let full = dir.join(p);
                if !full.exists() {
                    return Err(Error::Usage(format!("{}: no such file", full.display())));
                }
            }
            println!("tracked; run pvr status to see the changes and pvr commit to record them");
            Ok(())
        }
        Command::Status => {
            let repo = Repo::open(&dir)?;
            let (old, new) = (repo.committed()?, repo.working_state(false)?);
            for k in pvstate::diff::changed_keys(&old, &new) {
                let mark = match (old.get(k), new.get(k)) {
                    (None, _) => 'A',
                    (_, None) => 'D',
                    _ => 'C',
                };
                println!("{mark} {k}");
            }
            Ok(())
        }
        Command::Json => {
            let repo = Repo::open(&dir)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&repo.committed()?.to_value()).unwrap_or_default()
            );
            Ok(())
        }
        Command::Commit { message } => {
            let repo = Repo::open(&dir)?;
            let state = repo.working_state(true)?;
            repo.write_committed(&state)?;
            if let Some(m) = message {
                pvstate::store::write_atomic(&dir.join(".pvr/commitmsg"), m.as_bytes())?;
            }
            println!("committed {}", &state.id().to_string()[..12]);
            Ok(())
        }
        Command::Checkout => {
            let repo = Repo::open(&dir)?;
            repo.checkout(&repo.committed()?)
        }
        Command::App { command } => app(&dir, command),
        Command::Export { parts, file } => {
            let repo = Repo::open(&dir)?;
            let state = repo.committed()?;
            for p in &parts {
                if !state
                    .entries()
                    .keys()
                    .any(|k| k == p || k.starts_with(&format!("{}/", p.trim_end_matches('/'))))
                {
                    return Err(Error::Usage(format!("unknown part \"{p}\"")));
                }
            }
            let opts = pvstate::pvrexport::ExportOptions {
                parts,
                ..Default::default()
            };
            pvstate::pvrexport::export_file(&state, &repo.pool()?, &file, opts)?;
            println!("exported to {}", file.display());
            Ok(())
        }
        Command::Import { file } => import(&dir, &file, false),
        Command::Merge { file } => import(&dir, &file, true),
        Command::Sig {
            keys: parent,
            command:
                SigCommand::Add {
                    part,
                    raw,
                    include,
                    exclude,
                    noconfig,
                    keys,
                },
        } => sig_add(
            &dir,
            part,
            raw,
            include,
            exclude,
            noconfig,
            keys.or(&parent),
        ),
        Command::Sig {
            keys: parent,
            command: SigCommand::Up { names, keys },
        } => sig_up(&dir, &names, keys.or(&parent)),
        Command::Sig {
            keys: parent,
            command: SigCommand::Ls { cacerts },
        } => sig_ls(&dir, cacerts.or(parent.cacerts).or(parent.pubkey)),
        Command::Deploy { storage, exports } => deploy(&storage, &exports),
        Command::Diff { plan: true, device } => diff(&dir, device, token),
        Command::Diff { plan: false, .. } => local_diff(&dir),
        Command::Post {
            device,
            rev,
            message,
            force,
            run,
            wait,
            timeout,
        } => {
            let repo = Repo::open(&dir)?;
            let device = device_of(&repo, device, token)?;
            let rev = post(&dir, &device, rev, message, force)?;
            if run {
                let reply = device.json(
                    "POST",
                    "/commands",
                    json!({"op": "LOCAL_RUN", "payload": rev})
                        .to_string()
                        .as_bytes(),
                )?;
                println!("{rev}: run ({reply})");
            }
            if wait {
                follow(&device, &rev, std::time::Duration::from_secs(timeout))?;
            }
            Ok(())
        }
        Command::Device {
            command:
                DeviceCommand::Logs {
                    container,
                    device,
                    follow,
                    max,
                },
        } => {
            let device = match device {
                Some(d) => remote::device(&d, token)?,
                None => device_of(&Repo::open(&dir)?, None, token)?,
            };
            logs(
                &device,
                container.as_deref().unwrap_or("pantavisor"),
                follow,
                max,
            )
        }
    }
}

/// Follow revision `rev`'s progress on `device` to its end, through the
/// device's reboots; each change printed. Err with the exit code of a bad end.
fn follow(device: &Device, rev: &str, timeout: std::time::Duration) -> Result<()> {
    let start = std::time::Instant::now();
    let mut last = String::new();
    let mut away = false;
    loop {
        match device.json("GET", &format!("/steps/{rev}/progress"), b"") {
            Ok(p) => {
                away = false;
                let status = p["status"].as_str().unwrap_or("?").to_string();
                let msg = p["status-msg"].as_str().unwrap_or("").to_string();
                let line = format!("{status} ({}%) {msg}", p["progress"].as_u64().unwrap_or(0));
                if line != last {
                    println!("{rev}: {line}");
                    last = line;
                }
                let bad = match status.as_str() {
                    "DONE" | "UPDATED" => return Ok(()),
                    "ERROR" => Some(3),
                    "WONTGO" => Some(4),
                    _ => None,
                };
                if let Some(code) = bad {
                    let now = device
                        .json("GET", "/device-meta", b"")
                        .ok()
                        .and_then(|m| m["pantavisor.revision"].as_str().map(str::to_string))
                        .map(|r| format!("; the device runs {r}"))
                        .unwrap_or_default();
                    return Err(Error::Outcome {
                        code,
                        message: format!("{rev}: {status}: {msg}{now}"),
                    });
                }
            }
            Err(e) => {
                if !away {
                    println!("{rev}: the device does not answer ({e}); waiting for it (a reboot?)");
                    away = true;
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(Error::Outcome {
                code: 5,
                message: format!(
                    "{rev}: no end within {} s (last: {last})",
                    timeout.as_secs()
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `pvr device logs`: the last `max` bytes of `name`'s log, then what comes
/// when `follow`.
fn logs(device: &Device, name: &str, follow: bool, max: u64) -> Result<()> {
    use std::io::Write;
    let mut path = format!("/logs/{name}?max={max}");
    let mut out = std::io::stdout();
    loop {
        let chunk = device.json("GET", &path, b"")?;
        if chunk["rotated"] == true {
            eprintln!("pvr: ({name}'s log was rotated)");
        }
        let data = chunk["data"].as_str().unwrap_or("");
        out.write_all(data.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| Error::io("stdout", e))?;
        if !follow {
            return Ok(());
        }
        let next = chunk["next"].as_u64().unwrap_or(0);
        if data.is_empty() {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        path = format!("/logs/{name}?offset={next}&max=1048576");
    }
}

fn device_of(repo: &Repo, given: Option<String>, token: Option<String>) -> Result<Device> {
    let target = given
        .or_else(|| repo.config()["remote"].as_str().map(str::to_string))
        .ok_or_else(|| Error::Usage("no device given and the repository has no remote".into()))?;
    remote::device(&target, token)
}

/// The device's running revision: its name and state, objects fetched into
/// `pool` (those it lacks).
fn fetch_device(device: &Device, pool: &pvstate::ObjectStore) -> Result<(String, State)> {
    let rev = device.json("GET", "/device-meta", b"")?["pantavisor.revision"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Remote("device-meta names no revision".into()))?;
    let value = device.json("GET", &format!("/steps/{rev}"), b"")?;
    let state = State::parse(&pvstate::canonical::to_vec(&value))?;
    let ids = state.object_ids();
    for (n, id) in ids.iter().enumerate() {
        if pool.contains(id) {
            continue;
        }
        let reply = device.call("GET", &format!("/objects/{id}"), b"")?;
        if reply.status != 200 {
            return Err(Error::Remote(format!("object {id}: {}", reply.status)));
        }
        let bytes = reply.body;
        pool.put(&mut &bytes[..], Some(id))?;
        eprintln!(
            "[{}/{}] {} ({} bytes)",
            n + 1,
            ids.len(),
            &id.to_string()[..12],
            bytes.len()
        );
    }
    Ok((rev, state))
}

/// Another repository's committed state, its objects copied into `pool`.
fn fetch_repo(path: &Path, pool: &pvstate::ObjectStore) -> Result<State> {
    let other = Repo::open(path)?;
    let state = other.committed()?;
    let other_pool = other.pool()?;
    for (_, id) in state.objects() {
        if !pool.contains(id) {
            let from = other_pool.path(id);
            let mut f = std::fs::File::open(&from).map_err(|e| Error::io(&from, e))?;
            pool.put(&mut f, Some(id))?;
        }
    }
    Ok(state)
}

fn clone(target: &str, dir: &Path, token: Option<String>) -> Result<()> {
    let device = remote::device(target, token)?;
    let existed = dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(Error::Usage(format!("{}: not empty", dir.display())));
    }
    // A clone that fails leaves nothing behind: the retry starts clean.
    clone_into(&device, dir).inspect_err(|_| {
        if existed {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    })
}

fn clone_into(device: &Device, dir: &Path) -> Result<()> {
    let repo = Repo::init(dir)?;
    let (rev, state) = fetch_device(device, &repo.pool()?)?;
    repo.write_committed(&state)?;
    repo.set_config(&json!({"remote": device.target().to_string(), "revision": rev}))?;
    repo.checkout(&state)?;
    println!(
        "cloned revision {rev} ({} objects) into {}",
        state.object_ids().len(),
        dir.display()
    );
    Ok(())
}

/// `pvr get [SOURCE][#PART,...]`: the state of a device, another repository
/// or a pvrexport — whole, or only the parts named — into the committed
/// state, checked out.
fn get(dir: &Path, source: Option<String>, token: Option<String>) -> Result<()> {
    let repo = Repo::open(dir)?;
    let source = match source {
        Some(s) => s,
        None => repo.config()["remote"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                Error::Usage("no source given and the repository has no remote".into())
            })?,
    };
    let (from, parts) = match source.rsplit_once('#') {
        Some((f, p)) => (
            f.to_string(),
            p.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        None => (source.clone(), Vec::<String>::new()),
    };
    let pool = repo.pool()?;
    let path = Path::new(&from);
    let incoming = if path.join(".pvr").is_dir() {
        fetch_repo(path, &pool)?
    } else if path.is_file() {
        pvstate::pvrexport::import_file(path, Some(&pool))?.state
    } else {
        fetch_device(&remote::device(&from, token)?, &pool)?.1
    };
    let state = if parts.is_empty() {
        incoming
    } else {
        for p in &parts {
            if incoming.part_keys(p).is_empty() && incoming.get(p).is_none() {
                return Err(Error::Usage(format!("{from}: unknown part \"{p}\"")));
            }
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut state = repo.committed()?;
        merge_parts(&mut state, &incoming.select_parts(&refs));
        state
    };
    repo.write_committed(&state)?;
    repo.checkout(&state)?;
    println!(
        "got {} from {from}",
        if parts.is_empty() {
            "the whole state".to_string()
        } else {
            parts.join(", ")
        }
    );
    Ok(())
}

/// Put the parts `incoming` holds into `state`, each replacing the part of
/// the same name whole (its NAME/, _config/NAME/ and _sigs/NAME.json keys).
fn merge_parts(state: &mut State, incoming: &State) {
    let parts: BTreeSet<String> = incoming
        .entries()
        .keys()
        .filter(|k| *k != "#spec")
        .map(|k| match k.split('/').collect::<Vec<_>>().as_slice() {
            ["_config", c, ..] | ["_sigs", c] => c.trim_end_matches(".json").to_string(),
            [c, ..] => c.to_string(),
            _ => k.clone(),
        })
        .collect();
    for p in &parts {
        let keys: Vec<String> = state.part_keys(p).into_iter().map(str::to_string).collect();
        for k in keys {
            state.remove(&k);
        }
    }
    for (k, e) in incoming.entries() {
        if k != "#spec" {
            state.insert(k.clone(), e.clone());
        }
    }
}

fn import(dir: &Path, file: &Path, merge: bool) -> Result<()> {
    let repo = Repo::open(dir)?;
    let imported = pvstate::pvrexport::import_file(file, Some(&repo.pool()?))?;
    let state = if merge {
        let mut state = repo.committed()?;
        merge_parts(&mut state, &imported.state);
        state
    } else {
        imported.state
    };
    repo.write_committed(&state)?;
    repo.checkout(&state)?;
    println!(
        "{} {} ({} objects)",
        if merge { "merged" } else { "imported" },
        file.display(),
        imported.objects.len()
    );
    Ok(())
}

fn app(dir: &Path, command: AppCommand) -> Result<()> {
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

fn unknown_app(name: &str) -> Error {
    Error::Usage(format!(
        "unknown container \"{name}\" (pvr app ls lists them; pvr app add makes one)"
    ))
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00Z`,
/// fractions and offsets allowed), for image creation times.
fn rfc3339_seconds(t: &str) -> Option<u64> {
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
fn format_options(comp: &str, opts: Option<&str>) -> Result<SquashOptions> {
    let mut o = SquashOptions {
        comp: comp.parse()?,
        ..Default::default()
    };
    let words: Vec<&str> = opts.unwrap_or("").split_whitespace().collect();
    let mut it = words.iter();
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
            other => {
                return Err(Error::Usage(format!(
                    "--format-options: {other} is not supported (use -comp, -b, -Xbcj)"
                )))
            }
        }
    }
    Ok(o)
}

/// Make (or remake) container `args.name` from its source.
fn build_app(repo: &Repo, args: AppArgs, update: bool, force: bool) -> Result<()> {
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
fn app_from_pvr(repo: &Repo, args: &AppArgs) -> Result<()> {
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

fn enum_of<T: serde::de::DeserializeOwned>(
    v: &Option<String>,
) -> std::result::Result<Option<T>, serde_json::Error> {
    v.as_ref()
        .map(|s| serde_json::from_value(Value::String(s.clone())))
        .transpose()
}

fn load_signer(keys: SigningArgs) -> Result<(pvstate::sig::PrivateKey, Vec<Vec<u8>>)> {
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

fn sig_add(
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

fn sig_up(dir: &Path, names: &[String], keys: SigningArgs) -> Result<()> {
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

/// Bytes of these objects in the pool.
fn pool_bytes<'a>(
    pool: &pvstate::ObjectStore,
    ids: impl Iterator<Item = &'a pvstate::ObjectId>,
) -> u64 {
    ids.map(|id| {
        std::fs::metadata(pool.path(id))
            .map(|m| m.len())
            .unwrap_or(0)
    })
    .sum()
}

/// What the device reports free beyond its reserve (device metadata
/// `storage.real_free`, a JSON object or, as Pantavisor writes it, a JSON
/// string); `None` when it does not say.
fn device_room(device: &Device) -> Option<u64> {
    let meta = device.json("GET", "/device-meta", b"").ok()?;
    let storage = match &meta["storage"] {
        serde_json::Value::String(s) => serde_json::from_str(s).ok()?,
        other => other.clone(),
    };
    storage["real_free"].as_u64()
}

/// Refuse an update whose objects do not fit on the device before any byte
/// of it is sent; when they do not, ask the device to collect first.
fn room_for(device: &Device, bytes: u64) -> Result<()> {
    let Some(have) = device_room(device) else {
        return Ok(());
    };
    if bytes <= have {
        return Ok(());
    }
    let _ = device.json("POST", "/commands", br#"{"op":"RUN_GC","payload":""}"#);
    match device_room(device) {
        Some(have) if bytes > have => Err(Error::Remote(format!(
            "not enough space on the device: the update needs {bytes} bytes, {have} are free beyond its reserve; nothing was sent"
        ))),
        _ => Ok(()),
    }
}

/// One object of `count` sent: a bar redrawn in place on a terminal, a
/// line per object otherwise (logs, CI).
fn upload_progress(k: usize, count: usize, id: &str, n: u64, so_far: u64, total: u64) {
    use std::io::IsTerminal;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if std::io::stderr().is_terminal() {
        let width = 30;
        let filled = (so_far.min(total) * width / total.max(1)) as usize;
        eprint!(
            "\r[{}{}] {:3}% {:.1}/{:.1} MiB, {k}/{count} objects",
            "#".repeat(filled),
            " ".repeat(width as usize - filled),
            so_far.min(total) * 100 / total.max(1),
            mib(so_far),
            mib(total)
        );
        if k == count {
            eprintln!();
        }
    } else {
        eprintln!(
            "[{k}/{count}] sent {id} ({n} bytes; {:.1} of {:.1} MiB)",
            mib(so_far),
            mib(total)
        );
    }
}

/// The ids of the objects the device has.
fn device_objects(device: &Device) -> Result<BTreeSet<String>> {
    Ok(device
        .json("GET", "/objects", b"")?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

fn sig_ls(dir: &Path, cacerts: Option<PathBuf>) -> Result<()> {
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

fn deploy(storage: &Path, exports: &[PathBuf]) -> Result<()> {
    let pvroot = pvstate::layout::Pvroot::at(storage);
    let store = pvroot.objects()?;
    let mut merged = match std::fs::read(pvroot.state_path("0")) {
        Ok(bytes) => State::parse_lenient(&bytes)?.0,
        Err(_) => State::new(),
    };
    for file in exports {
        let imported = pvstate::pvrexport::import_file(file, Some(&store))?;
        merge_parts(&mut merged, &imported.state);
        println!(
            "deployed {} ({} objects)",
            file.display(),
            imported.objects.len()
        );
    }
    let problems = merged.validate_as(pvstate::Completeness::Partial);
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "the deployed revision is not valid: {}",
            pvstate::Problems(problems).to_string().replace('\n', "; ")
        )));
    }
    pvroot.write_state("0", &merged)?;
    Ok(())
}

/// The working tree against the committed state: changed keys with both values.
fn local_diff(dir: &Path) -> Result<()> {
    let repo = Repo::open(dir)?;
    let (old, new) = (repo.committed()?, repo.working_state(false)?);
    let mut out = serde_json::Map::new();
    for k in pvstate::diff::changed_keys(&old, &new) {
        let value = |s: &State| s.get(k).map(|e| e.to_value());
        out.insert(
            k.clone(),
            json!({"committed": value(&old), "working": value(&new)}),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default()
    );
    Ok(())
}

fn diff(dir: &Path, device: Option<String>, token: Option<String>) -> Result<()> {
    let repo = Repo::open(dir)?;
    let device = device_of(&repo, device, token)?;
    let rev = device.json("GET", "/device-meta", b"")?["pantavisor.revision"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let running = State::parse(&pvstate::canonical::to_vec(&device.json(
        "GET",
        &format!("/steps/{rev}"),
        b"",
    )?))?;
    let ours = repo.committed()?;
    let (_, t) = plan(&running, &ours);
    let have = device_objects(&device)?;
    let pool = repo.pool()?;
    let missing: Vec<_> = ours
        .object_ids()
        .into_iter()
        .filter(|id| !have.contains(id.as_str()))
        .collect();
    let bytes = pool_bytes(&pool, missing.iter());
    println!("against the device's revision {rev}:");
    println!(
        "  transition: {}",
        if t.reboot {
            format!("reboot ({})", t.reasons.join("; "))
        } else {
            "no reboot".into()
        }
    );
    println!(
        "  restart: {:?}  start: {:?}  stop: {:?}",
        t.restart, t.start, t.stop
    );
    println!("  objects to send: {} ({} bytes)", missing.len(), bytes);
    Ok(())
}

/// Post the committed state to `device` as `rev`; returns the revision name.
fn post(
    dir: &Path,
    device: &Device,
    rev: Option<String>,
    message: Option<String>,
    force: bool,
) -> Result<String> {
    let repo = Repo::open(dir)?;
    let state = repo.committed()?;
    let rev = rev.unwrap_or_else(|| format!("locals/pvr-{}", &state.id().to_string()[..12]));
    // The device's rule for local revision names, checked before any upload.
    match rev.strip_prefix("locals/") {
        Some(name) => {
            pvstate::layout::local_revision(name)
                .map_err(|e| Error::Usage(format!("--rev {rev}: {e}")))?;
        }
        None => {
            return Err(Error::Usage(format!(
                "--rev {rev}: a device's control socket takes locals/NAME revisions"
            )))
        }
    }
    // Ask what the device has; send only the rest. A post interrupted earlier
    // resumes here: what arrived is not sent again.
    let have = if force {
        BTreeSet::new()
    } else {
        device_objects(device)?
    };
    let pool = repo.pool()?;
    let ids = state.object_ids();
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !have.contains(id.as_str()))
        .collect();
    let total = pool_bytes(&pool, ids.iter());
    let to_send = pool_bytes(&pool, missing.iter().copied());
    room_for(device, to_send)?;
    // Up to four uploads at once, each on its own connection.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let sent_objects = std::sync::atomic::AtomicU64::new(0);
    let failure: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..missing.len().min(4) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= missing.len() || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    break;
                }
                let id = missing[i];
                let path = pool.path(id);
                let result = remote::put_object(device, id, &path);
                match result {
                    Ok(n) => {
                        let so_far =
                            sent_objects.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n;
                        let k = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        upload_progress(
                            k,
                            missing.len(),
                            &id.to_string()[..12],
                            n,
                            so_far,
                            to_send,
                        );
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        let why = match e {
            Error::Remote(m) => m,
            other => other.to_string(),
        };
        return Err(Error::Remote(format!(
            "{why}; {} object(s) arrived — run pvr post again to send the rest",
            done.into_inner()
        )));
    }
    let mut sent = sent_objects.into_inner();
    let json = state.to_canonical();
    device.json("PUT", &format!("/steps/{rev}"), &json)?;
    sent += json.len() as u64;
    if let Some(m) = message.or_else(|| std::fs::read_to_string(dir.join(".pvr/commitmsg")).ok()) {
        device.json("PUT", &format!("/steps/{rev}/commitmsg"), m.as_bytes())?;
    }
    println!(
        "posted {rev}: sent {sent} bytes ({} of {} objects and the state JSON of {} bytes); the revision's objects total {total} bytes",
        missing.len(),
        ids.len(),
        json.len()
    );
    Ok(rev)
}
