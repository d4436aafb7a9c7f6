//! The journal of a running deploy: changed in memory, written to the store as a base record
//! and then one segment per write ([`crate::records::segments`]), so what a deploy writes
//! grows with its steps.
//!
//! Two kinds of change:
//! - [`RunJournal::note`]: durable before it returns (a phase change, the touch order, the
//!   outcome: what `resume` acts on). Changes arriving while a write is in flight are carried
//!   by the next write, and a caller whose change is already written returns at once.
//! - [`RunJournal::record`]: a step record, written by the flusher ([`RunJournal::flusher`])
//!   within [`LINGER`] of it, or sooner by the next `note`. A crash loses at most the records
//!   of that last, unwritten segment; never a phase change.
//!
//! A write that fails is remembered ([`RunJournal::failure`]) and stops the run at its next
//! health check; its changes stay pending and go with the next write. [`RunJournal::close`]
//! compacts the journal into its base at the end of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::records::{Delta, HostEntry, Journal, JournalStatus, JournalWriter, RecordError, Step};
use crate::target::now_rfc3339;

/// How long a step record may wait for company before the flusher writes it.
pub const LINGER: Duration = Duration::from_millis(50);

/// After a failed write, the flusher waits this long before trying again.
const BACKOFF: Duration = Duration::from_millis(200);

/// A change to the journal, as [`RunJournal::note`] and [`RunJournal::record`] see it: reads
/// through to the journal, writes through methods that remember what changed.
pub struct Edit<'a> {
    journal: &'a mut Journal,
    dirty: &'a mut BTreeSet<String>,
}

impl std::ops::Deref for Edit<'_> {
    type Target = Journal;
    fn deref(&self) -> &Journal {
        self.journal
    }
}

impl Edit<'_> {
    /// A host's entry, to change.
    pub fn host(&mut self, name: &str) -> &mut HostEntry {
        self.dirty.insert(name.to_string());
        self.journal.hosts.get_mut(name).expect("host in journal")
    }

    pub fn step(&mut self, host: Option<&str>, step: Step, ok: bool, detail: Option<String>) {
        self.journal.step(host, step, ok, detail);
    }

    /// A canary analysis' report, with its numbers.
    pub fn add_analysis(&mut self, report: crate::analysis::AnalysisReport) {
        self.journal.analysis.push(report);
    }

    pub fn set_abort_reason(&mut self, reason: String) {
        self.journal.abort_reason = Some(reason);
    }

    /// The run's outcome.
    pub fn set_outcome(&mut self, status: JournalStatus, needs_human: Vec<String>) {
        self.journal.status = status;
        self.journal.finished_at = Some(now_rfc3339());
        self.journal.needs_human = needs_human;
    }
}

/// The journal and what of it is not written yet.
struct State {
    journal: Journal,
    /// Bumped by every change.
    version: u64,
    /// The version the last write attempt carried (successful or not).
    attempted: u64,
    /// The version the store holds.
    clean: u64,
    /// Hosts changed since the last successful write.
    dirty: BTreeSet<String>,
    /// Steps the store holds.
    steps_written: usize,
}

/// The journal's writer; `None` once closed.
struct Writer(Option<JournalWriter>);

/// A journal being written as a run goes.
pub struct RunJournal {
    state: Mutex<State>,
    /// Signalled on every record, for the flusher.
    changed: Condvar,
    /// Held for the I/O, never while the journal changes; writes happen in its order.
    writer: Mutex<Writer>,
    failed: Mutex<Option<String>>,
}

