//! The target's layer store on real files: releases share each layer's tree by hard links, a
//! source-only change downloads only its source, pruning keeps a tree another release uses,
//! and a killed fetch or a hostile layer leaves nothing a later fetch trusts.

use std::fs;
use std::path::Path;

use artifact::Digest;
use model::names::CommitId;

use super::*;
use crate::protocol::ReleaseRef;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use artifact::manifest::{Layer, LayerKind, Manifest, SourceInfo};
use artifact::store::fs::FsStore;
use artifact::store::{PutBody, Store};
use artifact::unpack::UnpackLimits;

/// One entry of a test layer: a file (path, body) or a symlink (path, `-> target`).
type Entry<'a> = (&'a str, &'a str);

/// A gzip layer of `entries` (a body starting `-> ` makes a symlink), stored in `store`.
fn layer(store: &FsStore, kind: LayerKind, entries: &[Entry]) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        if let Some(target) = body.strip_prefix("-> ") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, path, target).unwrap();
        } else {
            h.set_size(body.len() as u64);
            h.set_cksum();
            tar.append_data(&mut h, path, body.as_bytes()).unwrap();
        }
    }
    let plain = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    let blob = gz.finish().unwrap();
    let digest = Digest::of(&blob);
    store
        .put_if_absent(
            &artifact::keys::blob(&digest),
            PutBody::Bytes(blob.clone()),
            None,
        )
        .unwrap();
    Layer {
        kind,
        media_type: "application/vnd.restbase-deploy.layer.v1.tar+gzip".into(),
        digest,
        size: blob.len() as u64,
        diff_id: Digest::of(&plain),
        entries: entries.len() as u64,
    }
}

/// The manifest of commit `c...c` with these layers, and its digest.
fn manifest(c: char, layers: Vec<Layer>) -> (Digest, Manifest) {
    let m = Manifest {
        format: artifact::manifest::MANIFEST_FORMAT,
        service: "svc".into(),
        source: SourceInfo {
            commit: c.to_string().repeat(40),
            tree: "0".repeat(40),
            commit_time: 0,
            author: "a <a@example.org>".into(),
            subject: "s".into(),
        },
        layers,
        platform: None,
        deps: None,
        storage: None,
        labels: Default::default(),
    };
    (Digest::of(&m.to_canonical_json()), m)
}

const DEPS: &[Entry] = &[
    ("node_modules/dep/package.json", "{\"name\":\"dep\"}"),
    ("node_modules/dep/index.js", "module.exports = 1;\n"),
    ("node_modules/.bin/dep", "-> ../dep/index.js"),
];

fn source(rev: &str) -> Vec<(String, String)> {
    vec![
        ("deploy/service.yaml".into(), "name: svc\n".into()),
        ("REVISION".into(), rev.into()),
    ]
}

fn src_layer(store: &FsStore, rev: &str) -> Layer {
    let s = source(rev);
    let e: Vec<Entry> = s.iter().map(|(p, b)| (p.as_str(), b.as_str())).collect();
    layer(store, LayerKind::Source, &e)
}

struct Bed {
    _dir: tempfile::TempDir,
    store: FsStore,
    root: HostRoot,
}

fn layer_bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("store")).unwrap();
    let root = HostRoot::new(dir.path().join("host"));
    Bed {
        _dir: dir,
        store,
        root,
    }
}

impl Bed {
    fn fetch(&self, m: &(Digest, Manifest)) -> Result<crate::protocol::FetchReport, HostError> {
        self.root
            .fetch(&self.store, &m.0, &m.1, UnpackLimits::default())
    }

    fn release(&self, m: &(Digest, Manifest)) -> ReleaseRef {
        ReleaseRef {
            commit: CommitId::parse(&m.1.source.commit).unwrap(),
            manifest: m.0,
        }
    }

    fn tree(&self, l: &Layer) -> std::path::PathBuf {
        self.root.root().join("layers").join(l.digest.hex())
    }

