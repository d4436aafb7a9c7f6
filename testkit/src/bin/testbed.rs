//! `testbed`: the multi-host test bed on loopback (docs/testbed.md). `ci/testbed` runs it.
//!
//! ```text
//! testbed up [--hosts N]   start what is not running (N: 1..50, default 3); prints the env
//! testbed env              print `export` lines of the running bed
//! testbed json             print the bed's description (testbed.json)
//! testbed status           one line per component; exit 0 only if everything runs
//! testbed down [--purge]   stop everything; --purge also deletes the state dir
//! testbed stop-host tN     stop tN's sshd only (sessions and services on tN keep running)
//! testbed start-host tN    start tN's sshd again (same port, same host key)
//! testbed haproxy-state    `show servers state` of the backend, from the admin socket
//! testbed haproxy-cmd CMD  one admin-socket command, e.g. 'set server fixture/t1 state drain'
//! testbed prepare          install what `up` needs (Debian packages, conftool's venv); no daemon
//! ```
//!
//! Exit status: 0 ok, 1 failure (message on stderr), 2 usage error. Logs go to stderr, the
//! environment to stdout.

use std::process::ExitCode;

use testkit::testbed::{Ctx, Error, Settings};

const USAGE: &str = "usage: ci/testbed up [--hosts N] | env | json | status | down [--purge] | \
stop-host tN | start-host tN | haproxy-state | haproxy-cmd CMD | prepare";

fn log(msg: &str) {
    eprintln!("{msg}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(Error::Usage(m)) => {
            eprintln!("testbed: {m}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Error::Failed(m)) => {
            eprintln!("testbed: error: {m}");
            ExitCode::from(1)
        }
    }
}

fn usage() -> Error {
    Error::Usage("bad arguments".into())
}

fn run(args: &[String]) -> Result<ExitCode, Error> {
    let ctx = Ctx::new(Settings::from_env()?, log);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["up", rest @ ..] => {
            let hosts = match rest {
                [] => None,
                ["--hosts", n] => Some(n.parse().map_err(|_| usage())?),
                [flag] if flag.starts_with("--hosts=") => {
                    Some(flag["--hosts=".len()..].parse().map_err(|_| usage())?)
                }
                _ => return Err(usage()),
            };
            let bed = ctx.up(hosts)?;
            for l in bed.env_lines() {
                println!("{l}");
            }
        }
        ["env"] => print!("{}", ctx.env()?),
        ["json"] => {
            ctx.env()?;
            let bed = testkit::Bed::load(&ctx.layout.dir).map_err(Error::Failed)?;
            println!("{}", serde_json::to_string_pretty(&bed).unwrap());
        }
        ["status"] => {
            let report = ctx.status()?;
            for c in &report {
                println!("{}", c.line);
            }
            if report.iter().any(|c| !c.ok) {
                return Ok(ExitCode::from(1));
            }
        }
        ["prepare"] => {
            ctx.ensure_packages()?;
            ctx.ensure_conftool()?;
        }
        ["down"] => ctx.down(false)?,
        ["down", "--purge"] => ctx.down(true)?,
        ["stop-host", h] => ctx.stop_host(h)?,
        ["start-host", h] => ctx.start_host(h)?,
        ["haproxy-state"] => haproxy(&ctx, "show servers state fixture")?,
        ["haproxy-cmd", cmd] => haproxy(&ctx, cmd)?,
        ["-h" | "--help" | "help"] => println!("{USAGE}"),
        _ => return Err(usage()),
    }
    Ok(ExitCode::SUCCESS)
}

fn haproxy(ctx: &Ctx, cmd: &str) -> Result<(), Error> {
    let sock = ctx.layout.path("haproxy.sock");
    if !sock.exists() {
        return Err(Error::Failed(
            "no haproxy admin socket (is the bed up?)".into(),
        ));
    }
    let out = testkit::bed::haproxy_cmd(&sock, cmd).map_err(Error::Failed)?;
    print!("{out}");
    Ok(())
}
