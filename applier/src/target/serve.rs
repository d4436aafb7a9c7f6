//! The protocol session of `applier host`: requests as JSON lines on its input, one answer
//! line each on its output.
//!
//! The first request must be [`HostRequest::Hello`] with this [`PROTOCOL_VERSION`]; another
//! version, a request before the hello, or a line that is not a known request is answered
//! with a `protocol` or `version` error and ends the session (nothing is run). With a `label`
//! (`applier host --root R <op>`, which names the request in process listings), every request
//! must be of that op. A label with no input at all runs that request alone, without a hello
//! (the same binary on both sides, e.g. `applier host --root R stop` in a script), if the
//! request needs no fields.

use std::io::{self, BufRead, Write};

use serde_json::Value;

use super::HostRoot;
use crate::protocol::{HostError, HostRequest, HostResponse, PROTOCOL_VERSION};

/// How a session went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Requests answered (hello included).
    pub answered: usize,
    /// Of those, how many failed.
    pub failed: usize,
    /// The session was refused (protocol or version error): nothing more was run.
    pub refused: bool,
}

/// Parses one request line; any failure is a protocol error naming what was wrong.
pub fn parse_request(line: &str) -> Result<HostRequest, HostError> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| HostError::Protocol(format!("a request is one JSON object per line: {e}")))?;
    let op = match v.get("op") {
        Some(Value::String(op)) => op.clone(),
        _ => {
            return Err(HostError::Protocol(
                "a request is a JSON object with a string `op`".into(),
            ));
        }
    };
    serde_json::from_value(v).map_err(|e| {
        HostError::Protocol(if e.to_string().starts_with("unknown variant") {
            format!("unknown request `{op}` (host protocol {PROTOCOL_VERSION}): {e}")
        } else {
            format!("request `{op}`: {e}")
        })
    })
}

fn answer(out: &mut impl Write, r: &HostResponse) -> io::Result<()> {
    let line = serde_json::to_string(r).expect("responses serialise");
    writeln!(out, "{line}")?;
    out.flush()
}

/// Serves one session of requests from `input`, answering on `output`.
pub fn serve(
    root: &HostRoot,
    input: impl BufRead,
    mut output: impl Write,
    label: Option<&str>,
) -> io::Result<ServeSummary> {
    let mut sum = ServeSummary::default();
    let mut lines = input.lines().peekable();
    if let (Some(op), None) = (label, lines.peek()) {
        // A bare `applier host --root R <op>`.
        let r = match parse_request(&serde_json::json!({ "op": op }).to_string()) {
            Ok(HostRequest::Hello(_)) | Err(_) => {
                sum.refused = true;
                HostResponse::Error(
                    HostError::Protocol(format!(
                        "`{op}` is not a request that needs no fields: send it as JSON on stdin, after a hello"
                    ))
                    .to_remote(),
                )
            }
            Ok(req) => root.handle(req),
        };
        sum.answered = 1;
        sum.failed = matches!(r, HostResponse::Error(_)) as usize;
        answer(&mut output, &r)?;
        return Ok(sum);
    }
    let mut hello = false;
    for line in lines {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let req = parse_request(&line).and_then(|req| match (&req, label) {
            (HostRequest::Hello(_), _) => Ok(req),
            _ if !hello => Err(HostError::Protocol(format!(
                "the session must open with a hello (protocol {PROTOCOL_VERSION}), got `{}`",
                req.op()
            ))),
            (_, Some(l)) if req.op() != l => Err(HostError::Protocol(format!(
                "request `{}` in a session labelled `{l}`",
                req.op()
            ))),
            _ => Ok(req),
        });
        let r = match req {
            Err(e) => {
                sum.refused = true;
                HostResponse::Error(e.to_remote())
            }
            Ok(HostRequest::Hello(h)) => match h.answer() {
                Ok(r) => {
                    hello = true;
                    HostResponse::Hello(r)
                }
                Err(e) => {
                    sum.refused = true;
                    HostResponse::Error(e.to_remote())
                }
            },
            Ok(req) => root.handle(req),
        };
        sum.answered += 1;
        sum.failed += matches!(r, HostResponse::Error(_)) as usize;
        answer(&mut output, &r)?;
        if sum.refused {
            break;
        }
    }
    Ok(sum)
}
