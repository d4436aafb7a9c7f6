//! A bounded load client for tests that drive traffic through HAProxy (or straight at the
//! services): keep-alive clients, each at a capped request rate, counting what was answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A bounded load client: `threads` keep-alive clients, each at most `per_thread_rps`.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(urls: Vec<String>, threads: usize, per_thread_rps: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|i| {
                let (stop, ok, failed, errors) =
                    (stop.clone(), ok.clone(), failed.clone(), errors.clone());
                let urls = urls.clone();
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(Duration::from_secs(10)))
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let gap = Duration::from_micros(1_000_000 / per_thread_rps);
                    let mut n = i;
                    while !stop.load(Ordering::SeqCst) {
                        let t = Instant::now();
                        let url = &urls[n % urls.len()];
                        n += 1;
                        match agent.get(url).call() {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.into_body().read_to_vec();
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("{url}: HTTP {}", r.status()));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                errors.lock().unwrap().push(format!("{url}: {e}"));
                            }
                        }
                        if let Some(d) = gap.checked_sub(t.elapsed()) {
                            std::thread::sleep(d);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            errors,
            threads: handles,
        }
    }

    pub fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let e = self.errors.lock().unwrap().clone();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            e,
        )
    }
}
