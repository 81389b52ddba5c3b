//! `pantavisor`: the runtime daemon — appengine mode as a plain root process,
//! embedded mode when started as PID 1 (the /init of our initramfs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use pantavisor::supervisor::{Daemon, Options};

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
    /// Configuration file (KEY=VALUE lines: cgroup.parent, log.maxsize,
    /// stop.timeout, update.goals_timeout, update.commit_delay,
    /// update.verify_objects, update.signatures = disabled|audit|lenient|strict,
    /// remote.listen = ADDRESS:PORT and remote.token = TOKEN for the remote API,
    /// off by default); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// cgroup under which containers get theirs.
    #[arg(long)]
    cgroup_parent: Option<String>,
}

fn config_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| {
            l.split_once('=')
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        })
}

/// Options from the configuration text, with the paths and flags given.
fn options(
    text: &str,
    storage: PathBuf,
    ctrl_socket: PathBuf,
    run_dir: PathBuf,
    cgroup_parent: Option<String>,
) -> Result<Options, String> {
    let number = |key: &str, default: u64| -> Result<u64, String> {
        match config_value(text, key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{key}={v}: not a number")),
        }
    };
    Ok(Options {
        storage,
        ctrl_socket,
        run_dir,
        cgroup_parent: cgroup_parent
            .or_else(|| config_value(text, "cgroup.parent"))
            .unwrap_or_else(|| "pantavisor".into()),
        log_max_bytes: number("log.maxsize", 1 << 20)?,
        stop_timeout: Duration::from_secs(number("stop.timeout", 10)?),
        goals_timeout: Duration::from_secs(number("update.goals_timeout", 120)?),
        commit_delay: Duration::from_secs(number("update.commit_delay", 5)?),
        verify_objects: number("update.verify_objects", 1)? != 0,
        remote_listen: config_value(text, "remote.listen")
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("remote.listen={v}: not an ADDRESS:PORT"))
            })
            .transpose()?,
        remote_token: config_value(text, "remote.token").filter(|t| !t.is_empty()),
        bootloader: config_value(text, "bootloader").unwrap_or_else(|| "plain".into()),
        real_reboot: false,
        signatures: config_value(text, "update.signatures")
            .unwrap_or_else(|| "lenient".into())
            .parse()?,
    })
}

fn main() -> ExitCode {
    if std::process::id() == 1 {
        pantavisor::embedded::pid1(|storage, text| {
            options(
                text,
                storage.to_path_buf(),
                PathBuf::from("/run/pantavisor/pv-ctrl"),
                PathBuf::from("/run/pantavisor-rs"),
                None,
            )
            .map(|o| Options {
                real_reboot: true,
                ..o
            })
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
    let opts = match options(
        &text,
        cli.storage.clone(),
        cli.ctrl_socket.clone(),
        cli.run_dir.clone(),
        cli.cgroup_parent.clone(),
    ) {
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