    /// Everything under the host root but logs, as sorted relative paths.
    fn listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        let base = self.root.root();
        let mut stack = vec![base.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if rel == "state.json" || rel.starts_with("run/") {
                    continue;
                }
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                }
                out.push(rel);
            }
        }
        out.sort();
        out
    }
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

#[test]
fn two_releases_share_the_dependency_tree_by_hard_links_and_a_source_change_downloads_only_its_source()
 {
    let b = layer_bed();
    let deps = layer(&b.store, LayerKind::Deps, DEPS);
    let a = manifest('a', vec![src_layer(&b.store, "a"), deps.clone()]);
    let c = manifest('c', vec![src_layer(&b.store, "c"), deps.clone()]);
    let ra = b.fetch(&a).unwrap();
    assert_eq!(ra.downloaded, a.1.layers[0].size + deps.size, "{ra:?}");
    let rc = b.fetch(&c).unwrap();
    // Only the source layer moved; the dependency tree was already on the host.
    assert_eq!(rc.downloaded, c.1.layers[0].size, "{rc:?}");
    assert_eq!(rc.entries, ra.entries, "{rc:?} {ra:?}");
    let f = "node_modules/dep/index.js";
    let (pa, pc) = (
        b.root.release_dir(&a.1.source.commit).join(f),
        b.root.release_dir(&c.1.source.commit).join(f),
    );
    assert_eq!(ino(&pa), ino(&pc), "not the same inode");
    assert_eq!(ino(&pa), ino(&b.tree(&deps).join(f)));
    assert_eq!(fs::metadata(&pa).unwrap().nlink(), 3, "tree + two releases");
    // Shared files are read-only; each release's own directories are its own.
    assert_eq!(
        fs::metadata(&pa).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_ne!(ino(pa.parent().unwrap()), ino(pc.parent().unwrap()));
    // The source differs; the symlink is recreated in each release.
    let rev = |m: &(Digest, Manifest)| {
        fs::read_to_string(b.root.release_dir(&m.1.source.commit).join("REVISION")).unwrap()
    };
    assert_eq!((rev(&a), rev(&c)), ("a".to_string(), "c".to_string()));
    let link = b
        .root
        .release_dir(&c.1.source.commit)
        .join("node_modules/.bin/dep");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("../dep/index.js"));
    assert_eq!(fs::read_to_string(&link).unwrap(), "module.exports = 1;\n");
    // The release records the layers it links.
    let meta = b.root.release_meta(&c.1.source.commit).unwrap();
    assert_eq!(meta.layers, vec![c.1.layers[0].digest, deps.digest]);
    // Fetching again is a no-op.
    assert!(b.fetch(&c).unwrap().cached);
}

