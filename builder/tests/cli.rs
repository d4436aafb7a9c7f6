//! The command line's contract, through the binary: exit codes (usage is 64, clap's errors
//! included), refused store locations, `deploy/service.yaml` validated at build time, a quiet
//! exit when stdout is closed, and files written atomically (no temp file left on failure).

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [
        vec!["build", "--no-such-flag"],
        vec!["frobnicate"],
        vec!["show"],
        vec!["--format", "yaml", "ls"],
        vec![],
    ] {
        let out = run(builder(&args));
        assert_eq!(code(&out), 64, "{args:?}: {}", stderr(&out));
    }
    for args in [vec!["--help"], vec!["build", "--help"], vec!["--version"]] {
        let out = run(builder(&args));
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn bad_store_locations_are_refused_with_the_accepted_forms_and_create_nothing() {
    let t = tempfile::tempdir().unwrap();
    for loc in [
        "S3://bucket/x",
        "gs://bucket",
        "s3:/bucket",
        "File:///srv/x",
        "s3://Bad_Bucket",
    ] {
        let out = run(builder(&["ls", "--store", loc]).current_dir(t.path()));
        assert_eq!(code(&out), 64, "{loc}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("accepted forms: a directory path")
                && err.contains("s3://bucket[/prefix]"),
            "{loc}: {err}"
        );
        // The same through the environment.
        let out = run(builder(&["ls"])
            .env("BUILDER_STORE", loc)
            .current_dir(t.path()));
        assert_eq!(code(&out), 64, "{loc}: {}", stderr(&out));
    }
    assert!(entries(t.path()).is_empty(), "{:?}", entries(t.path()));
    // A directory whose first segment has a colon is still possible, spelled as a path.
    let out = run(builder(&["ls", "--store", "./a:b"]).current_dir(t.path()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(t.path().join("a:b").is_dir());
}

#[test]
fn an_unknown_key_in_service_yaml_fails_the_build_naming_key_and_file() {
    if !have("git") {
        assert!(!ci(), "CI=true but git is missing");
        eprintln!("SKIPPED an_unknown_key_in_service_yaml_fails_the_build: git not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    git_init_with(
        &repo,
        &[
            (
                "deploy/service.yaml",
                "name: typo\nport: 7000\nchekcs: []\n",
            ),
            ("index.html", "<p>hi</p>\n"),
        ],
    );
    let store = t.path().join("store");
    let out = run(builder(&["build", "--store", store.to_str().unwrap(), "--repo"]).arg(&repo));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("chekcs") && err.contains("deploy/service.yaml"),
        "{err}"
    );
    // Refused before anything was stored.
    assert!(!store.join("commits").exists() || entries(&store.join("commits")).is_empty());
    assert!(!store.join("blobs").exists() || entries(&store.join("blobs")).is_empty());
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    for args in [
        vec!["ls"],
        vec!["--show-config"],
        vec!["ls", "--format", "json"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = builder(&args)
            .arg("--store")
            .arg(&store)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?} printed on stderr");
    }
}

#[test]
fn keygen_refuses_before_writing_when_either_file_exists() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("k.pub"), "someone else's\n").unwrap();
    let out = run(builder(&["keygen", "--out"]).arg(t.path().join("k")));
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("never overwrites"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        entries(t.path()),
        ["k.pub"],
        "nothing else written, no temp file"
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("k.pub")).unwrap(),
        "someone else's\n"
    );
}

#[test]
fn a_failed_pack_leaves_neither_output_nor_temp_file() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), vec![b'x'; 1 << 20]).unwrap();
    // A fifo cannot be packed: the command fails after it has opened its output.
    let st = std::process::Command::new("mkfifo")
        .arg(src.join("z-fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    let out_dir = t.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = run(builder(&["pack-dir"])
        .arg(&src)
        .arg(out_dir.join("layer.tgz")));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unsupported file type"),
        "{}",
        stderr(&out)
    );
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));
}

#[test]
fn an_unreachable_store_exits_3_with_a_hint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = run(builder(&[
        "ls",
        "--store",
        "s3://no-such-server",
        "--s3-endpoint",
        &endpoint,
    ])
    .env("AWS_ACCESS_KEY_ID", "test")
    .env("AWS_SECRET_ACCESS_KEY", "test")
    .env("AWS_REGION", "us-east-1"));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hint: check --s3-endpoint"),
        "{}",
        stderr(&out)
    );
}
