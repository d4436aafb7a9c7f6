//! `applier host --root <root> [<op>]`: the target side of a remote transport. One host-protocol
//! session on stdin/stdout (see `applier::target::serve`): a hello, then requests as JSON lines,
//! one JSON answer line each. Alone with no input, a request that needs no fields runs by its
//! op name (`applier host --root R status`). Everything of the `host` subcommand is here.

use std::io::IsTerminal;

use anyhow::Context;

use crate::exit::{Exit, Failure};

/// Exit 0 when every request succeeded, 1 when one failed, 64 when the session was refused
/// (not a request, no hello, another protocol version).
pub fn run(root: &std::path::Path, op: Option<&str>) -> Result<Exit, Failure> {
    let target = applier::target::HostRoot::new(root);
    let stdin = std::io::stdin();
    let input: Box<dyn std::io::BufRead> = if stdin.is_terminal() {
        Box::new(std::io::empty())
    } else {
        Box::new(stdin.lock())
    };
    let sum = applier::target::serve(&target, input, std::io::stdout().lock(), op)
        .context("host protocol session on stdin/stdout")
        .map_err(|e| Failure::new(Exit::Failed, e))?;
    Ok(if sum.refused {
        Exit::Usage
    } else if sum.failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}
