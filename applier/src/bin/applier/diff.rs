//! `applier diff`: the report as text (sections config, code, dependencies, storage) or as
//! one JSON document.

use applier::diff::DiffReport;

use crate::render::{Render, short};

pub fn print(r: &DiffReport, render: Render) {
    if render == Render::Json {
        println!("{}", serde_json::to_string_pretty(r).expect("serialises"));
        return;
    }
    let t = &r.target;
    let named = r
        .source_ref
        .as_ref()
        .map(|s| format!(" ({} {})", s.kind, s.name))
        .unwrap_or_default();
    println!(
        "diff for {}: {} {}{named} \"{}\"",
        r.env,
        short(&t.commit),
        t.artifact,
        t.subject
    );
    match &r.current {
        Some(c) => println!(
            "  against {} {} \"{}\" (what most hosts run)",
            short(&c.commit),
            c.artifact,
            c.subject
        ),
        None => println!("  against nothing: the env has no release yet"),
    }
    println!(
        "  deploy type: {}",
        format!("{:?}", r.deploy_type).to_lowercase()
    );

    println!("\n== config (rendered on each host; ops values masked)");
    for h in &r.config {
        if let Some(e) = &h.error {
            println!("[{}] cannot render: {e}", h.host);
        } else if h.diff.is_empty() {
            println!("[{}] no change", h.host);
        } else {
            print!("{}", h.diff);
        }
        if let Some(f) = &h.ops_file {
            println!(
                "[{}] ops file {f}: {}",
                h.host,
                if h.ops_keys.is_empty() {
                    "-".into()
                } else {
                    h.ops_keys.join(", ")
                }
            );
        }
    }

    println!("\n== code");
    match &r.code.range {
        Some(range) => {
            println!("commits {range}");
            if r.code.files.is_empty() {
                println!("no file changed");
            }
            for f in &r.code.files {
                let mark = match f.change {
                    "added" => "A",
                    "removed" => "D",
                    _ => "M",
                };
                println!("{mark} {}", f.path);
            }
            if r.code.deploy_only {
                println!("(only deploy/ changed: a config change)");
            }
        }
        None => println!("first deploy: no base to compare"),
    }

    println!("\n== dependencies");
    let d = &r.deps;
    if let Some(n) = &d.note {
        println!("{n}");
    } else if d.change.is_empty() {
        println!(
            "no package changed{}",
            if d.same_layer {
                " (same dependency layer)"
            } else {
                ""
            }
        );
    }
    for (n, v) in &d.change.added {
        println!("+ {n} {v}");
    }
    for (n, v) in &d.change.removed {
        println!("- {n} {v}");
    }
    for (n, a, b) in &d.change.changed {
        println!("~ {n} {a} -> {b}");
    }

    println!("\n== storage");
    if r.storage.findings.is_empty() {
        println!("no storage change");
    }
    for f in &r.storage.findings {
        println!("{f}");
    }
    if !r.storage.allowed {
        println!("the deploy would be refused until these are acknowledged (--ack)");
        for rc in &r.storage.recipes {
            println!("  way back: {rc}");
        }
    }
}
