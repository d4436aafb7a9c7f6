//! Hostile layers, written byte by byte: every one must be refused with the right error,
//! leave neither a staging directory nor the destination behind, and touch nothing outside.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use artifact::Digest;
use artifact::unpack::{Expected, UnpackError, UnpackLimits, Unpacker};

/// A raw tar stream; headers are written here so anything can be expressed.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn header(
        &mut self,
        name: &[u8],
        typeflag: u8,
        size: u64,
        link: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar ");
        h[263..265].copy_from_slice(b" \0");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
        self
    }
    fn data(&mut self, d: &[u8]) -> &mut Self {
        self.0.extend_from_slice(d);
        let pad = (512 - d.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, pad));
        self
    }
    fn file(&mut self, name: &str, content: &[u8]) -> &mut Self {
        self.header(name.as_bytes(), b'0', content.len() as u64, b"", 0o644)
            .data(content)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.header(name.as_bytes(), b'5', 0, b"", 0o755)
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.header(name.as_bytes(), b'2', 0, target.as_bytes(), 0o777)
    }
    fn end(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.0)
    }
}

fn gz(tar: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

/// One zstd frame with a checksum, as the packer writes them.
fn zst(tar: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .unwrap();
    c.compress(tar).unwrap()
}

/// A temp root with a parent dir (holding the destination) and a sibling dir, both with
/// sentinel files; `clean()` asserts that nothing changed anywhere under the root.
struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dest: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let what = if md.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else {
                format!("file {:?}", std::fs::read(&p).unwrap())
            };
            out.insert(p, what);
        }
    }
    out
}

impl Fx {
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir(root.join("parent")).unwrap();
        std::fs::create_dir(root.join("sibling")).unwrap();
        std::fs::write(root.join("parent/sentinel"), b"parent sentinel").unwrap();
        std::fs::write(root.join("sibling/sentinel"), b"sibling sentinel").unwrap();
        std::fs::write(root.join("top-sentinel"), b"top").unwrap();
        let before = snapshot(&root);
        Fx {
            dest: root.join("parent/release"),
            root,
            _tmp: tmp,
            before,
        }
    }

    fn unpacker(&self, limits: UnpackLimits) -> Unpacker {
        Unpacker::new(&self.dest, limits).unwrap()
    }

    /// Unpacks one layer (and finishes if it was accepted); returns the error.
    fn refuse(&self, layer: &[u8], expected: &Expected, limits: UnpackLimits) -> UnpackError {
        let mut u = self.unpacker(limits);
        let staging = u.staging_dir().to_path_buf();
        assert!(staging.is_dir());
        let err = match u.layer(layer, expected) {
            Ok(stats) => match u.finish() {
                Ok(_) => panic!("hostile layer accepted: {stats:?}"),
                Err(e) => e,
            },
            Err(e) => {
                // Removed eagerly, not only on drop; and the unpacker is spent.
                assert!(!staging.exists(), "staging left after {e}");
                assert!(matches!(
                    u.layer(&gz(&Tar::default().end())[..], &Expected::default()),
                    Err(UnpackError::Spent)
                ));
                assert!(matches!(u.finish(), Err(UnpackError::Spent)));
                e
            }
        };
        self.clean();
        err
    }

    fn clean(&self) {
        assert!(
            std::fs::symlink_metadata(&self.dest).is_err(),
            "destination exists"
        );
        assert_eq!(
            snapshot(&self.root),
            self.before,
            "something changed outside the destination"
        );
    }
}

/// Refuses the archive gzip-compressed (in `fx`) and zstd-compressed (in a fresh fixture),
/// with the same entry and reason either way.
fn refused(fx: &Fx, tar: Vec<u8>) -> (String, String) {
    let refusal = |fx: &Fx, layer: Vec<u8>| match fx.refuse(
        &layer,
        &Expected::default(),
        UnpackLimits::default(),
    ) {
        UnpackError::Refused { path, reason } => (path, reason),
        other => panic!("expected Refused, got {other:?}"),
    };
    let from_gzip = refusal(fx, gz(&tar));
    assert_eq!(refusal(&Fx::new(), zst(&tar)), from_gzip, "zstd differs");
    from_gzip
}

