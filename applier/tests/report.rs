//! What a person sees of a real deploy: `applier report` of a deploy whose canary failed and
//! was rolled back, opened in headless Chromium (ChromeDriver) and read back from the DOM
//! (outcome, hosts and their phases, the failing check, the rollback path); `applier show`
//! and `applier history` with filters on the same journals; the live view on a real terminal
//! (tmux) redrawn in place to every host's final state; and a journal edited to carry
//! hostile names, whose report must show them as text and run nothing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, events, fixture};
use serde_json::Value;
use testkit::browser::{Browser, Session, ci_artifacts, well_formed};

macro_rules! fx {
    () => {
        match fixture() {
            Some(f) => f,
            None => return,
        }
    };
}

/// The applier with plain output (data on stdout as text).
fn plain(env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_applier"));
    c.arg("--config")
        .arg(&env.config)
        .args(["--format", "plain"])
        .args(args)
        .env_remove("APPLIER_CONFIG")
        .env_remove("APPLIER_STORE");
    testkit::run(&mut c)
}

fn finished_id(evs: &[Value]) -> String {
    events(evs, "finished")[0]["deploy_id"]
        .as_str()
        .expect("finished names its deploy")
        .to_string()
}

/// `applier report ID --env E -o FILE`; returns the document.
fn report(env: &Env, id: &str, out: &Path) -> String {
    let (code, _, err) = plain(
        env,
        &[
            "report",
            id,
            "--env",
            &env.name,
            "-o",
            &out.to_string_lossy(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let doc = std::fs::read_to_string(out).expect("the report was written");
    well_formed(&doc).unwrap_or_else(|e| panic!("the report is not well-formed: {e}"));
    doc
}

fn text(s: &Session<'_>, script: &str) -> String {
    let v = s.eval(script);
    v.as_str()
        .unwrap_or_else(|| panic!("{script}: not text: {v}"))
        .to_string()
}

#[test]
fn a_rolled_back_deploy_is_reported_shown_and_listed_as_a_person_reads_it() {
    let fx = fx!();
    let browser = testkit::require!(Browser::start());
    let reports = tempfile::tempdir().unwrap();
    let env = Env::new(
        fx,
        "rep",
        &format!("report_dir: {}", reports.path().display()),
    );
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let good = finished_id(&evs);
    let (code, evs, err) = env.deploy(fx.digest("bad_5xx"));
    assert_eq!(code, 1, "{err}\n{}", testkit::why(&evs));
    let bad = finished_id(&evs);

    let out = env.dir.path().join("bad.html");
    let doc = report(&env, &bad, &out);
    for bad in ["<script", "<link", " src=", " href=", "@import", "url("] {
        assert!(
            !doc.contains(bad),
            "a report loads and runs nothing, yet has {bad}"
        );
    }
    // The deploy wrote the same report into the env's report_dir when it ended.
    let auto = reports.path().join(format!("rep-{bad}.html"));
    assert_eq!(std::fs::read_to_string(&auto).ok().as_deref(), Some(&*doc));
    assert!(reports.path().join(format!("rep-{good}.html")).exists());
    // `--latest` is the same deploy.
    let latest = env.dir.path().join("latest.html");
    let (code, _, err) = plain(
        &env,
        &[
            "report",
            "--latest",
            "--env",
            "rep",
            "-o",
            &latest.to_string_lossy(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&latest).unwrap(), doc);

    let s = browser.session(1200, 900, false);
    s.open(&out);
    let fetched = s.eval("return performance.getEntriesByType('resource').length");
    assert_eq!(fetched, Value::from(0), "the report fetched something");
    assert_eq!(
        text(
            &s,
            "return document.getElementById('deploy-id').textContent"
        ),
        bad
    );
    let outcome = text(&s, "return document.getElementById('outcome').textContent");
    assert!(outcome.to_lowercase().contains("rolled back"), "{outcome}");
    // Every host of the env is on the page, the canary rolled back, the others untouched.
    let phases = s.eval(
        "return Array.from(document.querySelectorAll('#timeline .host')).map(h => \
         [h.dataset.host, h.querySelector('.phase').dataset.phase])",
    );
    let phases: Vec<(String, String)> = serde_json::from_value(phases).unwrap();
    let names: Vec<&str> = phases.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(names, ["h1", "h2", "h3"], "{phases:?}");
    assert!(phases[0].1.contains("rolled"), "{phases:?}");
    // h2 and h3 were prefetched, never switched.
    assert!(
        phases[1..].iter().all(|(_, p)| p == "fetched"),
        "{phases:?}"
    );
    // Why it stopped, and the check that failed it with what it saw (a 5xx).
    let why = text(
        &s,
        "return document.getElementById('failure-reason').textContent",
    );
    assert!(why.contains("h1"), "{why}");
    let failed = text(
        &s,
        "return Array.from(document.querySelectorAll('#checks [data-host=\"h1\"] .check.fail, \
         #checks [data-host=\"h1\"] .failed-check')).map(e => e.textContent).join(' | ')",
    );
    assert!(
        failed.contains("returned 503, expected 200"),
        "the failing check shows its status code: {failed}"
    );
    // The rollback path: h1 back to the good release, restored.
    let rb = text(
        &s,
        "return document.querySelector('#rollback li[data-host=\"h1\"]').textContent",
    );
    assert!(rb.contains("restored") && !rb.contains("NOT"), "{rb}");
    assert!(rb.contains(&fx.commit("good")[..12]), "{rb}");
    // Each step is a bar with a duration.
    let bars =
        s.eval("return document.querySelectorAll('#timeline [data-host=\"h1\"] tr.step').length");
    assert!(bars.as_u64().unwrap() >= 4, "{bars}");
    let shot = s.screenshot(&ci_artifacts().join("report-rolled-back.png"));
    std::fs::copy(&out, ci_artifacts().join("report-rolled-back.html")).unwrap();
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    // Printed (A4): a PDF of its own, kept with the screenshots.
    let pdf = s.print_pdf();
    assert!(
        pdf.starts_with(b"%PDF-") && pdf.len() > 10_000,
        "{} bytes",
        pdf.len()
    );
    std::fs::write(ci_artifacts().join("report-rolled-back.pdf"), &pdf).unwrap();
    // A narrow screen: nothing wider than the window.
    let narrow = browser.session(390, 800, true);
    narrow.open(&out);
    let w = narrow.eval("return document.documentElement.scrollWidth <= window.innerWidth + 1");
    assert_eq!(
        w,
        Value::Bool(true),
        "the report scrolls sideways on a phone"
    );
    narrow.screenshot(&ci_artifacts().join("report-rolled-back-narrow.png"));

    // `show`: the steps as text.
    let (code, shown, err) = plain(&env, &["show", &bad]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains(&bad) && shown.contains("h1"), "{shown}");
    assert!(
        shown.contains("depool") && shown.contains("rollback"),
        "{shown}"
    );
    // `history`: who, why, outcome, duration, hosts changed; filtered.
    let (code, rows, err) = env.run(&["history", "--env", "rep"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(
        rows[0]["hosts_changed"],
        serde_json::json!(["h1", "h2", "h3"])
    );
    assert!(rows[1]["duration_ms"].as_u64().is_some(), "{:#?}", rows[1]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["history", "--env", "rep"];
        a.extend_from_slice(args);
        let (code, rows, err) = env.run(&a);
        assert_eq!(code, 0, "{args:?}: {err}");
        rows.iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--status", "failed"]), [bad.as_str()]);
    assert_eq!(ids(&["--status", "succeeded"]), [good.as_str()]);
    assert_eq!(ids(&["--host", "h2"]), [good.as_str()]);
    assert_eq!(ids(&["--since", "1h"]), [good.as_str(), bad.as_str()]);
    assert!(ids(&["--since", "2999-01-01"]).is_empty());
    let (code, table, err) = plain(&env, &["history", "--env", "rep", "--status", "failed"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains(&bad) && table.contains("rolled"), "{table}");
    let (code, _, err) = plain(&env, &["history", "--env", "rep", "--status", "nope"]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = plain(&env, &["report", "no-such-deploy", "--env", "rep"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no deploy no-such-deploy"), "{err}");
}

/// The journal's file in the fixture's directory store.
fn journal_file(env: &Env, id: &str) -> PathBuf {
    fixture()
        .unwrap()
        .store
        .join(format!("envs/{}/deploys/{id}.json", env.name))
}

#[test]
fn hostile_names_in_a_journal_are_text_in_the_report_and_off_the_terminal() {
    let fx = fx!();
    let browser = testkit::require!(Browser::start());
    let env = Env::new(fx, "hostile", "");
    let (code, evs, err) = env.deploy(fx.digest("bad_5xx"));
    assert_eq!(code, 1, "{err}");
    let id = finished_id(&evs);
    // A record is untrusted: rewrite it with markup and escape sequences where free text goes.
    let file = journal_file(&env, &id);
    let mut j: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let evil = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">\u{1b}[2J";
    j["who"] = Value::String(format!("{evil}@x"));
    j["reason"] = Value::String(format!("why {evil}"));
    j["abort_reason"] = Value::String(format!("because ]]> {evil} &amp;"));
    j["hosts"]["h1"]["detail"] = Value::String(format!("h9\"><b id=injected>{evil}"));
    // A hostile host name is not free text: the journal is refused before any report.
    let mut named = j.clone();
    let h1 = named["hosts"]["h1"].clone();
    named["hosts"]
        .as_object_mut()
        .unwrap()
        .insert(format!("h9\"><b id=injected>{evil}"), h1);
    std::fs::write(&file, serde_json::to_vec_pretty(&named).unwrap()).unwrap();
    let refused = env.dir.path().join("refused.html");
    let (code, _, err) = plain(
        &env,
        &[
            "report",
            &id,
            "--env",
            &env.name,
            "-o",
            &refused.to_string_lossy(),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("invalid name"), "{err}");
    assert!(
        !refused.exists(),
        "a report of a refused journal was written"
    );
    std::fs::write(&file, serde_json::to_vec_pretty(&j).unwrap()).unwrap();

    let out = env.dir.path().join("hostile.html");
    let doc = report(&env, &id, &out);
    assert!(
        !doc.contains("<script") && !doc.contains("<img"),
        "markup from a record"
    );
    assert!(!doc.contains('\u{1b}'));
    let s = browser.session(1200, 900, false);
    s.open(&out);
    let ran = s.eval(
        "return [typeof window.pwned, document.querySelectorAll('script, img, #injected').length]",
    );
    assert_eq!(
        ran,
        serde_json::json!(["undefined", 0]),
        "the page ran or grew markup"
    );
    let page = text(&s, "return document.body.textContent");
    assert!(
        page.contains("<script>window.pwned=1</script>"),
        "shown as text"
    );
    assert!(page.contains("because ]]>"), "shown as text");
    assert!(
        page.contains("h9\"><b id=injected>"),
        "a host's detail shown as text"
    );

    let (code, shown, err) = plain(&env, &["show", &id, "--env", "hostile"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains("h9") && !shown.contains('\u{1b}'),
        "{shown:?}"
    );
    let (code, table, err) = plain(&env, &["history", "--env", "hostile"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains(&id) && !table.contains('\u{1b}'),
        "{table:?}"
    );

    // A journal that does not parse is refused, named, and no report file is left.
    let cut = journal_file(&env, "cut-short");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = env.dir.path().join("cut.html");
    let (code, _, err) = plain(
        &env,
        &[
            "report",
            "cut-short",
            "--env",
            "hostile",
            "-o",
            &out.to_string_lossy(),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("cut-short.json") && err.contains("unreadable"),
        "{err}"
    );
    assert!(!out.exists(), "a report of a journal that did not read");
}

/// The test's own tmux servers (their sockets in a tempdir), killed when dropped. Each run gets
/// a server of its own: a server whose last session ends exits on its own time, and a client
/// that reaches it on the way out fails with "server exited unexpectedly".
struct Tmux {
    dir: PathBuf,
    runs: std::cell::Cell<u32>,
}

impl Tmux {
    fn start(dir: &Path) -> Result<Tmux, testkit::Missing> {
        match Command::new("tmux").arg("-V").output() {
            Ok(o) if o.status.success() => Ok(Tmux {
                dir: dir.to_path_buf(),
                runs: std::cell::Cell::new(0),
            }),
            _ => Err(testkit::Missing::new(
                "tmux not found (ci/install-deps installs it)",
            )),
        }
    }

    fn sock(&self, run: u32) -> PathBuf {
        self.dir.join(format!("tmux-{run}.sock"))
    }

    fn tmux(&self, args: &[&str]) -> String {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(self.sock(self.runs.get())).args(args);
        let (code, out, err) = testkit::run(&mut c);
        assert_eq!(code, 0, "tmux {args:?}: {err}");
        out
    }

    /// Runs `argv` on a 120x40 terminal until it exits; returns the visible screen then, and
    /// every distinct line seen on the screen while it ran.
    fn screen_after(&self, argv: &[String]) -> (String, BTreeSet<String>) {
        let words: Vec<String> = argv.iter().map(|a| testkit::bed::shell_word(a)).collect();
        let line = format!(
            "env -u APPLIER_CONFIG -u APPLIER_STORE {}; echo EXIT=$?; exec sleep 600",
            words.join(" ")
        );
        self.runs.set(self.runs.get() + 1);
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "40",
            &line,
        ]);
        let mut screen = String::new();
        let mut seen = BTreeSet::new();
        let done = testkit::wait_until(std::time::Duration::from_secs(120), || {
            screen = self.tmux(&["capture-pane", "-p", "-t", "t"]);
            seen.extend(screen.lines().map(|l| l.trim_end().to_string()));
            screen.contains("EXIT=")
        });
        assert!(done, "the run did not end on the terminal:\n{screen}");
        self.tmux(&["kill-server"]);
        (screen, seen)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        for run in 1..=self.runs.get() {
            let _ = Command::new("tmux")
                .arg("-S")
                .arg(self.sock(run))
                .arg("kill-server")
                .output();
        }
    }
}

/// The table row of `host` on `screen` (the one table, drawn in place).
fn row<'a>(screen: &'a str, host: &str) -> &'a str {
    let table = &screen[screen.find("HOST  ").expect("a table on the screen")..];
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .unwrap_or_else(|| panic!("no row for {host}:\n{screen}"))
}

#[test]
fn the_live_view_on_a_terminal_ends_with_every_hosts_final_state() {
    let fx = fx!();
    let env = Env::new(fx, "live", "canary_bake: 3s");
    let tmux = testkit::require!(Tmux::start(env.dir.path()));
    let run = |target: &str| -> (String, BTreeSet<String>) {
        let argv: Vec<String> = [
            env!("CARGO_BIN_EXE_applier"),
            "--config",
            &env.config.to_string_lossy(),
            "deploy",
            target,
            "--env",
            "live",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tmux.screen_after(&argv)
    };
    let good = &fx.commit("good")[..12];
    let (screen, seen) = run(fx.digest("good"));
    assert!(screen.contains("EXIT=0"), "{screen}");
    // While the canary baked, the table counted down (two different times left were seen).
    let bake: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("canary bake of canary: ") && l.ends_with(" left"))
        .collect();
    assert!(bake.len() >= 2, "no bake countdown seen: {seen:#?}");
    // Redrawn in place: one table on the screen, not one per event.
    assert_eq!(screen.matches("HOST  ").count(), 1, "{screen}");
    for h in ["h1", "h2", "h3"] {
        assert!(
            row(&screen, h).contains(&format!("done {good}")),
            "{screen}"
        );
    }
    assert!(
        screen.contains("succeeded in") && screen.contains("3 done (h1, h2, h3)"),
        "{screen}"
    );
    assert!(
        !screen.contains("canary bake"),
        "the countdown ends with the run: {screen}"
    );

    let (screen, _) = run(fx.digest("bad_5xx"));
    assert!(screen.contains("EXIT=1"), "{screen}");
    assert_eq!(screen.matches("HOST  ").count(), 1, "{screen}");
    assert!(
        row(&screen, "h1").contains(&format!("rolled back to {good}")),
        "{screen}"
    );
    assert!(row(&screen, "h1").contains("canary"), "{screen}");
    for h in ["h2", "h3"] {
        assert!(row(&screen, h).contains("fetched"), "{screen}");
    }
    assert!(
        screen.contains("rolled_back in") && screen.contains("1 rolled back (h1)"),
        "{screen}"
    );
    // What the table does not show is printed above it: the abort and the rollback.
    assert!(
        screen.contains("ABORT: ") && screen.contains("[h1] rollback to"),
        "{screen}"
    );
}
