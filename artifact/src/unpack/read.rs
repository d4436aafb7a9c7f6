//! Reading one file out of a layer without extracting it, and the check of what a layer
//! hashed to against what it must hash to.

use std::io::Read;

use super::paths::normalise;
use super::{Expected, UnpackError, tar};

/// Reads one regular file (`path`, `/`-separated, as in the layer) out of a gzip or zstd
/// layer without extracting anything, verifying `expected` over the whole layer. `None` when
/// the layer has no such file; [`UnpackError::TooLarge`] when it is bigger than `max` bytes.
/// For readers of a single file, e.g. a plan reading `deploy/service.yaml`.
pub fn read_layer_file<R: Read>(
    reader: R,
    expected: &Expected,
    path: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, UnpackError> {
    let mut tar = tar::TarReader::new(reader, expected.size)?;
    let mut found = None;
    while let Some(e) = tar.next_entry()? {
        let regular = matches!(e.typeflag, b'0' | 0 | b'7');
        if found.is_none() && regular && normalise(&e.name).is_ok_and(|n| n == path.as_bytes()) {
            if e.size > max {
                return Err(UnpackError::TooLarge {
                    what: "bytes in the file read from the layer",
                    limit: max,
                });
            }
            found = Some(tar.read_data(e.size)?);
        } else {
            tar.skip_data(e.size)?;
        }
    }
    let got = tar.finish()?;
    check_expected(expected, &got)?;
    Ok(found)
}

/// `expected` against what a layer hashed to.
pub(super) fn check_expected(expected: &Expected, got: &tar::Digests) -> Result<(), UnpackError> {
    let checks = [
        (
            "size",
            expected.size.map(|s| s.to_string()),
            got.size.to_string(),
        ),
        (
            "digest",
            expected.digest.map(|d| d.to_string()),
            got.digest.to_string(),
        ),
        (
            "diff_id",
            expected.diff_id.map(|d| d.to_string()),
            got.diff_id.to_string(),
        ),
    ];
    for (what, want, actual) in checks {
        if let Some(expected) = want
            && expected != actual
        {
            return Err(UnpackError::DigestMismatch {
                what,
                expected,
                actual,
            });
        }
    }
    Ok(())
}
