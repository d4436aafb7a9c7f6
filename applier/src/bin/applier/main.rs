//! The `applier` command line: resolves configuration, calls the library, renders events.
//!
//! - `cli`: the subcommands and flags.
//! - `context`: configuration layers, the store and the environment context.
//! - `commands`: one function per subcommand (deploy, promote, rollback, resume, cd, diff,
//!   unlock, status, history), with the env's notifications beside the renderer.
//! - `cd`, `diff`, `unlock`: rendering those commands' results.
//! - `host`: `applier host ...`, the target side of a remote transport.
//! - `plan`: the text form of `applier plan`.
//! - `live`: the live view's board (the table, the bake countdown, the summary).
//! - `render`: the live view (a table redrawn in place), plain lines and JSON lines of the
//!   event stream.
//! - `exit`: the exit codes, decided in one place from the library's outcomes and error kinds.
//!
//! An error is printed on stderr as `applier: <error>`, followed by a `record:` line naming the
//! store record a refusal was decided on, and a `hint:` line where the user can act on it.

mod cd;
mod cli;
mod commands;
mod context;
mod diff;
mod exit;
mod host;
mod live;
mod plan;
mod render;
mod reports;
mod unlock;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
use exit::Exit;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("APPLIER_LOG")
        .unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    match commands::run(cli) {
        Ok(exit) => exit.into(),
        Err(f) => {
            eprintln!("applier: {:#}", f.error);
            if let Some(r) = &f.record {
                eprintln!("record: {r}");
            }
            if let Some(h) = &f.hint {
                eprintln!("hint: {h}");
            }
            f.exit.into()
        }
    }
}
