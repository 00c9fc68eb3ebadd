//! Every attempt of every AWS call, counted by service, operation and outcome, by an SDK
//! interceptor on each client of one [`super::AwsCloud`]: retries included, so the numbers
//! are what AWS saw (`coxswain_aws_calls_total` on `/metrics`).

use crate::cloud::Attempt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts each attempt of each AWS call by service, operation and outcome: `ok`,
/// `throttled` (HTTP 429, or an error code AWS uses for throttling, whatever the status:
/// EC2's `RequestLimitExceeded` is a 503, most others a 400), `client_error` for other
/// 4xx, `server_error` for other 5xx, `network` when no response came back.
///
/// One meter is made per [`super::AwsCloud`] and set on each of its SDK clients (clones
/// share the counts); [`crate::cloud::Cloud::attempts`] reads them.
#[derive(Debug, Default, Clone)]
pub struct CallMeter {
    table: Arc<Mutex<HashMap<Attempt, u64>>>,
}

impl CallMeter {
    /// Every attempt counted so far, with its count, in no particular order.
    pub fn attempts(&self) -> Vec<(Attempt, u64)> {
        self.table
            .lock()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CallMeter {
    fn name(&self) -> &'static str {
        "coxswain-aws-call-meter"
    }

    fn read_after_attempt(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let (service, operation) = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        let outcome = match context.response() {
            None => "network",
            Some(r) => {
                let status = r.status().as_u16();
                let cbor = r
                    .headers()
                    .get("content-type")
                    .is_some_and(|t| t.contains("cbor"));
                let throttled = status == 429
                    || (status >= 400
                        && r.body()
                            .bytes()
                            .is_some_and(|b| names_a_throttling_code(b, cbor)));
                match status {
                    _ if throttled => "throttled",
                    500.. => "server_error",
                    400.. => "client_error",
                    _ => "ok",
                }
            }
        };
        if let Ok(mut t) = self.table.lock() {
            *t.entry(Attempt {
                service,
                operation,
                outcome: outcome.to_string(),
            })
            .or_default() += 1;
        }
        Ok(())
    }
}

/// Whether an error body names a throttling code as a whole string. In XML and JSON the
/// code must not run on into more of a word (`Throttlingish` is not `Throttling`). In
/// CBOR (`cbor`: Smithy RPC v2, CloudWatch) a string's bytes are preceded by a header
/// giving its length, and followed by whatever comes next: the code must be a whole text
/// string by its header, or end a namespaced one (`...#ThrottlingException`) as a whole
/// code. Only the first 4 KiB are read.
fn names_a_throttling_code(body: &[u8], cbor: bool) -> bool {
    let body = &body[..body.len().min(4096)];
    crate::cloud::errors::THROTTLING_CODES.iter().any(|code| {
        let code = code.as_bytes();
        body.windows(code.len()).enumerate().any(|(i, w)| {
            if w != code {
                return false;
            }
            let after = body.get(i + code.len());
            if !cbor {
                return !after.is_some_and(|b| b.is_ascii_alphanumeric());
            }
            let before = |n: usize| i.checked_sub(n).and_then(|j| body.get(j)).copied();
            let len = code.len();
            let whole_string = (len < 24 && before(1) == Some(0x60 + len as u8))
                || (before(2) == Some(0x78) && before(1) == Some(len as u8));
            // After a namespace: the longest code wins (`Throttling` is not the start of
            // `...#ThrottlingException`).
            let namespaced = before(1) == Some(b'#')
                && !crate::cloud::errors::THROTTLING_CODES
                    .iter()
                    .any(|c| c.len() > len && body[i..].starts_with(c.as_bytes()));
            whole_string || namespaced
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_told_from_other_errors_in_every_protocol() {
        assert!(names_a_throttling_code(
            b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>",
            false
        ));
        assert!(names_a_throttling_code(
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"x"}"#,
            false
        ));
        assert!(!names_a_throttling_code(
            b"<Code>InvalidParameterValue</Code><Message>not Throttlingish</Message>",
            false
        ));
        assert!(!names_a_throttling_code(
            b"<Code>UnauthorizedOperation</Code>",
            false
        ));
        // CBOR, as CloudWatch answers (Smithy RPC v2): {"__type": code, "message": ...}.
        let cbor = |code: &str| {
            let mut v = vec![0xa2, 0x66];
            v.extend_from_slice(b"__type");
            let len = code.len();
            if len < 24 {
                v.push(0x60 + len as u8);
            } else {
                v.extend_from_slice(&[0x78, len as u8]);
            }
            v.extend_from_slice(code.as_bytes());
            v.push(0x67);
            v.extend_from_slice(b"message");
            v.extend_from_slice(&[0x61, b'x']);
            v
        };
        assert!(names_a_throttling_code(&cbor("ThrottlingException"), true));
        assert!(names_a_throttling_code(&cbor("Throttling"), true));
        assert!(names_a_throttling_code(
            &cbor("com.amazonaws.cloudwatch#ThrottlingException"),
            true
        ));
        assert!(!names_a_throttling_code(
            &cbor("InvalidParameterValue"),
            true
        ));
        assert!(!names_a_throttling_code(&cbor("ThrottlingIsFine"), true));
    }
}