impl std::fmt::Debug for RunJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunJournal")
            .field("id", &self.read(|j| j.id.clone()))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RunJournal {
    pub fn new(writer: JournalWriter) -> Self {
        let journal = writer.journal.clone();
        RunJournal {
            state: Mutex::new(State {
                steps_written: journal.steps.len(),
                journal,
                version: 0,
                attempted: 0,
                clean: 0,
                dirty: BTreeSet::new(),
            }),
            changed: Condvar::new(),
            writer: Mutex::new(Writer(Some(writer))),
            failed: Mutex::new(None),
        }
    }

    fn change(&self, f: impl FnOnce(&mut Edit<'_>)) -> u64 {
        let mut s = lock(&self.state);
        let State { journal, dirty, .. } = &mut *s;
        f(&mut Edit { journal, dirty });
        s.version += 1;
        s.version
    }

    /// Applies a change and returns once a write carrying it was attempted.
    pub fn note(&self, f: impl FnOnce(&mut Edit<'_>)) {
        let v = self.change(f);
        self.write_through(v);
    }

    /// Applies a change; the flusher (or the next note) writes it.
    pub fn record(&self, f: impl FnOnce(&mut Edit<'_>)) {
        self.change(f);
        self.changed.notify_all();
    }

    /// Writes everything pending now.
    pub fn flush(&self) {
        let v = lock(&self.state).version;
        self.write_through(v);
    }

    /// Writes pending changes until at least version `v` was attempted.
    fn write_through(&self, v: u64) {
        let mut w = lock(&self.writer);
        if lock(&self.state).attempted >= v && w.0.as_ref().is_some_and(|w| !w.needs_base()) {
            return;
        }
        self.write_pending(&mut w);
    }

    /// One write of whatever is pending: the whole journal when the base is due, else a
    /// segment of what changed.
    fn write_pending(&self, w: &mut Writer) {
        let Some(writer) = w.0.as_mut() else { return };
        enum Job {
            Base(Box<Journal>),
            Segment(Delta),
        }
        let (job, version) = {
            let mut s = lock(&self.state);
            if s.clean >= s.version && !writer.needs_base() {
                s.attempted = s.version;
                return;
            }
            let job = if writer.needs_base() {
                Job::Base(Box::new(s.journal.clone()))
            } else {
                Job::Segment(Delta::of(&s.journal, s.steps_written, &s.dirty))
            };
            s.dirty.clear();
            s.steps_written = s.journal.steps.len();
            (job, s.version)
        };
        let r = match &job {
            Job::Base(j) => writer.write_base(j),
            Job::Segment(d) => writer.write_segment(d),
        };
        let mut s = lock(&self.state);
        s.attempted = version;
        match r {
            Ok(()) => s.clean = version,
            Err(e) => {
                lock(&self.failed).get_or_insert(e.to_string());
                // Still pending: the next write carries these changes again.
                match job {
                    Job::Base(_) => {}
                    Job::Segment(d) => {
                        s.steps_written = d.steps_from;
                        s.dirty.extend(d.hosts.into_keys());
                    }
                }
            }
        }
    }

    /// Writes step records as they come, each within [`LINGER`], until `stop` is set. Runs
    /// beside the run on its own thread.
    pub fn flusher(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            {
                let s = lock(&self.state);
                if s.clean >= s.version {
                    let _ = self
                        .changed
                        .wait_timeout(s, Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner());
                    continue;
                }
            }
            std::thread::sleep(LINGER);
            let before = self.failure().is_some();
            self.write_pending(&mut lock(&self.writer));
            if before || self.failure().is_some() {
                std::thread::sleep(BACKOFF);
            }
        }
    }

    /// Ends the run's writing: the journal compacted into its base (its segments deleted).
    /// Nothing is written after. `Err` if the compacted base could not be written (the
    /// segments then still hold the journal).
    pub fn close(&self) -> Result<(), RecordError> {
        let mut w = lock(&self.writer);
        let Some(mut writer) = w.0.take() else {
            return Ok(());
        };
        // A journal never written (its first write failed and the run was refused) stays so.
        if !writer.has_base() {
            return Ok(());
        }
        let j = lock(&self.state).journal.clone();
        match writer.compact(&j) {
            Ok(undeleted) => {
                if undeleted > 0 {
                    tracing::warn!(
                        "journal {}: {undeleted} segments could not be deleted after compaction",
                        j.id
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the journal as it is now.
    pub fn read<T>(&self, f: impl FnOnce(&Journal) -> T) -> T {
        f(&lock(&self.state).journal)
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
        lock(&self.failed).clone()
    }
}