#[test]
fn pruning_a_release_keeps_the_tree_another_uses_and_pruning_its_last_user_removes_it() {
    let b = layer_bed();
    let deps = layer(&b.store, LayerKind::Deps, DEPS);
    let deps2 = layer(
        &b.store,
        LayerKind::Deps,
        &[("node_modules/dep/index.js", "module.exports = 2;\n")],
    );
    let a = manifest('a', vec![src_layer(&b.store, "a"), deps.clone()]);
    let c = manifest('c', vec![src_layer(&b.store, "c"), deps.clone()]);
    let e = manifest('e', vec![src_layer(&b.store, "e"), deps2.clone()]);
    b.fetch(&a).unwrap();
    b.fetch(&c).unwrap();
    b.root.switch(&b.release(&c)).unwrap();
    let r = b.root.prune(0).unwrap();
    assert_eq!(r.removed, vec![a.1.source.commit.clone()], "{r:?}");
    assert_eq!(r.layers_removed, vec![a.1.layers[0].digest], "{r:?}");
    assert_eq!(r.layers_kept, 2, "{r:?}");
    assert!(!b.root.release_dir(&a.1.source.commit).exists());
    // The release still using the tree works: its files and the tree are intact.
    let f = b
        .root
        .release_dir(&c.1.source.commit)
        .join("node_modules/dep/index.js");
    assert_eq!(fs::read_to_string(&f).unwrap(), "module.exports = 1;\n");
    assert!(b.tree(&deps).join("node_modules/dep/index.js").is_file());
    assert_eq!(fs::metadata(&f).unwrap().nlink(), 2);
    // A third release with other dependencies; once it is current, c's trees have no user.
    b.fetch(&e).unwrap();
    b.root.switch(&b.release(&e)).unwrap();
    let r = b.root.prune(0).unwrap();
    assert_eq!(r.removed, vec![c.1.source.commit.clone()], "{r:?}");
    let mut gone = r.layers_removed.clone();
    gone.sort();
    let mut want = vec![c.1.layers[0].digest, deps.digest];
    want.sort();
    assert_eq!(gone, want, "{r:?}");
    for l in [&deps, &c.1.layers[0]] {
        assert!(!b.tree(l).exists(), "{} left", l.digest);
        assert!(
            !b.root
                .root()
                .join("cache/blobs/sha256")
                .join(l.digest.hex())
                .exists()
        );
    }
    assert_eq!(
        fs::read_to_string(
            b.root
                .release_dir(&e.1.source.commit)
                .join("node_modules/dep/index.js")
        )
        .unwrap(),
        "module.exports = 2;\n"
    );
    // Nothing left but what e uses.
    let l = b.listing();
    assert!(
        l.iter()
            .filter(|p| p.starts_with("layers/") && !p[7..].contains('/') && *p != "layers/.lock")
            .all(|p| p.contains(&deps2.digest.hex()) || p.contains(&e.1.layers[0].digest.hex())),
        "{l:#?}"
    );
}

#[test]
fn a_fetch_killed_mid_layer_leaves_nothing_a_later_fetch_trusts() {
    let b = layer_bed();
    let deps = layer(&b.store, LayerKind::Deps, DEPS);
    let a = manifest('a', vec![src_layer(&b.store, "a"), deps.clone()]);
    // The store's blob cut half way (a connection that died): refused, nothing kept.
    let key = artifact::keys::blob(&deps.digest);
    let blob_path = b.root.root().parent().unwrap().join("store").join(&key);
    let whole = fs::read(&blob_path).unwrap();
    fs::write(&blob_path, &whole[..whole.len() / 2]).unwrap();
    let e = b.fetch(&a).unwrap_err();
    assert!(matches!(e, HostError::Unpack(_)), "{e}");
    assert!(!b.tree(&deps).exists());
    assert!(!b.root.release_dir(&a.1.source.commit).exists());
    let l = b.listing();
    assert!(
        l.iter().all(|p| !p.contains(".partial-")),
        "staging left: {l:#?}"
    );
    fs::write(&blob_path, &whole).unwrap();
    // What a killed process leaves (no destructor ran): a staging directory, and a tree
    // renamed into place whose record was never written, holding a file of another build.
    let layers = b.root.root().join("layers");
    let staging = layers.join(format!(".{}.partial-0123456789abcdef", deps.digest.hex()));
    fs::create_dir_all(staging.join("node_modules")).unwrap();
    fs::create_dir_all(b.tree(&deps).join("node_modules/dep")).unwrap();
    fs::write(b.tree(&deps).join("node_modules/dep/index.js"), "half").unwrap();
    fs::write(b.tree(&deps).join("node_modules/stale.js"), "stale").unwrap();
    b.fetch(&a).unwrap();
    let rel = b.root.release_dir(&a.1.source.commit);
    assert_eq!(
        fs::read_to_string(rel.join("node_modules/dep/index.js")).unwrap(),
        "module.exports = 1;\n"
    );
    assert!(!rel.join("node_modules/stale.js").exists());
    assert!(
        !staging.exists(),
        "the killed fetch's staging was not swept"
    );
    // A recorded tree that changed on the host (a file removed) is not linked as it is: the
    // fetch notices the count, unpacks it afresh and the release is whole.
    fs::remove_file(b.tree(&deps).join("node_modules/dep/package.json")).unwrap();
    let c = manifest('c', vec![src_layer(&b.store, "c"), deps.clone()]);
    b.fetch(&c).unwrap();
    let rc = b.root.release_dir(&c.1.source.commit);
    assert!(rc.join("node_modules/dep/package.json").is_file());
    // A staging directory of a killed release composition, and of a layer, are swept by
    // prune when no fetch holds the store.
    let stale_release = b
        .root
        .root()
        .join("releases")
        .join(format!(".{}.partial-0123456789abcdef", "f".repeat(40)));
    fs::create_dir_all(&stale_release).unwrap();
    fs::create_dir_all(&staging).unwrap();
    b.root.prune(5).unwrap();
    assert!(!stale_release.exists() && !staging.exists());
    // While a fetch holds the store, prune removes no layer.
    let held = b.root.layers_shared().unwrap();
    b.root.switch(&b.release(&c)).unwrap();
    let r = b.root.prune(0).unwrap();
    assert!(r.layers_busy && r.layers_removed.is_empty(), "{r:?}");
    drop(held);
    let r = b.root.prune(0).unwrap();
    assert_eq!(r.layers_removed, vec![a.1.layers[0].digest], "{r:?}");
}

