//! SQS: the interruption queue (EC2's notices, delivered by EventBridge rules that
//! `coxswain init` creates). Read with short polling, deleted once handled.

use super::classify;
use crate::cloud::{CallCounts, CloudError, QueueMessage};
use aws_sdk_sqs::Client;

/// SQS ReceiveMessage answers at most 10 messages per call.
const PER_CALL: i32 = 10;
/// A received message not deleted comes back to the queue after this many seconds (for
/// another pass, or another replica that owns its fleet).
const VISIBILITY_SECS: i32 = 30;

pub(super) async fn receive(
    client: &Client,
    queue_url: &str,
    max: usize,
    calls: &CallCounts,
) -> Result<Vec<QueueMessage>, CloudError> {
    let mut out = Vec::new();
    while out.len() < max {
        CallCounts::bump(&calls.receive_message);
        let want = (max - out.len()).min(PER_CALL as usize) as i32;
        let resp = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(want)
            .visibility_timeout(VISIBILITY_SECS)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|e| classify("ReceiveMessage", e))?;
        let got: Vec<QueueMessage> = resp
            .messages()
            .iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                })
            })
            .collect();
        if got.is_empty() {
            break;
        }
        out.extend(got);
    }
    Ok(out)
}

pub(super) async fn delete(
    client: &Client,
    queue_url: &str,
    receipts: &[String],
    calls: &CallCounts,
) -> Result<(), CloudError> {
    for r in receipts {
        CallCounts::bump(&calls.delete_message);
        client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(r)
            .send()
            .await
            .map_err(|e| classify("DeleteMessage", e))?;
    }
    Ok(())
}
