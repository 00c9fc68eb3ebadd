//! The `kind: Controller` document: controller id, poll interval, the global cap,
//! notifications and garbage collection.

use super::HumanDuration;
use serde::{Deserialize, Serialize};

/// Controller-wide settings: a document with `kind: Controller`. At most one.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSpec {
    pub kind: String,
    /// Value of the `coxswain:controller` ownership tag. Two installations with different
    /// ids never touch each other's instances.
    #[serde(default = "default_controller_id")]
    pub controller_id: String,
    /// How often each fleet is reconciled.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// Hard cost cap across all fleets: the sum of instances never exceeds it.
    #[serde(default)]
    pub max_total_instances: Option<u32>,
    #[serde(default)]
    pub gc: GcSpec,
    /// Where to tell people what happened: chat and on-call webhooks.
    #[serde(default)]
    pub notifications: NotificationsSpec,
    /// The SQS queue URL EC2's notices arrive on (Spot interruption warnings, rebalance
    /// recommendations, scheduled events, state changes): `coxswain init
    /// --interruption-queue` creates it with its EventBridge rules and prints the URL.
    /// Without it, an interrupted Spot instance is replaced once EC2 has taken it.
    #[serde(default)]
    pub interruption_queue: Option<String>,
}

impl Default for ControllerSpec {
    fn default() -> Self {
        Self {
            kind: "Controller".into(),
            controller_id: default_controller_id(),
            poll_interval: default_poll(),
            max_total_instances: None,
            gc: GcSpec::default(),
            notifications: NotificationsSpec::default(),
            interruption_queue: None,
        }
    }
}

/// Notifications: webhook sinks and what counts as news.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSpec {
    #[serde(default)]
    pub sinks: Vec<SinkSpec>,
    /// A decision that changes a fleet by at least this many instances is a scale event.
    #[serde(default = "default_scale_threshold")]
    pub scale_threshold: u32,
}

impl Default for NotificationsSpec {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            scale_threshold: default_scale_threshold(),
        }
    }
}

fn default_scale_threshold() -> u32 {
    5
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    RolloutStarted,
    RolloutSucceeded,
    RolloutRolledBack,
    Scale,
    CostCap,
    MetricsMissing,
    /// Repair stopped: more than `scaling.repair.max_unhealthy_share` of a fleet is
    /// unhealthy at once (and again when it resumes).
    RepairHalted,
    /// A fleet's live capacity stayed below its decision for more than two passes (and
    /// again when it has caught up).
    Shortfall,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 8] = [
        NotifyEvent::RolloutStarted,
        NotifyEvent::RolloutSucceeded,
        NotifyEvent::RolloutRolledBack,
        NotifyEvent::Scale,
        NotifyEvent::CostCap,
        NotifyEvent::MetricsMissing,
        NotifyEvent::RepairHalted,
        NotifyEvent::Shortfall,
    ];
}

/// A webhook. Secrets (the Slack URL, the OpsGenie key) are best given by the name of an
/// environment variable holding them, so they stay out of manifests and logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkSpec {
    /// A Slack-compatible incoming webhook (`{"text": ...}`): Slack, Mattermost, Rocket.Chat.
    Slack(SlackSink),
    /// OpsGenie's Alert API (`POST /v2/alerts`, `Authorization: GenieKey KEY`).
    Opsgenie(OpsgenieSink),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSink {
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the webhook URL (preferred: the URL is a secret).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Default: every event.
    #[serde(default)]
    pub events: Option<Vec<NotifyEvent>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieSink {
    /// Default: OpsGenie's US endpoint; EU accounts use their own.
    #[serde(default = "default_opsgenie_url")]
    pub url: String,
    /// Environment variable holding the API integration key.
    pub api_key_env: String,
    /// Default: the ones worth waking someone for: rollbacks, the cost cap, missing metrics,
    /// a halted repair.
    #[serde(default)]
    pub events: Option<Vec<NotifyEvent>>,
}

fn default_opsgenie_url() -> String {
    "https://api.opsgenie.com/v2/alerts".into()
}

fn default_controller_id() -> String {
    "coxswain".into()
}

/// 60 s: CloudWatch's standard resolution. Polling faster reads the same datapoint twice.
fn default_poll() -> HumanDuration {
    HumanDuration::secs(60)
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GcSpec {
    /// Terminate owned instances whose fleet no longer exists in the manifests.
    #[serde(default = "yes")]
    pub terminate_orphans: bool,
    /// How long an instance must stay orphaned before it is terminated. 15 minutes gives
    /// an operator time to restore a manifest deleted by mistake.
    #[serde(default = "default_gc_grace")]
    pub grace: HumanDuration,
}

impl Default for GcSpec {
    fn default() -> Self {
        Self {
            terminate_orphans: true,
            grace: default_gc_grace(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_gc_grace() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}
