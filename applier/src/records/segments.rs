//! A deploy's journal in the store: one base record and append-only segments, so the bytes a
//! deploy writes grow with its steps, not with their square.
//!
//! ```text
//! envs/<env>/deploys/<id>.json          base: the whole journal, as of segment `segments`
//! envs/<env>/segments/<id>/<seq>.seg    what changed since the previous write, one per write
//! ```
//!
//! The base is written when a deploy starts, again when `resume` opens it, and a last time,
//! whole, when the run ends (compaction), after which its segments are deleted. In between,
//! every write of the running journal is one new segment (create-only): the steps added since
//! the last write, the host entries that changed (whole), and the journal's outcome fields.
//! A segment is its JSON body, a newline, and `sha256:<hex of the body>` on a line of its own.
//!
//! [`load`] is the one reader (history, resume, status, reports): the base, then, only while
//! the base says `running`, the segments after the ones it already holds, in order. Each is
//! verified (checksum, deploy id, sequence number, hosts it names, no gap in the steps); the
//! first that does not verify ends the fold, and the journal read says so in
//! [`Journal::damaged`], keeping what verified. A journal written as a single file (before
//! segments) is a base with no segments and reads as it always did.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use artifact::Digest;
use artifact::store::{ETag, Store, StoreError};
use serde::{Deserialize, Serialize};

use super::{HostEntry, Journal, JournalStatus, RecordError, StepRecord};
use crate::keys;

const SEGMENT_FORMAT: u32 = 1;

/// Segments deleted at once after compaction.
const DELETE_WORKERS: usize = 8;

/// What one write of a running journal adds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// The index in the journal's steps of the first of `steps`.
    pub steps_from: usize,
    pub steps: Vec<StepRecord>,
    /// Host entries that changed, whole.
    pub hosts: BTreeMap<String, HostEntry>,
    pub status: JournalStatus,
    pub finished_at: Option<String>,
    pub abort_reason: Option<String>,
    pub needs_human: Vec<String>,
}

impl Delta {
    /// What `journal` adds after its first `steps_from` steps, with the entries of `hosts`.
    pub fn of<'a>(
        journal: &Journal,
        steps_from: usize,
        hosts: impl IntoIterator<Item = &'a String>,
    ) -> Delta {
        Delta {
            steps_from,
            steps: journal.steps[steps_from.min(journal.steps.len())..].to_vec(),
            hosts: hosts
                .into_iter()
                .filter_map(|h| journal.hosts.get(h).map(|e| (h.clone(), e.clone())))
                .collect(),
            status: journal.status,
            finished_at: journal.finished_at.clone(),
            abort_reason: journal.abort_reason.clone(),
            needs_human: journal.needs_human.clone(),
        }
    }
}

/// A segment as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Segment {
    format: u32,
    deploy: String,
    seq: u64,
    delta: Delta,
}

fn encode(seg: &Segment) -> Vec<u8> {
    let mut body = serde_json::to_vec(seg).expect("segment serialises");
    let sum = Digest::of(&body).to_string();
    body.push(b'\n');
    body.extend_from_slice(sum.as_bytes());
    body.push(b'\n');
    body
}

/// The segment in `bytes`, verified to be segment `seq` of deploy `id`.
fn decode(bytes: &[u8], id: &str, seq: u64) -> Result<Segment, String> {
    let text = bytes
        .strip_suffix(b"\n")
        .ok_or("no final newline (torn?)")?;
    let cut = text
        .iter()
        .rposition(|&b| b == b'\n')
        .ok_or("no checksum line (torn?)")?;
    let (body, sum) = (&text[..cut], &text[cut + 1..]);
    let want = Digest::of(body).to_string();
    if sum != want.as_bytes() {
        return Err(format!(
            "checksum mismatch: the body hashes to {want}, the segment says {}",
            String::from_utf8_lossy(sum)
        ));
    }
    let seg: Segment = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if seg.format != SEGMENT_FORMAT {
        return Err(format!("unknown segment format {}", seg.format));
    }
    if seg.deploy != id || seg.seq != seq {
        return Err(format!(
            "names deploy {} segment {}, stored as deploy {id} segment {seq}",
            seg.deploy, seg.seq
        ));
    }
    Ok(seg)
}

/// Folds one verified delta into `j`.
fn apply(j: &mut Journal, d: Delta) -> Result<(), String> {
    if d.steps_from > j.steps.len() {
        return Err(format!(
            "starts at step {}, the journal has {} (a segment before it is missing)",
            d.steps_from,
            j.steps.len()
        ));
    }
    if let Some(h) = d.hosts.keys().find(|h| !j.hosts.contains_key(*h)) {
        return Err(format!("names host {h}, which this deploy does not have"));
    }
    let have = j.steps.len() - d.steps_from;
    j.steps.extend(d.steps.into_iter().skip(have));
    j.hosts.extend(d.hosts);
    j.status = d.status;
    j.finished_at = d.finished_at;
    j.abort_reason = d.abort_reason;
    j.needs_human = d.needs_human;
    Ok(())
}

/// A journal as read, and what its writer needs to continue it.
#[derive(Debug)]
pub struct Loaded {
    pub journal: Journal,
    base_etag: ETag,
    /// The highest segment number stored, verified or not (a writer continues after it).
    last_seq: u64,
}

