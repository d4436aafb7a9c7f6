//! Tests of the env records: one spelling for steps and statuses, and journals written with
//! older spellings still read.

use super::*;

const STEPS: &[Step] = &[
    Step::PromotionCheck,
    Step::Signature,
    Step::StorageGuard,
    Step::Override,
    Step::Skipped,
    Step::Resume,
    Step::ResumeRollback,
    Step::Lease,
    Step::Preflight,
    Step::Fetch,
    Step::Capacity,
    Step::Abort,
    Step::Prune,
    Step::Record,
    Step::Spec,
    Step::Port,
    Step::Depool,
    Step::Stop,
    Step::Render,
    Step::Switch,
    Step::Start,
    Step::Ready,
    Step::Checks,
    Step::MarkGood,
    Step::Repool,
    Step::Recheck,
    Step::Panic,
    Step::Analysis,
    Step::Watch,
    Step::Quorum,
    Step::FastRollback,
    Step::Freeze,
    Step::FailureLock,
    Step::StoreRequests,
];

#[test]
fn one_spelling_for_steps_and_statuses() {
    for s in STEPS {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "{s:?}");
    }
    for s in [
        JournalStatus::Running,
        JournalStatus::Succeeded,
        JournalStatus::RolledBack,
        JournalStatus::NeedsHuman,
        JournalStatus::Refused,
    ] {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "{s:?}");
    }
    assert_eq!(JournalStatus::RolledBack.as_str(), "rolled_back");
}

#[test]
fn journals_with_the_old_step_spellings_still_read() {
    for (old, new) in [
        ("mark-good", Step::MarkGood),
        ("promotion-check", Step::PromotionCheck),
        ("resume-rollback", Step::ResumeRollback),
    ] {
        let s: Step = serde_json::from_value(serde_json::json!(old)).unwrap();
        assert_eq!(s, new);
    }
}
