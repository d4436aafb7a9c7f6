//! Adding a layer that is already unpacked on disk (a tree a finished [`Unpacker`] made) to a
//! release by hard links instead of extracting its archive again.
//!
//! The tree is walked in byte order of names, parents before children, and every entry goes
//! through the same checks as an archive's entry ([`Unpacker::admit`]: the limits, paths
//! through symlinks, entries another layer already made, symlinks that leave the destination,
//! anything but a directory, regular file or symlink), then every symlink of the release is
//! checked again. Directories are created and symlinks recreated in the staging directory;
//! regular files are hard-linked, so they share their inode (and mode) with the tree. A
//! refusal removes the staging directory, as for an archive; the tree is never written.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::{Admitted, UnpackError, UnpackStats, Unpacker, io_error};

/// One entry of a tree, as an archive entry would describe it.
struct TreeEntry {
    typeflag: u8,
    size: u64,
    mode: u64,
    link: Vec<u8>,
}

impl Unpacker {
    /// Adds the layer unpacked in `tree` to the release: see the module doc. Returns this
    /// layer's counts (entries: every directory, file and symlink under `tree`; bytes: the
    /// sizes of its files), which a caller can compare with what the tree held when made
    /// ([`tree_stats`]).
    pub fn link_tree(&mut self, tree: &Path) -> Result<UnpackStats, UnpackError> {
        if self.spent || self.finished {
            return Err(UnpackError::Spent);
        }
        let before = self.stats.clone();
        let linked = walk(tree, &mut |rel, e| match self
            .admit(rel, e.typeflag, e.size, e.mode, &e.link)?
        {
            Admitted::Done => Ok(()),
            Admitted::File(full, _) => {
                let src = tree.join(OsStr::from_bytes(rel));
                std::fs::hard_link(&src, &full).map_err(|err| {
                    io_error(
                        format!("linking {} to {}", full.display(), src.display()),
                        err,
                    )
                })
            }
        })
        .and_then(|()| self.check_links());
        match linked {
            Ok(()) => Ok(UnpackStats {
                entries: self.stats.entries - before.entries,
                bytes: self.stats.bytes - before.bytes,
            }),
            Err(e) => {
                self.spent = true;
                self.writeback = None;
                let _ = std::fs::remove_dir_all(&self.staging);
                Err(e)
            }
        }
    }
}

/// What [`Unpacker::link_tree`] counts for `tree`, without linking anything.
pub fn tree_stats(tree: &Path) -> Result<UnpackStats, UnpackError> {
    let mut s = UnpackStats::default();
    walk(tree, &mut |_, e| {
        s.entries += 1;
        s.bytes += e.size;
        Ok(())
    })?;
    Ok(s)
}

/// What [`walk`] calls for each entry: its `/`-separated path under the root, and the entry.
type Visit<'a> = dyn FnMut(&[u8], &TreeEntry) -> Result<(), UnpackError> + 'a;

/// Visits every entry under `root` (not `root` itself): parents before children, names in
/// byte order; `rel` is `/`-separated.
fn walk(root: &Path, f: &mut Visit<'_>) -> Result<(), UnpackError> {
    let meta = std::fs::symlink_metadata(root)
        .map_err(|e| io_error(format!("reading {}", root.display()), e))?;
    if !meta.is_dir() {
        return Err(io_error(
            format!("{} is not a directory", root.display()),
            std::io::ErrorKind::NotADirectory.into(),
        ));
    }
    walk_dir(root, &mut Vec::new(), f)
}

fn walk_dir(root: &Path, rel: &mut Vec<u8>, f: &mut Visit<'_>) -> Result<(), UnpackError> {
    let dir = root.join(OsStr::from_bytes(rel));
    let read = |e| io_error(format!("reading {}", dir.display()), e);
    let mut names: Vec<Vec<u8>> = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(read)? {
        names.push(e.map_err(read)?.file_name().as_bytes().to_vec());
    }
    names.sort_unstable();
    for name in names {
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(&name);
        let path = root.join(OsStr::from_bytes(rel));
        let m = std::fs::symlink_metadata(&path)
            .map_err(|e| io_error(format!("reading {}", path.display()), e))?;
        let ft = m.file_type();
        let typeflag = match () {
            _ if ft.is_dir() => b'5',
            _ if ft.is_file() => b'0',
            _ if ft.is_symlink() => b'2',
            _ if ft.is_fifo() => b'6',
            _ if ft.is_char_device() => b'3',
            _ if ft.is_block_device() => b'4',
            _ => b's',
        };
        let link = if ft.is_symlink() {
            std::fs::read_link(&path)
                .map_err(|e| io_error(format!("reading {}", path.display()), e))?
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        let entry = TreeEntry {
            typeflag,
            size: if ft.is_file() { m.len() } else { 0 },
            mode: u64::from(m.mode()),
            link,
        };
        f(rel, &entry)?;
        if ft.is_dir() {
            walk_dir(root, rel, f)?;
        }
        rel.truncate(len);
    }
    Ok(())
}
