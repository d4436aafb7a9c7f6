//! Pins the layer formats (gzip, format 1; zstd, format 2): a fixed tree must pack to the same
//! bytes on any machine, with any thread count, from the filesystem or from an entry list, and
//! must round-trip through the unpacker and list cleanly with GNU tar (and gzip or zstd).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use artifact::Digest;
use artifact::pack::{
    CHUNK_SIZE, FORMAT_VERSION, LayerCompression, PackData, PackEntry, PackError, PackKind,
    PackOptions, ZSTD_CHUNK_SIZE, pack_dir, pack_entries, walk_dir,
};
use artifact::unpack::{Expected, UnpackLimits, Unpacker};

// Changing a digest here means the layer bytes changed for the same input: that is a new
// layer format (a new `LayerCompression` format version, part of dependency-layer keys, and
// a new media type), never an edit of these constants alone. The compressed digests also move
// when the compressor (flate2 / zlib-rs, the zstd library) changes its output: the lock file
// pins both. GOLDEN_DIFF_ID only moves when the tar layout does; it is the same for both.
const GOLDEN_DIFF_ID: &str =
    "sha256:60cb1807c2db0b537ce2aa4fb1760050c78572606692dad0777a5aaef9f774cb";
/// gzip level 6, layer format 1 (unchanged since format 1 was introduced).
const GOLDEN_GZIP_DIGEST: &str =
    "sha256:f4007d718309968bc5a7ae9e1c2fb79bada716448de23ad6f96a3b187efd8ba0";
/// zstd level 3, layer format 2.
const GOLDEN_ZSTD_DIGEST: &str =
    "sha256:1b07085cd448e27071c8c347d957ad71b68fd8dc6d02300fc01f66fc30ff3fc1";

const BOTH: [LayerCompression; 2] = [LayerCompression::Gzip, LayerCompression::Zstd];

const MTIME: u64 = 1_700_000_000;

fn long_dir() -> String {
    format!("deep/{}", "d".repeat(60))
}
fn long_file() -> String {
    format!("{}/{}.js", long_dir(), "f".repeat(70))
}
/// A relative target longer than 100 bytes, from `links/far`.
fn long_target() -> String {
    format!("../{}", long_file())
}

/// Deterministic pseudo-random bytes (poorly compressible, bigger than one chunk).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The fixed content: (path, kind) with file bytes inline.
fn content() -> Vec<PackEntry> {
    let file = |path: &str, data: Vec<u8>, executable: bool| PackEntry {
        path: path.to_string(),
        kind: PackKind::File {
            data: PackData::Bytes(data),
            executable,
        },
    };
    let link = |path: &str, target: &str| PackEntry {
        path: path.to_string(),
        kind: PackKind::Symlink {
            target: target.to_string(),
        },
    };
    vec![
        file("a.txt", b"hello\n".to_vec(), false),
        file("bin/run.sh", b"#!/bin/sh\necho hi\n".to_vec(), true),
        link("bin/link", "run.sh"),
        PackEntry {
            path: "empty".into(),
            kind: PackKind::Dir,
        },
        file(&long_file(), b"module.exports = 42;\n".to_vec(), false),
        link("links/far", &long_target()),
        file(
            "\u{fc}n\u{ef}c\u{f8}d\u{e9}/\u{6587}\u{4ef6}.txt",
            "unicode \u{2713}\n".as_bytes().to_vec(),
            false,
        ),
        file("big/noise.bin", noise(3 << 20), false),
        file("big/zeros.bin", vec![0u8; 2 << 20], false),
        file("zero-length", Vec::new(), false),
    ]
}