#[test]
fn absolute_path() {
    let fx = Fx::new();
    let target = fx.root.join("sibling/pwned");
    let tar = Tar::default().file(target.to_str().unwrap(), b"x").end();
    let (path, reason) = refused(&fx, tar);
    assert_eq!(path, target.to_str().unwrap());
    assert!(reason.contains("absolute"), "{reason}");
}

#[test]
fn dot_dot_paths() {
    for name in ["../x", "a/../../x", "a/../b", "./../sibling/pwned", ".."] {
        let fx = Fx::new();
        let tar = Tar::default().dir("a").file(name, b"x").end();
        let (path, reason) = refused(&fx, tar);
        assert_eq!(path, name);
        assert!(reason.contains(".."), "{name}: {reason}");
    }
}

#[test]
fn dot_dot_in_gnu_long_name_and_pax_path() {
    let fx = Fx::new();
    let long = format!("{}/../../../sibling/pwned", "a".repeat(120));
    let mut t = Tar::default();
    t.header(b"././@LongLink", b'L', long.len() as u64 + 1, b"", 0o644);
    t.data(format!("{long}\0").as_bytes());
    let tar = t.file("harmless", b"x").end();
    let (path, _) = refused(&fx, tar);
    assert_eq!(path, long);

    let fx = Fx::new();
    let rec = "28 path=../../sibling/pwned\n";
    assert_eq!(rec.len(), 28);
    let mut t = Tar::default();
    t.header(b"PaxHeaders/harmless", b'x', rec.len() as u64, b"", 0o644)
        .data(rec.as_bytes());
    let (path, _) = refused(&fx, t.file("harmless", b"x").end());
    assert_eq!(path, "../../sibling/pwned");
}

#[test]
fn empty_name() {
    let fx = Fx::new();
    let (_, reason) = refused(&fx, Tar::default().file("", b"x").end());
    assert!(reason.contains("empty"), "{reason}");
}

#[test]
fn symlink_pointing_outside_then_a_file_through_it() {
    let fx = Fx::new();
    // From the staging dir (parent/.release.partial-*), ../../sibling is the sibling dir.
    let tar = Tar::default()
        .symlink("l", "../../sibling")
        .file("l/pwned", b"x")
        .end();
    let (path, reason) = refused(&fx, tar);
    assert_eq!(path, "l");
    assert!(reason.contains("leaves"), "{reason}");
}

#[test]
fn file_through_an_inside_symlink() {
    let fx = Fx::new();
    let tar = Tar::default()
        .dir("d")
        .symlink("l", "d")
        .file("l/x", b"x")
        .end();
    let (path, reason) = refused(&fx, tar);
    assert_eq!(path, "l/x");
    assert!(reason.contains("symlink"), "{reason}");
}

#[test]
fn symlink_with_absolute_target() {
    let fx = Fx::new();
    let (path, _) = refused(&fx, Tar::default().symlink("etc", "/etc").end());
    assert_eq!(path, "etc");
}

#[test]
fn symlinks_that_escape_only_together() {
    // d/l -> x/../.. looks like it stays at the root, but once d/x -> .. exists it climbs out.
    let fx = Fx::new();
    let tar = Tar::default()
        .dir("d")
        .symlink("d/l", "x/../..")
        .symlink("d/x", "..")
        .end();
    let (path, reason) = refused(&fx, tar);
    assert_eq!(path, "d/l");
    assert!(reason.contains("leaves"), "{reason}");
    // A chain that loops is refused too.
    let fx = Fx::new();
    let (path, _) = refused(
        &fx,
        Tar::default().symlink("a", "b").symlink("b", "a/x").end(),
    );
    assert!(path == "a" || path == "b", "{path}");
}

#[test]
fn hardlinks() {
    for target in ["/etc/passwd", "../../sibling/sentinel", "inside"] {
        let fx = Fx::new();
        let tar = Tar::default()
            .file("inside", b"x")
            .header(b"link", b'1', 0, target.as_bytes(), 0o644)
            .end();
        let (path, reason) = refused(&fx, tar);
        assert_eq!(path, "link");
        assert!(reason.contains("hardlink"), "{reason}");
    }
}

