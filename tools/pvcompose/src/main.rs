//! The `pvcompose` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pvcompose::check;

#[derive(Parser)]
#[command(
    name = "pvcompose",
    version,
    about = "Compose and check Pantavisor revisions",
    long_about = "Compose and check Pantavisor revisions: container and BSP parts, \
                  the pvroot of a device's data partition, and their state JSON."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a state and list every problem found.
    ///
    /// PATH may be a state JSON file, a trail or pvr repository directory
    /// (holding .pvr/json; objects are checked when .pvr/objects or the
    /// storage's objects/ is beside it), a device storage directory (every
    /// trails/<rev> is checked against objects/), or a pvrexport (.tar/.tgz;
    /// every object is hashed). Exit status: 0 valid, 1 problems found,
    /// 2 the path could not be read or recognised.
    Validate {
        /// What to check.
        path: PathBuf,
        /// Accept a state that holds only some parts (no bsp/run.json).
        /// Implied for pvrexports.
        #[arg(long)]
        partial: bool,
        /// Print only the problems, not the summary line.
        #[arg(short, long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate {
            path,
            partial,
            quiet,
        } => validate(&path, partial, quiet),
    }
}

fn validate(path: &std::path::Path, partial: bool, quiet: bool) -> ExitCode {
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