/// Writes `content()` to `root` (with odd permission bits the packer must normalise).
fn build_tree(root: &Path) {
    for e in content() {
        let p = root.join(&e.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        match e.kind {
            PackKind::Dir => std::fs::create_dir_all(&p).unwrap(),
            PackKind::Symlink { target } => std::os::unix::fs::symlink(target, &p).unwrap(),
            PackKind::File {
                data: PackData::Bytes(b),
                executable,
            } => {
                std::fs::write(&p, b).unwrap();
                let mode = if executable { 0o750 } else { 0o664 };
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            PackKind::File { .. } => unreachable!(),
        }
    }
}

fn opts(c: LayerCompression, threads: usize) -> PackOptions {
    PackOptions {
        mtime: MTIME,
        threads,
        ..PackOptions::with_compression(c)
    }
}

fn pack_tree(
    root: &Path,
    c: LayerCompression,
    threads: usize,
) -> (Vec<u8>, artifact::pack::LayerInfo) {
    let mut out = Vec::new();
    let info = pack_dir(root, "", &opts(c, threads), &mut out).unwrap();
    (out, info)
}

fn decompress(c: LayerCompression, bytes: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    match c {
        LayerCompression::Gzip => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut tar)
                .unwrap();
        }
        LayerCompression::Zstd => {
            zstd::stream::read::Decoder::new(bytes)
                .unwrap()
                .read_to_end(&mut tar)
                .unwrap();
        }
    }
    tar
}

#[test]
fn golden_digests_are_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    assert_eq!(FORMAT_VERSION, 2, "the newest format is zstd's");
    assert_eq!(LayerCompression::default(), LayerCompression::Zstd);
    let pinned = [
        (
            LayerCompression::Gzip,
            1,
            "application/vnd.restbase-deploy.layer.v1.tar+gzip",
            GOLDEN_GZIP_DIGEST,
        ),
        (
            LayerCompression::Zstd,
            2,
            "application/vnd.restbase-deploy.layer.v2.tar+zstd",
            GOLDEN_ZSTD_DIGEST,
        ),
    ];
    for (c, format, media_type, digest) in pinned {
        assert_eq!(c.format_version(), format, "{c}");
        assert_eq!(c.media_type(), media_type, "{c}");
        assert_eq!(LayerCompression::from_media_type(media_type), Some(c));
        let (bytes, info) = pack_tree(tmp.path(), c, 2);
        assert_eq!(
            info.diff_id.to_string(),
            GOLDEN_DIFF_ID,
            "{c}: tar bytes changed"
        );
        assert_eq!(
            info.digest.to_string(),
            digest,
            "{c}: compressed bytes changed"
        );
        assert_eq!(info.size, bytes.len() as u64);
        assert_eq!(info.digest, Digest::of(&bytes));
        match c {
            // The gzip header carries no name and no time.
            LayerCompression::Gzip => {
                assert_eq!(&bytes[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])
            }
            LayerCompression::Zstd => assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd]),
        }
        // The tar inside is what diff_id names.
        let tar = decompress(c, &bytes);
        assert_eq!(Digest::of(&tar), info.diff_id);
        assert_eq!(tar.len() as u64, info.tar_size);
        // 10 content entries + implicit dirs: bin, deep, deep/ddd, links, unicode dir, big.
        assert_eq!(info.entries, 16);
    }
    assert_eq!(LayerCompression::from_media_type("application/x-tar"), None);
}

#[test]
fn output_does_not_depend_on_threads() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    for (c, chunk) in [
        (LayerCompression::Gzip, CHUNK_SIZE),
        (LayerCompression::Zstd, ZSTD_CHUNK_SIZE),
    ] {
        let (one, info1) = pack_tree(tmp.path(), c, 1);
        let (four, info4) = pack_tree(tmp.path(), c, 4);
        let (seven, info7) = pack_tree(tmp.path(), c, 7);
        assert_eq!(info1, info4);
        assert_eq!(info1, info7);
        assert!(one == four && one == seven, "{c}");
        assert!(
            info1.tar_size > chunk as u64,
            "{c}: the tree must span several compression chunks"
        );
    }
}

