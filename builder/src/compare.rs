//! The first difference between two layers, for a rebuild that did not reproduce one.
//!
//! Both layers come from the same deterministic packer, so their entries are in the same
//! (sorted) order; the two tar streams are read side by side and the first entry whose path,
//! type, mode, link target, size or content differs is described. The archives are only read,
//! never extracted.

use std::io::{self, Read};

use artifact::Digest;
use artifact::pack::LayerCompression;

/// One entry as far as a comparison cares.
#[derive(PartialEq, Eq)]
struct Entry {
    path: String,
    kind: &'static str,
    mode: u32,
    link: Option<String>,
    size: u64,
    content: Digest,
}

fn read_entry<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Entry> {
    let h = e.header();
    let kind = match h.entry_type() {
        tar::EntryType::Directory => "directory",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Regular | tar::EntryType::Continuous => "file",
        _ => "other",
    };
    let mode = h.mode()? & 0o7777;
    let path = String::from_utf8_lossy(&e.path_bytes())
        .trim_end_matches('/')
        .to_string();
    let link = e
        .link_name_bytes()
        .map(|l| String::from_utf8_lossy(&l).into_owned());
    let size = e.size();
    let mut hr = artifact::digest::HashingReader::new(e);
    io::copy(&mut hr, &mut io::sink())?;
    let (content, _) = hr.finish();
    Ok(Entry {
        path,
        kind,
        mode,
        link,
        size,
        content,
    })
}

/// Describes the first entry in which layer `recorded` and layer `produced` (tar streams both
/// compressed as `compression`) differ, or `None` if every entry is the same.
pub fn first_difference(
    compression: LayerCompression,
    recorded: impl Read,
    produced: impl Read,
) -> io::Result<Option<String>> {
    let mut a = tar::Archive::new(compression.decoder(recorded)?);
    let mut b = tar::Archive::new(compression.decoder(produced)?);
    let mut ea = a.entries()?;
    let mut eb = b.entries()?;
    loop {
        let x = ea
            .next()
            .transpose()?
            .map(|mut e| read_entry(&mut e))
            .transpose()?;
        let y = eb
            .next()
            .transpose()?
            .map(|mut e| read_entry(&mut e))
            .transpose()?;
        let (x, y) = match (x, y) {
            (None, None) => return Ok(None),
            (Some(x), None) => {
                return Ok(Some(format!("{} is only in the recorded layer", x.path)));
            }
            (None, Some(y)) => return Ok(Some(format!("{} is only in the new layer", y.path))),
            (Some(x), Some(y)) => (x, y),
        };
        if x.path != y.path {
            // Sorted streams: the smaller path is the one missing from the other side.
            return Ok(Some(if x.path < y.path {
                format!("{} is only in the recorded layer", x.path)
            } else {
                format!("{} is only in the new layer", y.path)
            }));
        }
        let p = &x.path;
        if x.kind != y.kind {
            return Ok(Some(format!(
                "{p}: a {} in the recorded layer, a {} in the new one",
                x.kind, y.kind
            )));
        }
        if x.mode != y.mode {
            return Ok(Some(format!(
                "{p}: mode {:o} recorded, {:o} built",
                x.mode, y.mode
            )));
        }
        if x.link != y.link {
            return Ok(Some(format!(
                "{p}: link target {:?} recorded, {:?} built",
                x.link.unwrap_or_default(),
                y.link.unwrap_or_default()
            )));
        }
        if x.size != y.size || x.content != y.content {
            return Ok(Some(format!(
                "{p}: content differs ({} bytes recorded, {} built)",
                x.size, y.size
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifact::pack::{PackData, PackEntry, PackKind, PackOptions, pack_entries};

    fn layer(files: &[(&str, &str)]) -> Vec<u8> {
        let entries = files
            .iter()
            .map(|(p, c)| PackEntry {
                path: p.to_string(),
                kind: PackKind::File {
                    data: PackData::Bytes(c.as_bytes().to_vec()),
                    executable: false,
                },
            })
            .collect();
        let mut out = Vec::new();
        pack_entries(entries, &PackOptions::default(), &mut out).unwrap();
        out
    }

    #[test]
    fn names_the_first_differing_entry() {
        let a = layer(&[("m/a", "1"), ("m/b/config.gypi", "/tmp/x"), ("m/c", "3")]);
        let same = layer(&[("m/a", "1"), ("m/b/config.gypi", "/tmp/x"), ("m/c", "3")]);
        assert_eq!(
            first_difference(LayerCompression::default(), &a[..], &same[..]).unwrap(),
            None
        );
        let b = layer(&[("m/a", "1"), ("m/b/config.gypi", "/tmp/y"), ("m/c", "4")]);
        let d = first_difference(LayerCompression::default(), &a[..], &b[..])
            .unwrap()
            .unwrap();
        assert_eq!(
            d,
            "m/b/config.gypi: content differs (6 bytes recorded, 6 built)"
        );
        let c = layer(&[("m/a", "1"), ("m/c", "3")]);
        let d = first_difference(LayerCompression::default(), &a[..], &c[..])
            .unwrap()
            .unwrap();
        assert_eq!(d, "m/b is only in the recorded layer");
        let d = first_difference(LayerCompression::default(), &c[..], &a[..])
            .unwrap()
            .unwrap();
        assert_eq!(d, "m/b is only in the new layer");
        assert!(first_difference(LayerCompression::default(), &b"not gzip"[..], &a[..]).is_err());
    }
}
