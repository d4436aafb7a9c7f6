//! The journal of a running deploy: every change is applied in memory and written to the
//! store durably, coalescing concurrent writes.
//!
//! When hosts of a batch finish steps while a write is in flight, the next write carries all
//! their changes (the newest snapshot), and callers whose change is already written return at
//! once. A write that fails is remembered ([`RunJournal::failure`]) and stops the run at its
//! next health check.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::records::{HostEntry, Journal, JournalWriter};

/// The in-memory journal of a run and the version of its last change.
struct Snapshot {
    journal: Journal,
    version: u64,
}

/// The journal's writer and the version it last wrote.
struct Persister {
    writer: JournalWriter,
    saved: u64,
}

/// A journal being written as a run goes.
pub struct RunJournal {
    /// The journal as the run sees it; every change bumps `version`.
    current: Mutex<Snapshot>,
    /// The newest serialised snapshot not written yet.
    pending: Mutex<(u64, Vec<u8>)>,
    /// Writes snapshots; held only for the I/O, never while the journal changes.
    persist: Mutex<Persister>,
    failed: Mutex<Option<String>>,
}

impl std::fmt::Debug for RunJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunJournal")
            .field("id", &self.read(|j| j.id.clone()))
            .finish()
    }
}

impl RunJournal {
    pub fn new(writer: JournalWriter) -> Self {
        RunJournal {
            current: Mutex::new(Snapshot {
                journal: writer.journal.clone(),
                version: 0,
            }),
            pending: Mutex::new((0, Vec::new())),
            persist: Mutex::new(Persister { writer, saved: 0 }),
            failed: Mutex::new(None),
        }
    }

    /// Applies a change to the journal and writes it (coalesced with concurrent changes).
    pub fn note(&self, f: impl FnOnce(&mut Journal)) {
        let version = {
            let mut s = self.current.lock().unwrap();
            f(&mut s.journal);
            s.version += 1;
            let bytes = serde_json::to_vec_pretty(&s.journal).expect("journal serialises");
            *self.pending.lock().unwrap() = (s.version, bytes);
            s.version
        };
        let mut w = self.persist.lock().unwrap();
        if w.saved >= version {
            return;
        }
        let (newest, bytes) = std::mem::take(&mut *self.pending.lock().unwrap());
        if newest < version {
            // Taken by a write that failed; the failure is recorded and stops the run.
            return;
        }
        match w.writer.save_bytes(&bytes) {
            Ok(()) => w.saved = newest,
            Err(e) => {
                self.failed.lock().unwrap().get_or_insert(e.to_string());
            }
        }
    }

    /// Reads the journal as it is now.
    pub fn read<T>(&self, f: impl FnOnce(&Journal) -> T) -> T {
        f(&self.current.lock().unwrap().journal)
    }

    pub fn id(&self) -> String {
        self.read(|j| j.id.clone())
    }

    /// One host's entry (a copy).
    pub fn entry(&self, host: &str) -> HostEntry {
        self.read(|j| j.hosts[host].clone())
    }

    pub fn hosts<T>(&self, f: impl FnOnce(&BTreeMap<String, HostEntry>) -> T) -> T {
        self.read(|j| f(&j.hosts))
    }

    /// The first write that failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap().clone()
    }
}