#[test]
fn compression_and_level_change_digest_not_diff_id() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    let mut digests = std::collections::BTreeSet::new();
    for (c, level) in [
        (LayerCompression::Gzip, 1),
        (LayerCompression::Gzip, 6),
        (LayerCompression::Zstd, 1),
        (LayerCompression::Zstd, 3),
    ] {
        let info = pack_dir(
            tmp.path(),
            "",
            &PackOptions {
                level,
                ..opts(c, 2)
            },
            std::io::sink(),
        )
        .unwrap();
        assert_eq!(info.diff_id.to_string(), GOLDEN_DIFF_ID, "{c} {level}");
        assert!(
            digests.insert(info.digest),
            "{c} {level}: same digest as another"
        );
    }
}

#[test]
fn pack_dir_equals_pack_entries_of_the_same_content() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    for c in BOTH {
        let (from_dir, dir_info) = pack_tree(tmp.path(), c, 2);
        // Reversed order, no implicit directories: the packer sorts and adds them.
        let mut entries = content();
        entries.reverse();
        let mut from_list = Vec::new();
        let list_info = pack_entries(entries, &opts(c, 2), &mut from_list).unwrap();
        assert_eq!(dir_info, list_info);
        assert!(from_dir == from_list, "{c}");
    }
}

#[test]
fn walk_dir_prefixes_and_does_not_follow_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    let entries = walk_dir(tmp.path(), "node_modules").unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths[0], "node_modules");
    assert!(
        paths.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()),
        "sorted"
    );
    assert!(
        paths
            .iter()
            .all(|p| *p == "node_modules" || p.starts_with("node_modules/"))
    );
    let link = entries
        .iter()
        .find(|e| e.path == "node_modules/bin/link")
        .unwrap();
    assert!(matches!(&link.kind, PackKind::Symlink { target } if target == "run.sh"));
    let exe = entries
        .iter()
        .find(|e| e.path == "node_modules/bin/run.sh")
        .unwrap();
    assert!(matches!(
        exe.kind,
        PackKind::File {
            executable: true,
            ..
        }
    ));
}

#[test]
fn round_trip_through_the_unpacker() {
    for c in BOTH {
        for writers in [0, 3] {
            round_trip(c, writers);
        }
    }
}

fn round_trip(c: LayerCompression, writers: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    let (bytes, info) = pack_tree(&src, c, 2);
    let dest = tmp.path().join("release");
    let mut u = Unpacker::new(&dest, UnpackLimits::default())
        .unwrap()
        .with_writers(writers);
    let expected = Expected {
        digest: Some(info.digest),
        size: Some(info.size),
        diff_id: Some(info.diff_id),
    };
    let stats = u.layer(&bytes[..], &expected).unwrap();
    assert_eq!(stats.entries, info.entries);
    u.finish().unwrap();

    let mode = |p: &str| {
        std::fs::symlink_metadata(dest.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    for e in content() {
        let p = dest.join(&e.path);
        match e.kind {
            PackKind::Dir => assert!(
                std::fs::symlink_metadata(&p).unwrap().is_dir(),
                "{}",
                e.path
            ),
            PackKind::Symlink { target } => {
                assert_eq!(
                    std::fs::read_link(&p).unwrap().to_str().unwrap(),
                    target,
                    "{}",
                    e.path
                )
            }
            PackKind::File {
                data: PackData::Bytes(b),
                executable,
            } => {
                assert_eq!(std::fs::read(&p).unwrap(), b, "{}", e.path);
                assert_eq!(
                    mode(&e.path),
                    if executable { 0o755 } else { 0o644 },
                    "{}",
                    e.path
                );
            }
            PackKind::File { .. } => unreachable!(),
        }
    }
    assert_eq!(mode("bin"), 0o755);
    assert_eq!(mode("empty"), 0o755);
    assert_eq!(std::fs::read_dir(dest.join("empty")).unwrap().count(), 0);
    // The long symlink target resolves to the long file.
    assert_eq!(
        std::fs::read(dest.join("links/far")).unwrap(),
        b"module.exports = 42;\n"
    );
    // Re-packing the extracted tree gives the same layer.
    let (again, again_info) = pack_tree(&dest, c, 1);
    assert_eq!(again_info, info);
    assert!(again == bytes, "{c}");
}

/// Runs a required external binary; skips (false) outside CI when it is missing.
fn have(bin: &str) -> bool {
    let found = Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{bin} is required when CI=true"
        );
        eprintln!("SKIPPED: {bin} not found");
    }
    found
}

