//! The real cloud, through the AWS SDK for Rust. One thin module per service wraps only
//! the calls the controller uses; this file wires the clients and maps errors.
//!
//! Retries: the SDK's standard retry mode retries throttling, 5xx and transient network
//! errors with exponential backoff and full jitter. What still fails after that reaches
//! the controller as a typed [`CloudError`], and the daemon backs off between passes.

mod asg;
mod cloudwatch;
mod ec2;
mod elb;
pub mod leases;
pub mod meter;
pub mod setup;
mod sqs;

use super::errors::{is_capacity_code, is_throttling_code};
use super::{
    AlarmState, CallCounts, Cloud, CloudError, GroupState, Instance, LaunchRequest, MetricQuery,
    MetricSeries, TargetHealth,
};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// How to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: String,
    /// Send every service's calls here (moto, LocalStack). Also read from
    /// `AWS_ENDPOINT_URL` by the SDK itself when this is None.
    pub endpoint_url: Option<String>,
    /// Fixed credentials (tests against moto); otherwise the SDK's default chain
    /// (environment, profile, instance role).
    pub static_credentials: Option<(String, String)>,
    /// Attempts per call, the first included (SDK standard retry mode).
    pub max_attempts: Option<u32>,
}

/// The SDK's first backoff is this long; later ones grow exponentially with full jitter.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Five attempts ride out a burst of throttling (about 0.2+0.4+0.8+1.6 s of backoff)
/// without stalling a pass for long.
const DEFAULT_ATTEMPTS: u32 = 5;
/// A stalled connection must not hang a pass (and with it SIGTERM): each attempt gets 20 s
/// (a 1,000-instance DescribeInstances page takes a few), the whole call with its retries
/// 60 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    asg: aws_sdk_autoscaling::Client,
    cw: aws_sdk_cloudwatch::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    /// For replicas' leases (same endpoint, credentials and retry settings).
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    /// The interruption queue's URL (`interruption_queue` in the manifest), if any.
    interruption_queue: Option<String>,
    controller_id: String,
    calls: CallCounts,
    /// Every attempt of every call, counted by the clients' interceptor.
    meter: meter::CallMeter,
}

impl AwsCloud {
    pub async fn connect(opts: &AwsOptions, controller_id: &str) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(opts.max_attempts.unwrap_or(DEFAULT_ATTEMPTS))
                    .with_initial_backoff(INITIAL_BACKOFF),
            );
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((key, secret)) = &opts.static_credentials {
            loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                key,
                secret,
                None,
                None,
                "coxswain-static",
            ));
        }
        let shared = loader.load().await;
        // Every client counts its calls (each attempt) for /metrics.
        let meter = meter::CallMeter::default();
        Self {
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&shared)
                    .interceptor(meter.clone())
                    .build(),
            ),
            asg: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(&shared)
                    .interceptor(meter.clone())
                    .build(),
            ),
            cw: aws_sdk_cloudwatch::Client::from_conf(
                aws_sdk_cloudwatch::config::Builder::from(&shared)
                    .interceptor(meter.clone())
                    .build(),
            ),
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(&shared)
                    .interceptor(meter.clone())
                    .build(),
            ),
            ddb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&shared)
                    .interceptor(meter.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(&shared)
                    .interceptor(meter.clone())
                    .build(),
            ),
            interruption_queue: None,
            controller_id: controller_id.to_string(),
            calls: CallCounts::default(),
            meter,
        }
    }

    /// Read EC2's notices from this SQS queue (its URL).
    pub fn with_interruption_queue(mut self, queue_url: Option<String>) -> Self {
        self.interruption_queue = queue_url;
        self
    }
}

impl AwsCloud {
    /// A DynamoDB client configured like the rest (replicas' leases and shared state).
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        self.ddb.clone()
    }
}

/// Map an SDK error to what it means for the controller, keeping the code.
pub(crate) fn classify<E, R>(operation: &'static str, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().map(str::to_string);
    let message = err
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| error_chain(&err));
    match code {
        Some(code) if is_throttling_code(&code) => CloudError::Throttled { operation, code },
        Some(code) if is_capacity_code(&code) => CloudError::InsufficientCapacity {
            operation,
            code,
            message,
        },
        Some(code) if matches!(err, SdkError::ServiceError(_)) && !is_server_fault(&code) => {
            CloudError::Rejected {
                operation,
                code,
                message,
            }
        }
        _ => CloudError::Service {
            operation,
            message,
            source: Some(Box::new(err)),
        },
    }
}

/// An error and its sources, each by its `Display`, joined by ": " (the SDK's own
/// `DisplayErrorContext` appends the whole `Debug` form, which is not for operators'
/// logs). Repeated messages (a wrapper repeating its source) are shown once.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn is_server_fault(code: &str) -> bool {
    matches!(
        code,
        "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
            | "InternalServiceError"
    )
}

