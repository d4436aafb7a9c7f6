//! The applier's part of the store layout: the records of each environment. The artifact's
//! part (blobs, build records, signatures) is in [`artifact::keys`].
//!
//! ```text
//! envs/<env>/state.json               per-host current / last known good, compare-and-swap
//! envs/<env>/lock                     lease lock (engine::lease)
//! envs/<env>/fence                    the last fencing generation handed out (engine::lease)
//! envs/<env>/deploys/<deploy-id>.json journal of one deploy (its base record)
//! envs/<env>/segments/<deploy-id>/<seq>.seg  the journal's segments while it runs
//! envs/<env>/failure-lock.json        set after a failed deploy, until `applier unlock`
//! ```

pub fn env_state(env: &str) -> String {
    format!("envs/{env}/state.json")
}
pub fn env_lock(env: &str) -> String {
    format!("envs/{env}/lock")
}
pub fn env_fence(env: &str) -> String {
    format!("envs/{env}/fence")
}
pub fn deploy_journal(env: &str, deploy_id: &str) -> String {
    format!("envs/{env}/deploys/{deploy_id}.json")
}
pub fn deploys_prefix(env: &str) -> String {
    format!("envs/{env}/deploys/")
}
pub fn journal_segments(env: &str, deploy_id: &str) -> String {
    format!("envs/{env}/segments/{deploy_id}/")
}
pub fn journal_segment(env: &str, deploy_id: &str, seq: u64) -> String {
    format!("envs/{env}/segments/{deploy_id}/{seq:010}.seg")
}
pub fn failure_lock(env: &str) -> String {
    format!("envs/{env}/failure-lock.json")
}
