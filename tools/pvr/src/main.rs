//! `pvr`: the developer/operator CLI, compatible in its command names and
//! repository layout with Pantavisor's pvr for the commands it has.
//!
//! One module per command family, its options beside its code (docs/pvr.md
//! maps Pantavisor's commands to them): `app` (app add/update/install/rm/
//! ls/info), `sig` (sig add/up/ls), `transfer` (clone, get, import, merge,
//! deploy), `post` (post, diff), `device` (device logs; which device a
//! command means); the repository commands (init, status, json, add,
//! commit, checkout, export) are here.

mod app;
mod delta;
mod device;
mod docker;
mod error;
mod post;
mod remote;
mod repo;
mod sig;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::AppCommand;
use crate::device::DeviceCommand;
use crate::error::{Error, Result};
use crate::post::{diff, local_diff, PostArgs};
use crate::repo::Repo;
use crate::sig::{SigCommand, SigParentArgs};
use crate::transfer::{clone, deploy, get, import};

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
    /// Bearer token for a device's remote API (http://HOST:PORT); Pantavisor's
    /// pvr calls it --access-token (-a, PVR_ACCESSTOKEN).
    #[arg(
        long,
        global = true,
        env = "PVR_TOKEN",
        hide_env_values = true,
        visible_alias = "access-token"
    )]
    token: Option<String>,
    /// The same as --token, as Pantavisor's pvr spells it (before the command).
    #[arg(
        short = 'a',
        env = "PVR_ACCESSTOKEN",
        hide_env_values = true,
        hide = true
    )]
    access_token: Option<String>,
    /// Print each request to the device and its answer's status (stderr).
    #[arg(short, long, env = "PVR_DEBUG")]
    debug: bool,
    /// Where pvr keeps its keys (pvs/key.default.pem, …); default ~/.pvr.
    #[arg(short = 'c', long, env = "PVR_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
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
    Post(PostArgs),
    /// Ask a device about itself.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
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
    let token = cli.token.or(cli.access_token);
    pvctrl::set_debug(cli.debug);
    if let Some(c) = &cli.config_dir {
        // Read where the key files are looked up (sig); pvr is one thread here.
        std::env::set_var("PVR_CONFIG_DIR", c);
    }
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
            // Chunk indexes of the committed objects, for the deltas post
            // sends (kept beside them; one read of each new object).
            let pool = repo.pool()?;
            for id in state.object_ids() {
                if pool.contains(&id) {
                    delta::index(&pool, &id)?;
                }
            }
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
        Command::App { command } => app::run(&dir, command),
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
        Command::Sig { keys, command } => sig::run(&dir, keys, command),
        Command::Deploy { storage, exports } => deploy(&storage, &exports),
        Command::Diff { plan: true, device } => diff(&dir, device, token),
        Command::Diff { plan: false, .. } => local_diff(&dir),
        Command::Post(args) => post::run(&dir, token, args),
        Command::Device { command } => device::run(&dir, token, command),
    }
}
