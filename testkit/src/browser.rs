//! A real browser for tests: Debian's headless Chromium driven through ChromeDriver's
//! WebDriver protocol (plain HTTP on loopback), to load a page, run a query in it, take
//! screenshots and print it to PDF. [`Browser::start`] is a `Result<_, Missing>`, so a test
//! without Chromium fails under `CI=true` and skips elsewhere.
//!
//! Also [`well_formed`]: a strict XML parse of a document (mismatched or unclosed elements
//! fail), for pages written to parse as XML too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::require::Missing;

/// The Chromium and ChromeDriver binaries ci/install-deps installs.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags that make headless Chromium quiet and self-contained here (no sandbox as root, no
/// GPU, no background network traffic of its own).
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// A running ChromeDriver (stopped when dropped).
pub struct Browser {
    driver: Child,
    base: String,
    dir: tempfile::TempDir,
}

/// One browser window (its session is closed when dropped).
pub struct Session<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port, or says what is missing.
    pub fn start() -> Result<Browser, Missing> {
        for p in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(p).exists() {
                return Err(Missing::new(format!(
                    "{p} not found (ci/install-deps installs Debian's chromium and chromium-driver)"
                )));
            }
        }
        let port = crate::free_port();
        let dir = tempfile::Builder::new()
            .prefix("browser-")
            .tempdir()
            .map_err(|e| Missing::new(format!("a temp dir for the browser: {e}")))?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Missing::new(format!("starting {CHROMEDRIVER}: {e}")))?;
        let b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        if !crate::wait_port(port, Duration::from_secs(20)) {
            return Err(Missing::new(format!(
                "{CHROMEDRIVER} did not listen on port {port} within 20 s"
            )));
        }
        Ok(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(120)))
                .http_status_as_error(false)
                .build(),
        );
        let resp = match (method, body) {
            ("POST", b) => agent.post(&url).send_json(b.unwrap_or_else(|| json!({}))),
            ("DELETE", _) => agent.delete(&url).call(),
            _ => agent.get(&url).call(),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = resp.status().as_u16();
        let v: Value = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_json()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: answer not JSON: {e}"));
        assert!(
            status == 200,
            "WebDriver {method} {path} answered {status}: {v}"
        );
        v["value"].clone()
    }

    /// A new window `width` x `height` CSS pixels (a mobile-style viewport when `mobile`).
    pub fn session(&self, width: u32, height: u32, mobile: bool) -> Session<'_> {
        let profile = self.dir.path().join(format!("profile-{}", rand_suffix()));
        let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={width},{height}"));
        let mut opts = json!({"binary": CHROMIUM, "args": args});
        if mobile {
            opts["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0}});
        }
        let v = self.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": opts,
            }}})),
        );
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        Session { browser: self, id }
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Session<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.id)
    }

    /// Loads `url` and waits for it to finish loading.
    pub fn goto(&self, url: &str) {
        self.browser
            .call("POST", &self.path("/url"), Some(json!({"url": url})));
    }

    /// Loads a file.
    pub fn open(&self, file: &Path) {
        let abs = std::fs::canonicalize(file).expect("the page exists");
        self.goto(&format!("file://{}", abs.display()));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.browser.call(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// A screenshot of the whole page (not just the window) as PNG bytes.
    pub fn screenshot_png(&self) -> Vec<u8> {
        let w = self
            .eval("return document.documentElement.scrollWidth")
            .as_u64();
        let h = self
            .eval("return document.documentElement.scrollHeight")
            .as_u64();
        if let (Some(w), Some(h)) = (w, h) {
            let _ = self.browser.call(
                "POST",
                &self.path("/window/rect"),
                Some(json!({"width": w.max(320), "height": h.clamp(200, 8000)})),
            );
        }
        decode(&self.browser.call("GET", &self.path("/screenshot"), None))
    }

    /// Saves [`Session::screenshot_png`] to `path` (directories created).
    pub fn screenshot(&self, path: &Path) -> PathBuf {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("creating the screenshot's directory");
        }
        std::fs::write(path, self.screenshot_png()).expect("writing the screenshot");
        path.to_path_buf()
    }

    /// The page printed to PDF (A4, backgrounds on), as bytes.
    pub fn print_pdf(&self) -> Vec<u8> {
        decode(&self.browser.call(
            "POST",
            &self.path("/print"),
            Some(json!({"background": true, "page": {"width": 21.0, "height": 29.7}})),
        ))
    }
}

fn decode(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("not base64 data: {v}"));
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("WebDriver sends base64")
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let url = format!("{}{}", self.browser.base, self.path(""));
        let _ = ureq::delete(&url).call();
    }
}

/// Where tests leave what CI keeps (screenshots, reports): `<target>/ci-artifacts/`.
pub fn ci_artifacts() -> PathBuf {
    let d = crate::paths::target_dir().join("ci-artifacts");
    std::fs::create_dir_all(&d).expect("creating target/ci-artifacts");
    d
}

/// `Ok` when `doc` (a leading `<!DOCTYPE ...>` aside) parses as XML: every element closed,
/// in order, attributes quoted, entities known; else the first error and where it is.
pub fn well_formed(doc: &str) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(doc);
    r.config_mut().check_end_names = true;
    r.config_mut().check_comments = true;
    let mut depth = 0usize;
    let mut roots = 0usize;
    let at = |r: &quick_xml::Reader<&[u8]>| r.buffer_position();
    loop {
        let ev = r
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", r.error_position()))?;
        match &ev {
            Event::Start(e) | Event::Empty(e) => {
                for a in e.attributes() {
                    a.map_err(|err| format!("at byte {}: {err}", at(&r)))?;
                }
                if depth == 0 {
                    roots += 1;
                }
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth -= 1,
            Event::GeneralRef(g) => {
                let known = g.is_char_ref()
                    || matches!(g.as_ref(), b"amp" | b"lt" | b"gt" | b"quot" | b"apos");
                if !known {
                    return Err(format!(
                        "at byte {}: unknown entity &{};",
                        at(&r),
                        String::from_utf8_lossy(g.as_ref())
                    ));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{depth} element(s) left open at the end"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements, expected 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_refuses_broken_nesting_and_accepts_a_good_page() {
        assert!(well_formed("<!DOCTYPE html>\n<html><body><p>a &amp; b</p></body></html>").is_ok());
        for bad in [
            "<html><div><p>x</div></p></html>",
            "<html><body><p>x</body></html>",
            "<html><p class=x>y</p></html>",
            "<html><p>a & b</p></html>",
            "<html><p>&nbsp;</p></html>",
            "<html></html><html></html>",
        ] {
            assert!(well_formed(bad).is_err(), "accepted {bad:?}");
        }
    }
}
