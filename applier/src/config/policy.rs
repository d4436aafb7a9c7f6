//! The environment's policies beside its inventory: what a storage change needs, whether a
//! deploy needs a message, when deploys are frozen, where deploy events are sent, and which
//! branch continuous deployment follows. The types only; the decisions are made in
//! [`crate::engine::policy`], [`crate::freeze`] and [`crate::notify`].

use serde::{Deserialize, Serialize};

use super::Dur;

/// `schema_policy`: what a deploy whose storage diff has blocking findings needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaPolicy {
    /// Each blocking change must be acknowledged (`--ack`), or the deploy is refused.
    #[default]
    RequireAck,
    /// Blocking changes are acknowledged by the policy itself (recorded in the journal as
    /// such): for an environment that follows every commit, such as beta.
    Acknowledge,
}

/// One freeze window: deploys to the env are refused while it is open (unless overridden
/// with `--override-freeze <reason>`, which the journal records). Either `cron` or
/// `from`/`until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    /// For messages (`weekend`, `end-of-year`).
    #[serde(default)]
    pub name: Option<String>,
    /// Five cron fields, `minute hour day-of-month month day-of-week` (UTC; `*`, lists,
    /// ranges and steps; Sunday is 0 or 7): the window is open in every matching minute.
    /// `* 14-23 * * 5` freezes Friday afternoons and evenings.
    #[serde(default)]
    pub cron: Option<String>,
    /// Start (RFC 3339 time or a `YYYY-MM-DD` date, UTC midnight), inclusive.
    #[serde(default)]
    pub from: Option<String>,
    /// End (same forms), exclusive.
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The deploy events a sink can be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A deploy (or rollback, resume, promote) started rolling.
    Start,
    /// It ended: succeeded, or refused after its plan.
    Finish,
    /// It aborted (past the failure limit, a lost lease, a failed bake).
    Abort,
    /// It ended with every touched host rolled back.
    Rollback,
    /// It ended with hosts that need a human.
    NeedsHuman,
}

pub const ALL_EVENTS: [NotifyEvent; 5] = [
    NotifyEvent::Start,
    NotifyEvent::Finish,
    NotifyEvent::Abort,
    NotifyEvent::Rollback,
    NotifyEvent::NeedsHuman,
];

fn all_events() -> Vec<NotifyEvent> {
    ALL_EVENTS.to_vec()
}

/// A place deploy events go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum NotifySink {
    /// A program, run with the event's values as `APPLIER_*` environment variables (never
    /// spliced into its command line): `[/usr/local/bin/dologmsg]`, or a string run by
    /// `sh -c` that reads them as `"$APPLIER_MESSAGE"`.
    Command {
        command: CommandLine,
        #[serde(default = "all_events")]
        events: Vec<NotifyEvent>,
        #[serde(default = "default_command_timeout")]
        timeout: Dur,
    },
    /// An HTTP POST of the event as JSON, retried on failure.
    Webhook {
        url: String,
        #[serde(default = "all_events")]
        events: Vec<NotifyEvent>,
        /// Per attempt.
        #[serde(default = "default_webhook_timeout")]
        timeout: Dur,
        /// Attempts after the first (0.5 s, 1 s, 2 s ... apart).
        #[serde(default = "default_retries")]
        retries: u32,
    },
}

/// A command as an argument list, or one string for `sh -c`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Argv(Vec<String>),
    Shell(String),
}

fn default_command_timeout() -> Dur {
    Dur::secs(10)
}
fn default_webhook_timeout() -> Dur {
    Dur::secs(5)
}
fn default_retries() -> u32 {
    3
}

/// `cd`: continuous deployment of a branch (`applier cd`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdPolicy {
    /// The branch whose newest built commit the env follows.
    pub branch: String,
}

impl NotifySink {
    pub fn events(&self) -> &[NotifyEvent] {
        match self {
            NotifySink::Command { events, .. } | NotifySink::Webhook { events, .. } => events,
        }
    }
}