pub(crate) fn to_chrono(t: &aws_smithy_types::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default()
}

pub(crate) fn from_chrono(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(t.timestamp())
}

#[async_trait::async_trait]
impl Cloud for AwsCloud {
    async fn list_instances(&self) -> Result<Vec<Instance>, CloudError> {
        ec2::list_owned(&self.ec2, &self.controller_id, &self.calls).await
    }

    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
        CallCounts::bump(&self.calls.run_instances);
        ec2::run(&self.ec2, req).await
    }

    async fn create_fleet(
        &self,
        req: &LaunchRequest,
    ) -> Result<crate::cloud::FleetAnswer, CloudError> {
        CallCounts::bump(&self.calls.create_fleet);
        ec2::create_fleet(&self.ec2, req).await
    }

    async fn mark_retiring(&self, ids: &[String], at: DateTime<Utc>) -> Result<(), CloudError> {
        ec2::mark_retiring(&self.ec2, &self.controller_id, ids, at, &self.calls).await
    }

    async fn mark_replacing(
        &self,
        ids: &[String],
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CloudError> {
        let value = format!("{reason} at {}", at.to_rfc3339());
        ec2::mark_replacing(&self.ec2, &self.controller_id, ids, value, &self.calls).await
    }

    async fn receive_notices(
        &self,
        max: usize,
    ) -> Result<Vec<crate::cloud::QueueMessage>, CloudError> {
        match &self.interruption_queue {
            Some(url) => sqs::receive(&self.sqs, url, max, &self.calls).await,
            None => Ok(Vec::new()),
        }
    }

    async fn delete_notices(&self, receipts: &[String]) -> Result<(), CloudError> {
        match &self.interruption_queue {
            Some(url) => sqs::delete(&self.sqs, url, receipts, &self.calls).await,
            None => Ok(()),
        }
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), CloudError> {
        ec2::terminate(&self.ec2, &self.controller_id, ids, &self.calls).await
    }

    async fn get_metrics(
        &self,
        queries: &[MetricQuery],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<MetricSeries>, CloudError> {
        cloudwatch::get_metrics(&self.cw, queries, start, end, &self.calls).await
    }

    async fn describe_groups(&self, names: &[String]) -> Result<Vec<GroupState>, CloudError> {
        asg::describe(&self.asg, names, &self.calls).await
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.set_desired_capacity);
        asg::set_desired(&self.asg, group, desired).await
    }

    async fn register_targets(&self, target_group: &str, ids: &[String]) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.register_targets);
        elb::register(&self.elb, target_group, ids).await
    }

    async fn deregister_targets(
        &self,
        target_group: &str,
        ids: &[String],
    ) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.deregister_targets);
        elb::deregister(&self.elb, target_group, ids).await
    }

    async fn target_health(
        &self,
        target_group: &str,
    ) -> Result<Vec<(String, TargetHealth)>, CloudError> {
        CallCounts::bump(&self.calls.describe_target_health);
        elb::health(&self.elb, target_group).await
    }

    async fn target_group_load_balancers(
        &self,
        target_groups: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, CloudError> {
        elb::load_balancers_of(&self.elb, target_groups, &self.calls).await
    }

    async fn set_forward_weights(
        &self,
        listener_arn: &str,
        weights: &[(String, u32)],
    ) -> Result<(), CloudError> {
        CallCounts::bump(&self.calls.modify_listener);
        elb::set_weights(&self.elb, listener_arn, weights).await
    }

    async fn launch_source_missing(
        &self,
        template: Option<&crate::cloud::LaunchTemplate>,
        image_id: Option<&str>,
    ) -> Result<Option<String>, CloudError> {
        ec2::source_missing(&self.ec2, template, image_id).await
    }

    async fn instances_by_id(&self, ids: &[String]) -> Result<Vec<Instance>, CloudError> {
        ec2::by_id(&self.ec2, ids, &self.calls).await
    }

    async fn instance_status(&self, ids: &[String]) -> Result<Vec<(String, bool)>, CloudError> {
        ec2::instance_status(&self.ec2, ids, &self.calls).await
    }

    async fn alarm_states(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, AlarmState)>, CloudError> {
        cloudwatch::alarm_states(&self.cw, names, &self.calls).await
    }

    fn attempts(&self) -> Vec<(crate::cloud::Attempt, u64)> {
        self.meter.attempts()
    }

    fn calls(&self) -> &CallCounts {
        &self.calls
    }
}

#[cfg(test)]
mod error_chain_tests {
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("dispatch failure")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_reads_as_sentences_not_debug_dumps() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "tcp connect error",
        ));
        let text = super::error_chain(&e);
        assert_eq!(text, "dispatch failure: tcp connect error");
        assert!(!text.contains("Outer(") && !text.contains("Custom {"));
    }
}