#[test]
fn gnu_tar_gzip_and_zstd_read_the_layer() {
    for (c, tool, flag) in [
        (LayerCompression::Gzip, "gzip", "--gzip"),
        (LayerCompression::Zstd, "zstd", "--zstd"),
    ] {
        if have("tar") && have(tool) {
            read_with_gnu_tools(c, tool, flag);
        }
    }
}

fn read_with_gnu_tools(c: LayerCompression, tool: &str, flag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    let layer = tmp.path().join("layer.tgz");
    let (bytes, _) = pack_tree(&src, c, 2);
    std::fs::write(&layer, &bytes).unwrap();

    let test = Command::new(tool).arg("-t").arg(&layer).output().unwrap();
    assert!(
        test.status.success(),
        "{tool} -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );

    let list = Command::new("tar")
        .env("LC_ALL", "C.UTF-8")
        .arg(flag)
        .arg("-tvf")
        .arg(&layer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&list.stderr);
    assert!(
        list.status.success() && stderr.is_empty(),
        "tar {flag} -tvf failed: {stderr}"
    );
    let listing = String::from_utf8(list.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 16, "{listing}");
    assert!(
        lines.iter().all(|l| l.contains(" 0/0 ")),
        "owner 0/0 without names:\n{listing}"
    );
    assert!(
        lines.iter().all(|l| l.contains("2023-11-14")),
        "fixed mtime:\n{listing}"
    );
    let line = |suffix: &str| {
        lines
            .iter()
            .find(|l| l.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix:?} in:\n{listing}"))
    };
    assert!(line(" bin/run.sh").starts_with("-rwxr-xr-x"));
    assert!(line(" a.txt").starts_with("-rw-r--r--"));
    assert!(line(" empty/").starts_with("drwxr-xr-x"));
    assert!(line(" bin/link -> run.sh").starts_with("lrwxrwxrwx"));
    line(&format!(" {}", long_file()));
    line(&format!(" links/far -> {}", long_target()));
    line(" \u{fc}n\u{ef}c\u{f8}d\u{e9}/\u{6587}\u{4ef6}.txt");

    let out = tmp.path().join("x");
    std::fs::create_dir(&out).unwrap();
    let x = Command::new("tar")
        .arg(flag)
        .arg("-xf")
        .arg(&layer)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    assert_eq!(
        std::fs::read(out.join(long_file())).unwrap(),
        b"module.exports = 42;\n"
    );
    assert_eq!(
        std::fs::read(out.join("big/noise.bin")).unwrap(),
        noise(3 << 20)
    );
}

#[test]
fn invalid_entries_are_refused() {
    let f = |path: &str| PackEntry {
        path: path.to_string(),
        kind: PackKind::File {
            data: PackData::Bytes(b"x".to_vec()),
            executable: false,
        },
    };
    let l = |path: &str, target: &str| PackEntry {
        path: path.to_string(),
        kind: PackKind::Symlink {
            target: target.to_string(),
        },
    };
    let pack = |entries: Vec<PackEntry>| {
        pack_entries(
            entries,
            &opts(LayerCompression::default(), 1),
            std::io::sink(),
        )
    };
    for bad in [
        "", "/abs", "a/../b", "..", "./a", "a//b", "a/", "a/./b", "nul\0",
    ] {
        assert!(
            matches!(pack(vec![f(bad)]), Err(PackError::BadPath(p)) if p == bad),
            "{bad:?}"
        );
    }
    assert!(matches!(pack(vec![f("a"), f("b"), f("a")]), Err(PackError::Duplicate(p)) if p == "a"));
    // A path below a file or a symlink.
    assert!(matches!(pack(vec![f("a"), f("a/b")]), Err(PackError::BadPath(p)) if p == "a/b"));
    assert!(matches!(pack(vec![l("a", "."), f("a/b")]), Err(PackError::BadPath(p)) if p == "a/b"));
    // Symlinks leaving the layer, directly or through another symlink.
    assert!(matches!(
        pack(vec![l("a", "/etc/passwd")]),
        Err(PackError::BadLink { .. })
    ));
    assert!(matches!(
        pack(vec![l("d/a", "../../x")]),
        Err(PackError::BadLink { .. })
    ));
    assert!(
        matches!(pack(vec![l("d/up", ".."), l("d/l", "up/../x")]), Err(PackError::BadLink { path, .. }) if path == "d/l")
    );
    assert!(pack(vec![l("d/up", ".."), l("d/l", "up/x")]).is_ok());
    assert!(matches!(
        pack(vec![l("a", "")]),
        Err(PackError::BadLink { .. })
    ));
}

#[test]
fn special_missing_or_changing_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = |p: &Path| {
        vec![PackEntry {
            path: "f".into(),
            kind: PackKind::File {
                data: PackData::Path(p.to_path_buf()),
                executable: false,
            },
        }]
    };
    let pack = |entries| {
        pack_entries(
            entries,
            &opts(LayerCompression::default(), 2),
            std::io::sink(),
        )
    };
    // A directory where a file was expected.
    assert!(matches!(
        pack(file(tmp.path())),
        Err(PackError::Unsupported(_))
    ));
    assert!(matches!(
        pack(file(&tmp.path().join("missing"))),
        Err(PackError::Io { .. })
    ));
    // A file whose size is not what stat said (procfs reports 0 and then has content).
    let err = pack(file(Path::new("/proc/self/status"))).unwrap_err();
    assert!(
        matches!(&err, PackError::Io { source, .. } if source.to_string().contains("grew")),
        "{err:?}"
    );
    // A fifo is refused without blocking on open, and walk_dir refuses it too.
    if have("mkfifo") {
        let fifo = tmp.path().join("fifo");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(pack(file(&fifo)), Err(PackError::Unsupported(_))));
        assert!(matches!(walk_dir(tmp.path(), ""), Err(PackError::Unsupported(p)) if p == fifo));
    }
}