#[test]
fn devices_and_fifos() {
    for (flag, word) in [(b'3', "character"), (b'4', "block"), (b'6', "fifo")] {
        let fx = Fx::new();
        let (path, reason) = refused(
            &fx,
            Tar::default().header(b"dev", flag, 0, b"", 0o666).end(),
        );
        assert_eq!(path, "dev");
        assert!(reason.contains(word), "{reason}");
    }
    let fx = Fx::new();
    let (_, reason) = refused(
        &fx,
        Tar::default().header(b"sparse", b'S', 0, b"", 0o644).end(),
    );
    assert!(reason.contains("unsupported"), "{reason}");
}

#[test]
fn too_many_entries() {
    let fx = Fx::new();
    let mut t = Tar::default();
    for i in 0..6 {
        t.file(&format!("f{i}"), b"x");
    }
    let limits = UnpackLimits {
        max_entries: 5,
        ..UnpackLimits::default()
    };
    let err = fx.refuse(&gz(&t.end()), &Expected::default(), limits);
    assert!(
        matches!(
            err,
            UnpackError::TooLarge {
                what: "entries",
                limit: 5
            }
        ),
        "{err:?}"
    );
}

#[test]
fn too_many_bytes() {
    let fx = Fx::new();
    let tar = Tar::default()
        .file("a", &[1u8; 600])
        .file("b", &[2u8; 600])
        .end();
    let limits = UnpackLimits {
        max_bytes: 1000,
        ..UnpackLimits::default()
    };
    let err = fx.refuse(&gz(&tar), &Expected::default(), limits);
    assert!(
        matches!(
            err,
            UnpackError::TooLarge {
                what: "bytes",
                limit: 1000
            }
        ),
        "{err:?}"
    );
}

#[test]
fn lying_header_size_is_refused_before_reading() {
    // Claims 64 GiB (base-256 size field) but carries 1 byte.
    let fx = Fx::new();
    let mut t = Tar::default();
    t.header(b"huge", b'0', 0, b"", 0o644);
    let h = t.0.len() - 512;
    t.0[h + 124..h + 136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0]);
    t.0[h + 148..h + 156].fill(b' ');
    let sum: u32 = t.0[h..].iter().map(|&b| u32::from(b)).sum();
    t.0[h + 148..h + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    t.data(b"x");
    let err = fx.refuse(&gz(&t.end()), &Expected::default(), UnpackLimits::default());
    assert!(
        matches!(err, UnpackError::TooLarge { what: "bytes", .. }),
        "{err:?}"
    );
    // A huge GNU long-name record is refused without being read.
    let fx = Fx::new();
    let tar = Tar::default()
        .header(b"././@LongLink", b'L', 1 << 30, b"", 0o644)
        .end();
    let err = fx.refuse(&gz(&tar), &Expected::default(), UnpackLimits::default());
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err:?}");
}

#[test]
fn truncated_archive() {
    let tar = Tar::default()
        .file("a", &[7u8; 100_000])
        .file("b", b"y")
        .end();
    let full = gz(&tar);
    // The compressed stream cut short.
    let fx = Fx::new();
    let err = fx.refuse(
        &full[..full.len() / 2],
        &Expected::default(),
        UnpackLimits::default(),
    );
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err:?}");
    // A complete gzip of a tar cut inside a file.
    let fx = Fx::new();
    let err = fx.refuse(
        &gz(&tar[..50_000]),
        &Expected::default(),
        UnpackLimits::default(),
    );
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err:?}");
    // A complete gzip of a tar without its end-of-archive blocks.
    let fx = Fx::new();
    let err = fx.refuse(
        &gz(&tar[..tar.len() - 1024]),
        &Expected::default(),
        UnpackLimits::default(),
    );
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err:?}");
}

#[test]
fn corrupt_gzip_and_bad_header_checksum() {
    let tar = Tar::default().file("a", b"some content here").end();
    let mut bad = gz(&tar);
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad[mid + 1] ^= 0x55;
    let fx = Fx::new();
    let err = fx.refuse(&bad, &Expected::default(), UnpackLimits::default());
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err:?}");

    let fx = Fx::new();
    let err = fx.refuse(
        b"not gzip at all",
        &Expected::default(),
        UnpackLimits::default(),
    );
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err:?}");

    let mut tar = tar;
    tar[0] = b'b'; // name changed, checksum not updated
    let fx = Fx::new();
    let err = fx.refuse(&gz(&tar), &Expected::default(), UnpackLimits::default());
    assert!(
        matches!(err, UnpackError::Corrupt(ref m) if m.contains("checksum")),
        "{err:?}"
    );
}

