//! The applier's exit codes, decided here and nowhere else, from the library's typed outcomes
//! and error kinds (the table is in the README).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (or a dry run; `status`: no drift) |
//! | 1 | the deploy failed and every touched host was rolled back (`status`: drift; `host`: the operation failed) |
//! | 2 | the deploy failed and hosts need a human |
//! | 3 | refused before touching anything (lock held, gate, preflight, verify, fetch, store) |
//! | 64 | usage or configuration error |

use applier::config::ConfigError;
use applier::engine::{DeployError, ErrorKind};
use applier::records::JournalStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    NeedsHuman = 2,
    Refused = 3,
    Usage = 64,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// How a finished run exits.
    pub fn of_status(s: JournalStatus) -> Exit {
        match s {
            // `Running` is a dry run: nothing was started.
            JournalStatus::Succeeded | JournalStatus::Running => Exit::Ok,
            JournalStatus::RolledBack => Exit::Failed,
            JournalStatus::NeedsHuman => Exit::NeedsHuman,
            JournalStatus::Refused => Exit::Refused,
        }
    }

    pub fn of_error(e: &DeployError) -> Exit {
        match e.kind() {
            ErrorKind::Usage => Exit::Usage,
            ErrorKind::Refused => Exit::Refused,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// A command that failed: how it exits, what went wrong, and what the user can do.
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
    /// The store record a refusal was decided on.
    pub record: Option<String>,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            exit,
            error: error.into(),
            record: None,
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure::new(Exit::Usage, error)
    }

    pub fn refused(error: impl Into<anyhow::Error>) -> Self {
        Failure::new(Exit::Refused, error)
    }

    pub fn config(e: ConfigError) -> Self {
        let hint = match &e {
            ConfigError::UnknownEnv { .. } => "`--show-config` shows the environments configured",
            _ => "`--show-config` shows each value and where it came from",
        };
        Failure::usage(e).hint(hint)
    }

    pub fn deploy(e: DeployError) -> Self {
        Failure {
            exit: Exit::of_error(&e),
            hint: e.way_out(),
            record: e.record().map(str::to_string),
            error: anyhow::Error::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_error_kinds_map_to_the_documented_codes() {
        let codes: Vec<u8> = [
            JournalStatus::Succeeded,
            JournalStatus::Running,
            JournalStatus::RolledBack,
            JournalStatus::NeedsHuman,
            JournalStatus::Refused,
        ]
        .into_iter()
        .map(|s| Exit::of_status(s).code())
        .collect();
        assert_eq!(codes, [0, 0, 1, 2, 3]);
        let usage = DeployError::Usage {
            message: "no deploy x".into(),
            way_out: None,
        };
        assert_eq!(Exit::of_error(&usage).code(), 64);
        let bad = DeployError::Resolve(artifact::resolve::ResolveError::BadInput("zz".into()));
        assert_eq!(Exit::of_error(&bad).code(), 64);
        let missing =
            DeployError::Resolve(artifact::resolve::ResolveError::NotFound("abcd".into()));
        assert_eq!(Exit::of_error(&missing).code(), 3);
        assert!(
            Failure::deploy(missing)
                .hint
                .unwrap()
                .contains("builder build")
        );
    }
}
