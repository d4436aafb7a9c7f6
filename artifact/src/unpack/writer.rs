//! Parallel file creation for the unpacker.
//!
//! Creating ten thousand small files is kernel work (inode and directory-entry allocation)
//! that one thread does one file at a time; handing whole files to a few writer threads lets
//! it run on every core while the reading thread decompresses, hashes and checks the next
//! entries. Writers only ever create new regular files (`O_CREAT|O_EXCL|O_NOFOLLOW`) at paths
//! the reading thread validated, below directories it created itself, so the order in which
//! they run does not matter and no check depends on them.
//!
//! Memory is bounded: a job holds at most [`INLINE_MAX`] bytes and the queue at most
//! [`QUEUE`] jobs; bigger files are written by the reading thread itself.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{UnpackError, io_error};

/// Largest file handed to a writer thread.
pub(super) const INLINE_MAX: u64 = 1 << 20;
/// Jobs waiting for a writer.
const QUEUE: usize = 64;

struct Job {
    path: PathBuf,
    data: Vec<u8>,
    mode: u32,
}

/// Writer threads and the first error any of them hit.
pub(super) struct Pool {
    tx: Option<SyncSender<Job>>,
    handles: Vec<JoinHandle<()>>,
    error: Arc<Mutex<Option<UnpackError>>>,
}

impl Pool {
    /// Starts `n` writer threads (at least one).
    pub fn new(n: usize) -> Result<Pool, UnpackError> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let error = Arc::new(Mutex::new(None));
        let mut pool = Pool {
            tx: Some(tx),
            handles: Vec::new(),
            error,
        };
        for i in 0..n.max(1) {
            let rx = Arc::clone(&rx);
            let error = Arc::clone(&pool.error);
            let h = std::thread::Builder::new()
                .name(format!("unpack-writer-{i}"))
                .spawn(move || run(&rx, &error))
                .map_err(|e| io_error("starting unpack writer threads".into(), e))?;
            pool.handles.push(h);
        }
        Ok(pool)
    }

    /// Queues a new file; fails with the first writer error, if one happened.
    pub fn submit(&self, path: PathBuf, data: Vec<u8>, mode: u32) -> Result<(), UnpackError> {
        self.check()?;
        let tx = self.tx.as_ref().expect("the pool is open until joined");
        // Writers keep draining after an error, so this never blocks for good.
        tx.send(Job { path, data, mode }).map_err(|_| stopped())
    }

    fn check(&self) -> Result<(), UnpackError> {
        let mut e = lock(&self.error);
        match e.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Waits for every queued file to be written; the first writer error, if any.
    pub fn join(mut self) -> Result<(), UnpackError> {
        self.tx = None;
        for h in self.handles.drain(..) {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        self.check()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn stopped() -> UnpackError {
    io_error(
        "writing files".into(),
        io::Error::new(io::ErrorKind::BrokenPipe, "the writer threads stopped"),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn run(rx: &Mutex<Receiver<Job>>, error: &Mutex<Option<UnpackError>>) {
    loop {
        let job = lock(rx).recv();
        let Ok(job) = job else { return };
        if let Err(e) = create_file(&job.path, &job.data, job.mode) {
            let mut slot = lock(error);
            if slot.is_none() {
                *slot = Some(e);
            }
            // Keep draining so the reading thread never blocks on a full queue; it sees the
            // error on its next submit.
        }
    }
}

/// Creates a directory with mode 0755 exactly.
pub(super) fn mkdir(full: &std::path::Path) -> Result<(), UnpackError> {
    DirBuilder::new()
        .mode(0o755)
        .create(full)
        .and_then(|()| std::fs::set_permissions(full, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| io_error(format!("creating directory {}", full.display()), e))
}

/// Creates a new regular file `path` (never following or replacing anything) with `data`.
pub(super) fn create_file(
    path: &std::path::Path,
    data: &[u8],
    mode: u32,
) -> Result<(), UnpackError> {
    let mut f = open_new(path, mode)?;
    f.write_all(data)
        .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
    set_mode(&f, path, mode)
}

/// Opens a new file for writing: `O_CREAT|O_EXCL|O_NOFOLLOW`.
pub(super) fn open_new(path: &std::path::Path, mode: u32) -> Result<std::fs::File, UnpackError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error(format!("creating {}", path.display()), e))
}

/// The exact mode, whatever the umask took away.
pub(super) fn set_mode(
    f: &std::fs::File,
    path: &std::path::Path,
    mode: u32,
) -> Result<(), UnpackError> {
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(format!("chmod {}", path.display()), e))
}

/// Early writeback: a thread that flushes the file system holding the staging directory
/// (`syncfs`) over and over while files are being written, so the disk works in parallel with
/// extraction and the final, decisive `syncfs` in [`super::Unpacker::finish`] has little left
/// to do. Only an optimisation: durability never depends on these passes, and their errors
/// are ignored (the final pass reports any).
pub(super) struct Writeback {
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// Pause between two early passes.
const WRITEBACK_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

impl Writeback {
    pub fn start(dir: &std::path::Path) -> Result<Writeback, UnpackError> {
        let d = std::fs::File::open(dir)
            .map_err(|e| io_error(format!("opening {}", dir.display()), e))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("unpack-writeback".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(WRITEBACK_PAUSE)
                {
                    let _ = rustix::fs::syncfs(&d);
                }
            })
            .map_err(|e| io_error("starting the writeback thread".into(), e))?;
        Ok(Writeback {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
