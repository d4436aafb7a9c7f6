//! A batch: several host requests in one round trip (protocol 3), run in order as each would
//! run alone, until the first that fails.

use serde::{Deserialize, Serialize};

use super::{HostError, HostRequest, HostResponse};

/// Requests run one after another in one round trip (each admitted by its own fence, under
/// the host's lock as it would be alone); the first that fails ends the batch. A batch holds
/// no hello and no batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub requests: Vec<HostRequest>,
}

impl BatchRequest {
    /// Runs the requests in order through `one` until the first answered with an error. A
    /// batch holding a hello or a batch is refused whole, before anything runs.
    pub fn run(
        self,
        mut one: impl FnMut(HostRequest) -> HostResponse,
    ) -> Result<BatchReport, HostError> {
        if let Some(r) = self
            .requests
            .iter()
            .find(|r| matches!(r, HostRequest::Batch(_) | HostRequest::Hello(_)))
        {
            return Err(HostError::Protocol(format!(
                "a batch holds no `{}` request",
                r.op()
            )));
        }
        let mut answers = Vec::with_capacity(self.requests.len());
        for r in self.requests {
            let a = one(r);
            let failed = matches!(a, HostResponse::Error(_));
            answers.push(a);
            if failed {
                break;
            }
        }
        Ok(BatchReport { answers })
    }
}

/// The answers of a batch, in order: one per request run, the last an `error` if one failed
/// (the requests after it were not run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchReport {
    pub answers: Vec<HostResponse>,
}
