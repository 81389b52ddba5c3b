//! `pvr device …`: asking a device about itself; which device a command means.

use std::path::Path;

use clap::Subcommand;
use pvctrl::Client as Device;

use crate::error::{Error, Result};
use crate::remote;
use crate::repo::Repo;

#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
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

/// `pvr device logs`: the last `max` bytes of `name`'s log, then what comes
/// when `follow`.
pub(crate) fn logs(device: &Device, name: &str, follow: bool, max: u64) -> Result<()> {
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

pub(crate) fn device_of(
    repo: &Repo,
    given: Option<String>,
    token: Option<String>,
) -> Result<Device> {
    let target = given
        .or_else(|| repo.config()["remote"].as_str().map(str::to_string))
        .ok_or_else(|| Error::Usage("no device given and the repository has no remote".into()))?;
    remote::device(&target, token)
}

/// `pvr device …`.
pub(crate) fn run(dir: &Path, token: Option<String>, command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Logs {
            container,
            device,
            follow,
            max,
        } => {
            let device = match device {
                Some(d) => remote::device(&d, token)?,
                None => device_of(&Repo::open(dir)?, None, token)?,
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
