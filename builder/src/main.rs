//! The `builder` command line.
use clap::Parser;

#[derive(Parser)]
#[command(name = "builder", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    let _ = builder::VERSION;
}