fn good_layer() -> (Vec<u8>, Digest) {
    let tar = Tar::default()
        .dir("app")
        .file("app/index.js", b"console.log(1)\n")
        .end();
    (gz(&tar), Digest::of(&tar))
}

#[test]
fn wrong_digest_size_or_diff_id() {
    let (layer, diff_id) = good_layer();
    let digest = Digest::of(&layer);
    let size = layer.len() as u64;
    let other = Digest::of(b"something else");
    let cases = [
        (
            "digest",
            Expected {
                digest: Some(other),
                size: Some(size),
                diff_id: Some(diff_id),
            },
        ),
        (
            "size",
            Expected {
                digest: Some(digest),
                size: Some(size + 1),
                diff_id: Some(diff_id),
            },
        ),
        (
            "size",
            Expected {
                digest: Some(digest),
                size: Some(size - 1),
                diff_id: Some(diff_id),
            },
        ),
        (
            "diff_id",
            Expected {
                digest: Some(digest),
                size: Some(size),
                diff_id: Some(other),
            },
        ),
    ];
    for (which, expected) in cases {
        let fx = Fx::new();
        let err = fx.refuse(&layer, &expected, UnpackLimits::default());
        assert!(
            matches!(err, UnpackError::DigestMismatch { what, .. } if what == which),
            "{which}: {err:?}"
        );
    }
    // Trailing bytes after the gzip member are part of what the digest covers.
    let mut longer = layer.clone();
    longer.extend_from_slice(b"junk");
    let fx = Fx::new();
    let err = fx.refuse(
        &longer,
        &Expected {
            digest: Some(digest),
            ..Expected::default()
        },
        UnpackLimits::default(),
    );
    assert!(
        matches!(
            err,
            UnpackError::Corrupt(_) | UnpackError::DigestMismatch { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn second_layer_overwriting_the_first() {
    let fx = Fx::new();
    let mut u = fx.unpacker(UnpackLimits::default());
    let staging = u.staging_dir().to_path_buf();
    let (layer, _) = good_layer();
    u.layer(&layer[..], &Expected::default()).unwrap();
    // A directory entry for an existing directory is fine; a file over a file is not.
    let second = gz(&Tar::default()
        .dir("app")
        .file("app/index.js", b"evil")
        .end());
    let err = u.layer(&second[..], &Expected::default()).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Refused { path, .. } if path == "app/index.js"),
        "{err:?}"
    );
    assert!(!staging.exists());
    assert!(matches!(u.finish(), Err(UnpackError::Spent)));
    fx.clean();

    // A symlink from the second layer that redirects a directory of the first.
    let fx = Fx::new();
    let mut u = fx.unpacker(UnpackLimits::default());
    u.layer(&layer[..], &Expected::default()).unwrap();
    let second = gz(&Tar::default().symlink("app", "../../sibling").end());
    assert!(matches!(
        u.layer(&second[..], &Expected::default()),
        Err(UnpackError::Refused { .. })
    ));
    drop(u);
    fx.clean();
}

#[test]
fn limits_count_across_layers() {
    let fx = Fx::new();
    let mut u = fx.unpacker(UnpackLimits {
        max_entries: 3,
        ..UnpackLimits::default()
    });
    let (layer, _) = good_layer();
    u.layer(&layer[..], &Expected::default()).unwrap();
    let second = gz(&Tar::default().file("b", b"1").file("c", b"2").end());
    let err = u.layer(&second[..], &Expected::default()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::TooLarge {
                what: "entries",
                ..
            }
        ),
        "{err:?}"
    );
    drop(u);
    fx.clean();
}

#[test]
fn destination_that_exists_or_appears() {
    let fx = Fx::new();
    std::fs::create_dir(&fx.dest).unwrap();
    assert!(matches!(
        Unpacker::new(&fx.dest, UnpackLimits::default()),
        Err(UnpackError::DestinationExists(_))
    ));
    std::fs::remove_dir(&fx.dest).unwrap();
    fx.clean();

    // Appears (even as an empty directory) between layer and finish: never replaced.
    let mut u = fx.unpacker(UnpackLimits::default());
    let staging = u.staging_dir().to_path_buf();
    let (layer, _) = good_layer();
    u.layer(&layer[..], &Expected::default()).unwrap();
    std::fs::create_dir(&fx.dest).unwrap();
    assert!(matches!(u.finish(), Err(UnpackError::DestinationExists(_))));
    assert!(!staging.exists());
    assert_eq!(std::fs::read_dir(&fx.dest).unwrap().count(), 0);
    std::fs::remove_dir(&fx.dest).unwrap();
    fx.clean();
}

#[test]
fn a_good_layer_lands_and_nothing_else_changes() {
    // The control case: the same fixture accepts a valid layer with its digests.
    let fx = Fx::new();
    let (layer, diff_id) = good_layer();
    let expected = Expected {
        digest: Some(Digest::of(&layer)),
        size: Some(layer.len() as u64),
        diff_id: Some(diff_id),
    };
    let mut u = fx.unpacker(UnpackLimits::default());
    let stats = u.layer(&layer[..], &expected).unwrap();
    assert_eq!((stats.entries, stats.bytes), (2, 15));
    u.finish().unwrap();
    assert_eq!(
        std::fs::read(fx.dest.join("app/index.js")).unwrap(),
        b"console.log(1)\n"
    );
    let mut after = snapshot(&fx.root);
    after.retain(|p, _| !p.starts_with(&fx.dest));
    assert_eq!(after, fx.before);
    // Links that stay inside are fine, including `..` back into the tree.
    let fx = Fx::new();
    let tar = Tar::default()
        .dir("./")
        .dir("d")
        .symlink("d/up", "..")
        .symlink("d/l", "up/d/../app")
        .file("app", b"x")
        .end();
    let mut u = fx.unpacker(UnpackLimits::default());
    u.layer(&gz(&tar)[..], &Expected::default()).unwrap();
    u.finish().unwrap();
    assert_eq!(std::fs::read(fx.dest.join("d/l")).unwrap(), b"x");
}

#[test]
fn corrupt_truncated_or_oversized_zstd() {
    let tar = Tar::default()
        .file("a", &[7u8; 100_000])
        .file("b", b"some content here")
        .end();
    let good = zst(&tar);
    // Cut short.
    let fx = Fx::new();
    let err = fx.refuse(
        &good[..good.len() / 2],
        &Expected::default(),
        UnpackLimits::default(),
    );
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err:?}");
    // Damaged in the middle: the frame checksum catches it even with no digest given.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad[mid + 1] ^= 0x55;
    let fx = Fx::new();
    let err = fx.refuse(&bad, &Expected::default(), UnpackLimits::default());
    assert!(
        matches!(err, UnpackError::Corrupt(_) | UnpackError::Refused { .. }),
        "{err:?}"
    );
    // Garbage after the last frame.
    let mut tail = good.clone();
    tail.extend_from_slice(b"garbage after the frames");
    let fx = Fx::new();
    let err = fx.refuse(&tail, &Expected::default(), UnpackLimits::default());
    assert!(matches!(err, UnpackError::Corrupt(_)), "{err:?}");
    // A frame that asks for a 1 GiB window: refused before anything that large is allocated.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(30))
        .unwrap();
    enc.write_all(&tar).unwrap();
    let wide = enc.finish().unwrap();
    let fx = Fx::new();
    let err = fx.refuse(&wide, &Expected::default(), UnpackLimits::default());
    assert!(
        matches!(err, UnpackError::Corrupt(ref m) if m.contains("decompressing")),
        "{err:?}"
    );
    // Empty input and a bare magic number.
    for layer in [&b""[..], &[0x28, 0xb5, 0x2f, 0xfd][..]] {
        let fx = Fx::new();
        let err = fx.refuse(layer, &Expected::default(), UnpackLimits::default());
        assert!(matches!(err, UnpackError::Corrupt(_)), "{err:?}");
    }
}

