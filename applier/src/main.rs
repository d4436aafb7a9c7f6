//! The `applier` command line.
use clap::Parser;

#[derive(Parser)]
#[command(name = "applier", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    let _ = applier::VERSION;
}
