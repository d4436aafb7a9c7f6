//! Prints the static (and, with `--capture`, the captured) storage manifest of a directory.
//!
//! `cargo run -p schema-guard --example extract_dir -- DIR [--capture] [--env ENV]`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(
        args.first()
            .ok_or("usage: extract_dir DIR [--capture] [--env ENV]")?,
    );
    let env = args
        .iter()
        .position(|a| a == "--env")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let opts = schema_guard::extract::StaticOptions { config: None, env };
    let start = std::time::Instant::now();
    let m = if args.iter().any(|a| a == "--capture") {
        let c = schema_guard::extract::CaptureOptions {
            config: opts,
            ..Default::default()
        };
        schema_guard::extract::capture(&dir, &c)?
    } else {
        schema_guard::extract::static_manifest_dir(&dir, &opts)?
    };
    eprintln!("extracted in {:?}", start.elapsed());
    println!("{}", serde_json::to_string_pretty(&m.to_value())?);
    Ok(())
}