/// A writer that fails after `left` bytes.
struct Failing {
    left: usize,
}

impl std::io::Write for Failing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_output_error_stops_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    for (c, threads, left) in BOTH
        .into_iter()
        .flat_map(|c| [(c, 1, 0), (c, 2, 100), (c, 4, 1 << 20)])
    {
        let err = pack_dir(tmp.path(), "", &opts(c, threads), Failing { left }).unwrap_err();
        assert!(
            matches!(&err, PackError::Io { source, .. } if source.to_string() == "disk full"),
            "{err:?}"
        );
    }
}

#[test]
fn layers_made_by_gnu_tar_unpack() {
    if !have("tar") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    let layer = tmp.path().join("gnu.tgz");
    let c = Command::new("tar")
        .arg("-czf")
        .arg(&layer)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let dest = tmp.path().join("release");
    let mut u = Unpacker::new(&dest, UnpackLimits::default()).unwrap();
    u.layer(std::fs::File::open(&layer).unwrap(), &Expected::default())
        .unwrap();
    u.finish().unwrap();
    // Same content as the source tree: re-packing gives the same diff_id.
    let (_, from_src) = pack_tree(&src, LayerCompression::default(), 1);
    let (_, from_dest) = pack_tree(&dest, LayerCompression::default(), 1);
    assert_eq!(from_src.diff_id, from_dest.diff_id);
}