#[test]
fn zstd_and_gzip_layers_of_the_same_tar_agree() {
    let (gzip, _) = good_layer();
    let tar = {
        use std::io::Read;
        let mut t = Vec::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_end(&mut t)
            .unwrap();
        t
    };
    let zstd = zst(&tar);
    let diff_id = Digest::of(&tar);
    let mut trees = Vec::new();
    for layer in [gzip, zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("release");
        let mut u = Unpacker::new(&dest, UnpackLimits::default()).unwrap();
        let expected = Expected {
            digest: Some(Digest::of(&layer)),
            size: Some(layer.len() as u64),
            diff_id: Some(diff_id),
        };
        u.layer(&layer[..], &expected).unwrap();
        u.finish().unwrap();
        let snap: BTreeMap<PathBuf, String> = snapshot(&dest)
            .into_iter()
            .map(|(p, v)| (p.strip_prefix(&dest).unwrap().to_path_buf(), v))
            .collect();
        trees.push(snap);
        drop(tmp);
    }
    assert_eq!(trees[0], trees[1]);
    assert!(!trees[0].is_empty());
}

#[test]
fn a_writer_thread_failure_refuses_the_layer() {
    // A name longer than the file system allows (255 bytes): the writer thread's create fails.
    let long = format!("dir/{}", "n".repeat(300));
    let mut tar = Tar::default();
    tar.dir("dir").file("dir/ok", b"fine");
    tar.header(b"././@LongLink", b'L', long.len() as u64 + 1, b"", 0o644)
        .data(format!("{long}\0").as_bytes());
    tar.file("placeholder", b"x");
    for i in 0..200 {
        tar.file(&format!("dir/after-{i}"), b"more");
    }
    let tar = tar.end();
    for writers in [0, 1, 4] {
        for layer in [gz(&tar), zst(&tar)] {
            let fx = Fx::new();
            let mut u = fx.unpacker(UnpackLimits::default()).with_writers(writers);
            let staging = u.staging_dir().to_path_buf();
            let err = u.layer(&layer[..], &Expected::default()).unwrap_err();
            assert!(
                matches!(&err, UnpackError::Io { source, .. }
                    if source.raw_os_error() == Some(libc::ENAMETOOLONG)),
                "writers {writers}: {err:?}"
            );
            assert!(!staging.exists(), "staging left after {err}");
            assert!(matches!(u.finish(), Err(UnpackError::Spent)));
            fx.clean();
        }
    }
}

