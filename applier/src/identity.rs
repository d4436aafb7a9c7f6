//! Who is deploying, and how we know: recorded in the lease, the journal and every
//! notification.
//!
//! In order, the first that is set wins:
//!
//! 1. `--who <name>` (the operator says so);
//! 2. `SUDO_USER` (the person behind `sudo applier ...`);
//! 3. a CI job: GitLab (`GITLAB_CI`: `GITLAB_USER_LOGIN`, `CI_JOB_URL`), GitHub Actions
//!    (`GITHUB_ACTIONS`: `GITHUB_ACTOR`, the run URL), Jenkins (`JENKINS_URL`:
//!    `BUILD_USER_ID`, `BUILD_URL`), Zuul (`ZUUL_PROJECT` or `ZUUL_PIPELINE`: `ZUUL_CHANGE`),
//!    or any other with `CI=true` (`ci`);
//! 4. `USER` (the login), then `LOGNAME`.
//!
//! The binary reads the environment and passes a lookup function in; this module reads none.

use serde::Serialize;

/// A deployer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `alice@deploy1001`, `ci:gitlab alice (https://.../jobs/42)`.
    pub who: String,
    /// Where it came from: `--who`, `SUDO_USER`, `GITLAB_CI`, `USER`, ...
    pub source: String,
}

/// Resolves the deployer from `--who`, then the variables `var` returns, on `hostname`.
pub fn resolve(
    flag: Option<&str>,
    var: &dyn Fn(&str) -> Option<String>,
    hostname: &str,
) -> Identity {
    let v = |k: &str| var(k).filter(|s| !s.trim().is_empty());
    let at = |user: &str| format!("{user}@{hostname}");
    if let Some(w) = flag.filter(|s| !s.trim().is_empty()) {
        return Identity {
            who: w.trim().to_string(),
            source: "--who".into(),
        };
    }
    if let Some(u) = v("SUDO_USER") {
        return Identity {
            who: at(&u),
            source: "SUDO_USER".into(),
        };
    }
    let ci = |system: &str, user: Option<String>, url: Option<String>, source: &str| Identity {
        who: format!(
            "ci:{system}{}{}",
            user.map(|u| format!(" {u}")).unwrap_or_default(),
            url.map(|u| format!(" ({u})")).unwrap_or_default()
        ),
        source: source.into(),
    };
    if v("GITLAB_CI").is_some() {
        return ci(
            "gitlab",
            v("GITLAB_USER_LOGIN"),
            v("CI_JOB_URL"),
            "GITLAB_CI",
        );
    }
    if v("GITHUB_ACTIONS").is_some() {
        let url = match (
            v("GITHUB_SERVER_URL"),
            v("GITHUB_REPOSITORY"),
            v("GITHUB_RUN_ID"),
        ) {
            (Some(s), Some(r), Some(id)) => Some(format!("{s}/{r}/actions/runs/{id}")),
            _ => None,
        };
        return ci("github", v("GITHUB_ACTOR"), url, "GITHUB_ACTIONS");
    }
    if v("JENKINS_URL").is_some() {
        return ci("jenkins", v("BUILD_USER_ID"), v("BUILD_URL"), "JENKINS_URL");
    }
    if v("ZUUL_PROJECT").is_some() || v("ZUUL_PIPELINE").is_some() {
        return ci(
            "zuul",
            v("ZUUL_CHANGE").map(|c| format!("change {c}")),
            None,
            "ZUUL_PROJECT",
        );
    }
    if v("CI").is_some_and(|c| c.eq_ignore_ascii_case("true")) {
        return ci("ci", v("USER"), None, "CI");
    }
    for k in ["USER", "LOGNAME"] {
        if let Some(u) = v(k) {
            return Identity {
                who: at(&u),
                source: k.into(),
            };
        }
    }
    Identity {
        who: at("unknown"),
        source: "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flag_then_sudo_then_ci_then_login() {
        let all = [
            ("SUDO_USER", "alice"),
            ("USER", "root"),
            ("GITLAB_CI", "true"),
            ("GITLAB_USER_LOGIN", "bob"),
            ("CI_JOB_URL", "https://gl/j/1"),
        ];
        assert_eq!(resolve(Some("carol"), &with(&all), "h").who, "carol");
        assert_eq!(
            resolve(None, &with(&all), "h"),
            Identity {
                who: "alice@h".into(),
                source: "SUDO_USER".into()
            }
        );
        assert_eq!(
            resolve(None, &with(&all[1..]), "h"),
            Identity {
                who: "ci:gitlab bob (https://gl/j/1)".into(),
                source: "GITLAB_CI".into()
            }
        );
        let gh = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "dora"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_RUN_ID", "7"),
        ];
        assert_eq!(
            resolve(None, &with(&gh), "h").who,
            "ci:github dora (https://github.com/o/r/actions/runs/7)"
        );
        assert_eq!(resolve(None, &with(&[("USER", "eve")]), "h").who, "eve@h");
        assert_eq!(
            resolve(None, &with(&[("SUDO_USER", " ")]), "h").source,
            "none"
        );
    }
}