#[test]
fn a_hostile_layer_is_refused_before_anything_is_linked() {
    let b = layer_bed();
    let deps = layer(&b.store, LayerKind::Deps, DEPS);
    let a = manifest('a', vec![src_layer(&b.store, "a"), deps.clone()]);
    b.fetch(&a).unwrap();
    b.root.switch(&b.release(&a)).unwrap();
    let before = b.listing();
    let cases: Vec<(char, Vec<Layer>, &str)> = vec![
        // A symlink out of the release, in one layer.
        (
            'b',
            vec![
                src_layer(&b.store, "b"),
                layer(
                    &b.store,
                    LayerKind::Deps,
                    &[("node_modules/x", "-> ../../etc")],
                ),
            ],
            "leaves the destination",
        ),
        // Each layer alone is fine; together `e -> d/..` climbs out through `d -> .`.
        (
            'c',
            vec![
                layer(&b.store, LayerKind::Source, &[("d", "-> .")]),
                layer(&b.store, LayerKind::Deps, &[("e", "-> d/..")]),
            ],
            "leaves the destination",
        ),
        // A file of the dependency layer already in the source layer.
        (
            'e',
            vec![
                layer(
                    &b.store,
                    LayerKind::Source,
                    &[("node_modules/dep/index.js", "shadow")],
                ),
                deps.clone(),
            ],
            "already exists",
        ),
    ];
    for (c, layers, why) in cases {
        let m = manifest(c, layers);
        let e = b.fetch(&m).unwrap_err();
        assert!(e.to_string().contains(why), "{c}: {e}");
        assert!(!b.root.release_dir(&m.1.source.commit).exists(), "{c}");
        assert_eq!(
            b.root.current().as_deref(),
            Some(a.1.source.commit.as_str())
        );
        // The shared tree is as it was.
        assert_eq!(
            fs::read_to_string(b.tree(&deps).join("node_modules/dep/index.js")).unwrap(),
            "module.exports = 1;\n"
        );
    }
    // No release, no staging; the one-layer hostile tree was never made. (Trees of the
    // layers that were fine alone stay until prune.)
    let after = b.listing();
    assert!(
        after
            .iter()
            .all(|p| !p.starts_with("releases/") || before.contains(p)),
        "{after:#?}"
    );
    assert!(after.iter().all(|p| !p.contains(".partial-")), "{after:#?}");
    b.root.prune(5).unwrap();
    assert_eq!(
        b.listing()
            .iter()
            .filter(|p| p.starts_with("layers/"))
            .count(),
        before.iter().filter(|p| p.starts_with("layers/")).count()
    );
}
