//! `pantavisor`: the runtime daemon — appengine mode as a plain root process,
//! embedded mode when started as PID 1 (the /init of our initramfs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use pantavisor::config::{Mode, Options, Paths};
use pantavisor::daemon::Daemon;

#[derive(Parser)]
#[command(
    name = "pantavisor",
    version,
    about = "Run a revision's containers (appengine mode)",
    long_about = "Run the containers of the revision a pvroot's boot environment names \
                  (boot/pv.env pv_rev, 0 by default): mounted from their squashfs objects, \
                  started group by group, restarted per their auto_recovery, driven through \
                  the control socket. Stops every container in reverse group order on \
                  SIGTERM or SIGINT. Needs root."
)]
struct Cli {
    /// The data partition (a pvroot: trails/, objects/, boot/ ...).
    #[arg(long)]
    storage: PathBuf,
    /// Where to create the control socket (pv-ctrl).
    #[arg(long)]
    ctrl_socket: PathBuf,
    /// Runtime directory for mounts and bundles.
    #[arg(long, default_value = "/run/pantavisor-rs")]
    run_dir: PathBuf,
    /// Configuration file, the pv.conf level (KEY=VALUE lines: cgroup.parent,
    /// log.maxsize, stop.timeout, update.goals_timeout, update.commit_delay,
    /// update.verify_objects, boot.verify_objects, update.signatures =
    /// disabled|audit|lenient|strict, secureboot.truststore,
    /// secureboot.oem_truststore, bootloader, remote.listen = ADDRESS:PORT and
    /// remote.token = TOKEN for the remote API (off by default), oem.name,
    /// policy; Pantavisor's PV_* names work too). PV_*/PH_* environment
    /// variables and user metadata named like keys override it, flags override
    /// all; GET /config shows each value's origin (docs/runtime.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// cgroup under which containers get theirs.
    #[arg(long)]
    cgroup_parent: Option<String>,
}

fn main() -> ExitCode {
    if std::process::id() == 1 {
        pantavisor::embedded::pid1(|storage, text| {
            let paths = Paths {
                storage: storage.to_path_buf(),
                ctrl_socket: PathBuf::from("/run/pantavisor/pv-ctrl"),
                run_dir: PathBuf::from("/run/pantavisor-rs"),
                cgroup_parent: None,
            };
            // The initramfs's configuration (pv.conf), then the storage's.
            let pv_conf = std::fs::read_to_string("/etc/pantavisor.config").ok();
            Options::load(paths, Mode::Embedded, pv_conf.as_deref(), Some(text))
                .map_err(|e| pantavisor::Error::Other(format!("config: {e}")))
        })
    }
    let cli = Cli::parse();
    let text = match &cli.config {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("pantavisor: error: {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => String::new(),
    };
    let paths = Paths {
        storage: cli.storage.clone(),
        ctrl_socket: cli.ctrl_socket.clone(),
        run_dir: cli.run_dir.clone(),
        cgroup_parent: cli.cgroup_parent.clone(),
    };
    let opts = match Options::load(paths, Mode::Appengine, Some(&text), None) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pantavisor: error: config: {e}");
            return ExitCode::from(2);
        }
    };
    match Daemon::new(opts).and_then(Daemon::run) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pantavisor: error: {e}");
            ExitCode::from(1)
        }
    }
}
