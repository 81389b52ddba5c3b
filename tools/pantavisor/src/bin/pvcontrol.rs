//! `pvcontrol`: a client of the daemon's control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pvctrl::proto;

#[derive(Parser)]
#[command(
    name = "pvcontrol",
    version,
    about = "Talk to pantavisor's control socket; prints the JSON answers"
)]
struct Cli {
    /// The control socket (inside a container: /pantavisor/pv-ctrl).
    #[arg(long, default_value = "/pantavisor/pv-ctrl")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Containers: `ls`, or `stop|start|restart NAME`.
    Containers {
        /// ls, stop, start or restart
        action: String,
        name: Option<String>,
    },
    /// Groups: `ls`.
    Groups { action: String },
    /// Send a signal about the calling container: `ready`.
    Signal { kind: String },
    /// Device metadata: `ls`.
    Devmeta { action: String },
    /// User metadata: `ls`, `get KEY`, `save KEY VALUE`, `delete KEY`.
    Usrmeta {
        action: String,
        key: Option<String>,
        value: Option<String>,
    },
    /// What the daemon is.
    Buildinfo,
}

/// A request body of the protocol's types.
fn json(body: &impl serde::Serialize) -> String {
    serde_json::to_string(body).unwrap_or_default()
}

fn main() -> ExitCode {
    // A closed pipe (`pvcontrol containers ls | head -1`) ends it quietly.
    pantavisor::sys::default_sigpipe();
    let cli = Cli::parse();
    let usage = |m: &str| Err(format!("usage: {m}"));
    let call: Result<(&str, String, String), String> = match &cli.command {
        Command::Containers { action, name } => {
            let containers_usage =
                "pvcontrol containers ls | stop NAME | start NAME | restart NAME | kill NAME";
            match (action.as_str(), name) {
                ("ls", None) => Ok(("GET", "/containers".into(), String::new())),
                (a, Some(n)) => match a.parse::<proto::Action>() {
                    Ok(action) => {
                        let body = proto::ContainerAction {
                            action,
                            signal: None,
                        };
                        Ok(("PUT", format!("/containers/{n}"), json(&body)))
                    }
                    Err(_) => usage(containers_usage),
                },
                _ => usage(containers_usage),
            }
        }
        Command::Groups { action } if action == "ls" => {
            Ok(("GET", "/groups".into(), String::new()))
        }
        Command::Groups { .. } => usage("pvcontrol groups ls"),
        Command::Signal { kind } => {
            let body = proto::Signal { kind: kind.clone() };
            Ok(("POST", "/signal".into(), json(&body)))
        }
        Command::Devmeta { action } if action == "ls" => {
            Ok(("GET", "/device-meta".into(), String::new()))
        }
        Command::Devmeta { .. } => usage("pvcontrol devmeta ls"),
        Command::Usrmeta { action, key, value } => match (action.as_str(), key, value) {
            ("ls", None, None) => Ok(("GET", "/user-meta".into(), String::new())),
            ("get", Some(k), None) => Ok(("GET", format!("/user-meta/{k}"), String::new())),
            ("save", Some(k), Some(v)) => Ok(("PUT", format!("/user-meta/{k}"), v.clone())),
            ("delete", Some(k), None) => Ok(("DELETE", format!("/user-meta/{k}"), String::new())),
            _ => usage("pvcontrol usrmeta ls | get KEY | save KEY VALUE | delete KEY"),
        },
        Command::Buildinfo => Ok(("GET", "/buildinfo".into(), String::new())),
    };
    let client =
        pvctrl::Client::socket(&cli.socket).with_timeout(std::time::Duration::from_secs(30));
    let result =
        call.and_then(|(m, p, b)| client.call(m, &p, b.as_bytes()).map_err(|e| e.to_string()));
    match result {
        Ok(reply) if reply.ok() => {
            println!("{}", String::from_utf8_lossy(&reply.body));
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            eprintln!("pvcontrol: {}: {}", reply.status, reply.message());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("pvcontrol: error: {e}");
            ExitCode::from(2)
        }
    }
}
