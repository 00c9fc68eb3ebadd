//! What `coxswain init --interruption-queue` creates, once, with an administrator's
//! credentials (the daemon's role cannot): the SQS queue EC2's notices arrive on, and one
//! EventBridge rule per kind of notice sending them there
//! ([`crate::cloud::interruption::event_patterns`]). The CloudFormation in `deploy/`
//! creates the same (a test checks). Idempotent: run again, it finds what exists.

use crate::cloud::interruption::event_patterns;
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;

/// How long a notice waits on the queue: a notice older than this is stale (a Spot
/// warning is about the next two minutes), and the daemon reads every pass.
pub const RETENTION_SECS: u32 = 300;

/// The queue's name for a prefix (`coxswain` → `coxswain-interruptions`).
pub fn queue_name(prefix: &str) -> String {
    format!("{prefix}-interruptions")
}

/// The rules' names: `PREFIX-SUFFIX` for each pattern.
pub fn rule_name(prefix: &str, suffix: &str) -> String {
    format!("{prefix}-{suffix}")
}

/// What was created or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub queue_url: String,
    pub queue_arn: String,
    pub rules: Vec<String>,
}

/// Create (or find) the queue and the rules. Errors name the call that failed.
pub async fn create_interruption_queue(
    sqs: &aws_sdk_sqs::Client,
    events: &aws_sdk_eventbridge::Client,
    prefix: &str,
) -> Result<Created, String> {
    let name = queue_name(prefix);
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            RETENTION_SECS.to_string(),
        )
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .send()
        .await
        .map_err(|e| {
            format!(
                "CreateQueue {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?
        .queue_url()
        .map(str::to_string)
        .ok_or_else(|| format!("CreateQueue {name}: no queue URL in the answer"))?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "GetQueueAttributes {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| format!("GetQueueAttributes {name}: no QueueArn"))?;
    // EventBridge may send to it, for these rules only (aws:SourceArn: no other rule,
    // of this account or another, can use EventBridge to write to the queue).
    let mut parts = arn.split(':');
    let (region, account) = (parts.nth(3).unwrap_or("*"), parts.next().unwrap_or("*"));
    let sources: Vec<String> = event_patterns()
        .iter()
        .map(|(suffix, _)| {
            format!(
                "arn:aws:events:{region}:{account}:rule/{}",
                rule_name(prefix, suffix)
            )
        })
        .collect();
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "EventBridgeSendsEc2Notices",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": sources}},
        }]
    });
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| {
            format!(
                "SetQueueAttributes {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?;
    let mut rules = Vec::new();
    for (suffix, pattern) in event_patterns() {
        let rule = rule_name(prefix, suffix);
        events
            .put_rule()
            .name(&rule)
            .event_pattern(pattern.to_string())
            .description("coxswain: EC2 notices to the interruption queue")
            .send()
            .await
            .map_err(|e| {
                format!(
                    "PutRule {rule}: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(&e)
                )
            })?;
        let target = Target::builder()
            .id("coxswain-interruption-queue")
            .arn(&arn)
            .build()
            .map_err(|e| format!("PutTargets {rule}: {e}"))?;
        let out = events
            .put_targets()
            .rule(&rule)
            .targets(target)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "PutTargets {rule}: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(&e)
                )
            })?;
        if out.failed_entry_count() > 0 {
            return Err(format!("PutTargets {rule}: {:?}", out.failed_entries()));
        }
        rules.push(rule);
    }
    Ok(Created {
        queue_url: url,
        queue_arn: arn,
        rules,
    })
}

/// The mean Spot price (USD per instance-hour) of each of `types` in the client's region
/// over `[start, end)`: the DescribeSpotPriceHistory points for `Linux/UNIX`, each price
/// weighted by how long it held in its Availability Zone, the zones averaged
/// ([`crate::cloud::market::time_weighted_means`];
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSpotPriceHistory.html>).
/// For `coxswain simulate --spot-prices-from-aws`, run by a person: the daemon never
/// calls it. A type without any point is absent from the answer.
pub async fn spot_price_means(
    ec2: &aws_sdk_ec2::Client,
    types: &[String],
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<std::collections::BTreeMap<String, (f64, usize)>, String> {
    let mut points: Vec<crate::cloud::market::SpotPricePoint> = Vec::new();
    let mut pages = ec2
        .describe_spot_price_history()
        .set_instance_types(Some(
            types
                .iter()
                .map(|t| aws_sdk_ec2::types::InstanceType::from(t.as_str()))
                .collect(),
        ))
        .product_descriptions("Linux/UNIX")
        .start_time(aws_smithy_types::DateTime::from_secs(start.timestamp()))
        .end_time(aws_smithy_types::DateTime::from_secs(end.timestamp()))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            format!(
                "DescribeSpotPriceHistory: {}",
                aws_sdk_ec2::error::DisplayErrorContext(&e)
            )
        })?;
        for p in page.spot_price_history() {
            let (Some(t), Some(price)) = (p.instance_type(), p.spot_price()) else {
                continue;
            };
            let price: f64 = price.parse().map_err(|_| {
                format!("DescribeSpotPriceHistory: a price that is not a number: {price}")
            })?;
            points.push(crate::cloud::market::SpotPricePoint {
                instance_type: t.as_str().to_string(),
                zone: p.availability_zone().unwrap_or_default().to_string(),
                at: p.timestamp().map_or(start.timestamp(), |t| t.secs()),
                price,
            });
        }
    }
    Ok(crate::cloud::market::time_weighted_means(
        &points,
        start.timestamp(),
        end.timestamp(),
    ))
}
