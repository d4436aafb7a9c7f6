//! The `schema-guard` command line.
use clap::Parser;

#[derive(Parser)]
#[command(name = "schema-guard", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    let _ = schema_guard::VERSION;
}