/// Reads deploy `id` of `env`: its base and, while it runs, its segments (see the module doc).
/// The base missing is [`RecordError::Store`] not-found; a base that does not parse is
/// [`RecordError::Corrupt`]; a segment that does not verify is reported in `damaged`.
pub fn load(store: &dyn Store, env: &str, id: &str) -> Result<Loaded, RecordError> {
    let key = keys::deploy_journal(env, id);
    let (b, meta) = store.get_bytes(&key)?;
    let mut journal: Journal = super::parse_journal(&b, &key, env)?;
    let mut last_seq = journal.segments;
    if journal.status == JournalStatus::Running {
        let prefix = keys::journal_segments(env, id);
        let mut stop = None::<String>;
        let mut later = 0usize;
        for m in store.list(&prefix)? {
            let name = &m.key[prefix.len()..];
            let Some(seq) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                journal
                    .damaged
                    .push(format!("{}: not a journal segment; ignored", m.key));
                continue;
            };
            last_seq = last_seq.max(seq);
            if seq <= journal.segments {
                continue;
            }
            if stop.is_some() {
                later += 1;
                continue;
            }
            let folded = store
                .get_bytes(&m.key)
                .map_err(|e| e.to_string())
                .and_then(|(bytes, _)| decode(&bytes, id, seq))
                .and_then(|seg| apply(&mut journal, seg.delta));
            if let Err(e) = folded {
                stop = Some(format!("{}: {e}", m.key));
            }
        }
        if let Some(s) = stop {
            journal.damaged.push(format!(
                "{s}; the journal is read up to the segment before it{}",
                if later > 0 {
                    format!(" ({later} later segments not applied)")
                } else {
                    String::new()
                }
            ));
        }
    }
    Ok(Loaded {
        journal,
        base_etag: meta.etag,
        last_seq,
    })
}

/// Writes one deploy's journal: its base, then segments.
#[derive(Debug)]
pub struct JournalWriter {
    store: Arc<dyn Store>,
    env: String,
    id: String,
    /// The base's version; `None` until the base is written.
    base_etag: Option<ETag>,
    /// The last segment number used (written or attempted).
    seq: u64,
    /// Whether the next write must be a whole base: a new journal, or one reopened (its
    /// segments, including any that did not verify, are then folded into the base).
    needs_base: bool,
    /// The journal as planned or read back.
    pub journal: Journal,
}

impl JournalWriter {
    /// A new journal (its base is written by the first write).
    pub fn create(store: Arc<dyn Store>, journal: Journal) -> Self {
        JournalWriter {
            store,
            env: journal.env.clone(),
            id: journal.id.clone(),
            base_etag: None,
            seq: 0,
            needs_base: true,
            journal,
        }
    }

    /// Opens an existing journal to continue it.
    pub fn open(store: Arc<dyn Store>, env: &str, id: &str) -> Result<Self, RecordError> {
        let l = load(store.as_ref(), env, id)?;
        Ok(JournalWriter {
            store,
            env: env.to_string(),
            id: id.to_string(),
            base_etag: Some(l.base_etag),
            seq: l.last_seq,
            needs_base: true,
            journal: l.journal,
        })
    }

    /// Whether the store holds a base of this journal (one was written or read).
    pub fn has_base(&self) -> bool {
        self.base_etag.is_some()
    }

    /// Whether the next write must be [`JournalWriter::write_base`].
    pub fn needs_base(&self) -> bool {
        self.needs_base
    }

    /// Writes `j` whole as the base, holding every segment numbered so far.
    pub fn write_base(&mut self, j: &Journal) -> Result<(), RecordError> {
        let key = keys::deploy_journal(&self.env, &self.id);
        let mut j = j.clone();
        j.segments = self.seq;
        let bytes = serde_json::to_vec_pretty(&j).expect("journal serialises");
        let etag = match self.store.put_cas(&key, &bytes, self.base_etag.as_ref()) {
            Ok(e) => e,
            // Only the lease holder writes its journal: a conflict means our last write landed
            // without us learning its version (an error after the write). Re-read and retry once.
            Err(StoreError::Conflict { .. }) => {
                let current = self.store.head(&key)?.map(|m| m.etag);
                self.store.put_cas(&key, &bytes, current.as_ref())?
            }
            Err(e) => return Err(e.into()),
        };
        self.base_etag = Some(etag);
        self.needs_base = false;
        Ok(())
    }

    /// Writes `delta` as the next segment. A failed write uses up its number: the caller
    /// writes the same changes again in a later segment (segments are idempotent).
    pub fn write_segment(&mut self, delta: &Delta) -> Result<(), RecordError> {
        self.seq += 1;
        let seg = Segment {
            format: SEGMENT_FORMAT,
            deploy: self.id.clone(),
            seq: self.seq,
            delta: delta.clone(),
        };
        let key = keys::journal_segment(&self.env, &self.id, self.seq);
        self.store.put_cas(&key, &encode(&seg), None)?;
        Ok(())
    }

    /// The end of a run: `j` whole as the base, then its segments deleted (best effort, a few
    /// at a time: a final base is read without them). Returns how many could not be deleted.
    pub fn compact(&mut self, j: &Journal) -> Result<usize, RecordError> {
        self.write_base(j)?;
        let keys: Vec<String> = self
            .store
            .list(&keys::journal_segments(&self.env, &self.id))?
            .into_iter()
            .map(|m| m.key)
            .collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..DELETE_WORKERS.min(keys.len()) {
                s.spawn(|| {
                    while let Some(k) = keys.get(next.fetch_add(1, Ordering::SeqCst)) {
                        if self.store.delete(k).is_err() {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        Ok(failed.into_inner())
    }
}

#[cfg(test)]
#[path = "segments_tests.rs"]
mod tests;