#[test]
fn scan_layer_lists_gzip_and_zstd_layers_and_refuses_a_tampered_or_escaping_one() {
    use artifact::unpack::{EntryKind, scan_layer};
    let tar = Tar::default()
        .dir("./app")
        .file("app/index.js", b"console.log(1)\n")
        .file("app/big.bin", &[7u8; 2048])
        .symlink("app/link", "index.js")
        .end();
    for layer in [gz(&tar), zst(&tar)] {
        let expected = Expected {
            digest: Some(Digest::of(&layer)),
            size: Some(layer.len() as u64),
            diff_id: Some(Digest::of(&tar)),
        };
        let got = scan_layer(
            &layer[..],
            &expected,
            &|p| p.ends_with(".js") || p.ends_with(".bin"),
            1024,
        )
        .unwrap();
        let listed: Vec<_> = got.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        assert_eq!(
            listed,
            [
                ("app", EntryKind::Dir),
                ("app/index.js", EntryKind::File),
                ("app/big.bin", EntryKind::File),
                ("app/link", EntryKind::Symlink),
            ]
        );
        assert_eq!(got[1].data.as_deref(), Some(&b"console.log(1)\n"[..]));
        assert_eq!(got[1].digest, Some(Digest::of(b"console.log(1)\n")));
        // Over max_keep: hashed, not kept.
        assert_eq!((got[2].data.as_deref(), got[2].size), (None, 2048));
        assert_eq!(got[2].digest, Some(Digest::of(&[7u8; 2048])));
        assert_eq!(got[3].digest, Some(Digest::of(b"index.js")));

        // The same bytes under another expected digest: nothing is returned.
        let wrong = Expected {
            digest: Some(Digest::of(b"another layer")),
            ..expected.clone()
        };
        let err = scan_layer(&layer[..], &wrong, &|_| true, 1024).unwrap_err();
        assert!(
            matches!(err, UnpackError::DigestMismatch { what: "digest", .. }),
            "{err:?}"
        );
    }
    let escaping = gz(&Tar::default().file("../etc/passwd", b"x").end());
    let err = scan_layer(&escaping[..], &Expected::default(), &|_| true, 1024).unwrap_err();
    assert!(
        matches!(err, UnpackError::Corrupt(ref m) if m.contains("..")),
        "{err:?}"
    );
}
