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
    #[arg(short, long, default_value = "/pantavisor/pv-ctrl")]
    socket: PathBuf,
    /// Commit message (steps put).
    #[arg(short, long)]
    message: Option<String>,
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
    /// Commands: `run REV`, `run-commit REV`, `reboot [MESSAGE]`, `run-gc`.
    #[command(alias = "commands")]
    Cmd { args: Vec<String> },
    /// Revisions: `ls`, `get REV|current`, `show-progress REV|current`,
    /// `put FILE locals/NAME` (a state JSON; its objects must be there).
    Steps { args: Vec<String> },
    /// Objects: `ls`, `get SHA` (to stdout), `put FILE SHA`.
    Objects { args: Vec<String> },
    /// Storage: `gc` (collect now, report what was freed).
    Storage { action: String },
    /// Configuration: `ls` (each value and where it came from).
    Conf { action: String },
    /// A container's log of the running revision (the daemon's own without
    /// NAME): the last MAX bytes (default 16384).
    Logs {
        name: Option<String>,
        max: Option<u64>,
    },
}

/// The words of a verb, for matching.
fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `current` → the running revision (asks the daemon).
fn revision(client: &pvctrl::Client, rev: &str) -> Result<String, String> {
    if rev != "current" {
        return Ok(rev.to_string());
    }
    let meta = client
        .call("GET", "/device-meta", b"")
        .map_err(|e| e.to_string())?
        .json();
    meta["pantavisor.revision"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the daemon names no running revision".to_string())
}

/// A request body of the protocol's types.
fn json(body: &impl serde::Serialize) -> String {
    serde_json::to_string(body).unwrap_or_default()
}

fn main() -> ExitCode {
    // A closed pipe (`pvcontrol containers ls | head -1`) ends it quietly.
    pantavisor::sys::default_sigpipe();
    let cli = Cli::parse();
    let client =
        pvctrl::Client::socket(&cli.socket).with_timeout(std::time::Duration::from_secs(30));
    let usage = |m: &str| Err(format!("usage: {m}"));
    let command = |op: proto::Op, payload: &str| {
        let body = proto::Command {
            op,
            payload: payload.to_string(),
        };
        Ok(("POST", "/commands".to_string(), json(&body)))
    };
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
        Command::Cmd { args: a } => match args(a).as_slice() {
            ["run", rev] => command(proto::Op::LOCAL_RUN, rev),
            ["run-commit", rev] => command(proto::Op::LOCAL_RUN_COMMIT, rev),
            ["reboot"] => command(proto::Op::REBOOT_DEVICE, "pvcontrol"),
            ["reboot", why @ ..] => command(proto::Op::REBOOT_DEVICE, &why.join(" ")),
            ["run-gc"] => command(proto::Op::RUN_GC, ""),
            _ => usage("pvcontrol cmd run REV | run-commit REV | reboot [MESSAGE] | run-gc"),
        },
        Command::Steps { args: a } => match args(a).as_slice() {
            ["ls"] => Ok(("GET", "/steps".into(), String::new())),
            ["get", rev] => revision(&client, rev).map(|r| ("GET", format!("/steps/{r}"), String::new())),
            ["show-progress", rev] => revision(&client, rev)
                .map(|r| ("GET", format!("/steps/{r}/progress"), String::new())),
            ["put", file, rev] => {
                let put = std::fs::read(file)
                    .map_err(|e| format!("{file}: {e}"))
                    .and_then(|body| {
                        client
                            .call("PUT", &format!("/steps/{rev}"), &body)
                            .map_err(|e| e.to_string())
                    });
                // The commit message follows the state.
                if let (Ok(r), Some(m)) = (&put, &cli.message) {
                    if r.ok() {
                        let _ = client.call("PUT", &format!("/steps/{rev}/commitmsg"), m.as_bytes());
                    }
                }
                return finish(put);
            }
            _ => usage(
                "pvcontrol steps ls | get REV|current | show-progress REV|current | put FILE locals/NAME",
            ),
        },
        Command::Objects { args: a } => match args(a).as_slice() {
            ["ls"] => Ok(("GET", "/objects".into(), String::new())),
            ["get", sha] => {
                // The object's bytes as they are.
                use std::io::Write;
                return match client.call("GET", &format!("/objects/{sha}"), b"") {
                    Ok(r) if r.ok() => match std::io::stdout().write_all(&r.body) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => finish(Err(format!("stdout: {e}"))),
                    },
                    other => finish(other.map_err(|e| e.to_string())),
                };
            }
            ["put", file, sha] => {
                // Streamed, not read whole: an object may be large.
                let path = std::path::Path::new(file);
                let sent = std::fs::File::open(path)
                    .and_then(|mut f| {
                        let len = f.metadata()?.len();
                        Ok((len, client.call_reader("PUT", &format!("/objects/{sha}"), &mut f, len)))
                    })
                    .map_err(|e| format!("{file}: {e}"));
                return finish(sent.and_then(|(_, r)| r.map_err(|e| e.to_string())));
            }
            _ => usage("pvcontrol objects ls | get SHA | put FILE SHA"),
        },
        Command::Storage { action } if action == "gc" => {
            Ok(("POST", "/storage/gc".into(), String::new()))
        }
        Command::Storage { .. } => usage("pvcontrol storage gc"),
        Command::Conf { action } if action == "ls" => Ok(("GET", "/config".into(), String::new())),
        Command::Conf { .. } => usage("pvcontrol conf ls"),
        Command::Logs { name, max } => {
            let name = name.as_deref().unwrap_or("pantavisor");
            let max = max.unwrap_or(16384);
            match client
                .call("GET", &format!("/logs/{name}?max={max}"), b"")
                .map_err(|e| e.to_string())
            {
                Ok(r) if r.ok() => {
                    print!("{}", r.json()["data"].as_str().unwrap_or(""));
                    return ExitCode::SUCCESS;
                }
                other => return finish(other),
            }
        }
    };
    let result =
        call.and_then(|(m, p, b)| client.call(m, &p, b.as_bytes()).map_err(|e| e.to_string()));
    finish(result)
}

/// Print an answer (or why there is none); the exit code.
fn finish(result: Result<pvctrl::Reply, String>) -> ExitCode {
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
