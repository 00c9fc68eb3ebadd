//! The action journal: every call that changes the cloud is written to the state database
//! as an intent before it is made, and completed with its outcome after. A restarted daemon
//! reads the intents left open (what was in flight when it stopped), reports them, and
//! reconciles by tags; the journal is also the audit log of what coxswain did and why.
//!
//! It wraps any [`Cloud`], so every caller (scaling, rollouts, garbage collection) is
//! journaled without knowing it.

use crate::clock::Clock;
use crate::cloud::{
    AlarmState, CallCounts, Cloud, CloudError, GroupState, Instance, LaunchRequest, MetricQuery,
    MetricSeries, TargetHealth,
};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tracing::error;

pub struct Journaled {
    inner: Arc<dyn Cloud>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
}

impl Journaled {
    pub fn new(inner: Arc<dyn Cloud>, store: Arc<Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            store,
            clock,
        }
    }

    /// Write the intent; without it the action is not taken.
    fn intent(
        &self,
        operation: &'static str,
        fleet: &str,
        detail: String,
    ) -> Result<i64, CloudError> {
        self.store
            .action_intent(self.clock.now(), fleet, operation, &detail)
            .map_err(|e| {
                error!(error = %e, operation, "cannot journal an intent; not acting");
                CloudError::Service {
                    operation,
                    message: format!("the state database refused the intent: {e}"),
                    source: None,
                }
            })
    }

    fn outcome<T>(&self, id: i64, result: &Result<T, CloudError>, ok: impl FnOnce(&T) -> String) {
        let text = match result {
            Ok(v) => format!("ok: {}", ok(v)),
            Err(e) => format!("failed: {e}"),
        };
        if let Err(e) = self.store.action_done(id, self.clock.now(), &text) {
            error!(error = %e, id, "cannot journal an outcome");
        }
    }
}

fn ids(ids: &[String]) -> String {
    ids.join(",")
}

#[async_trait::async_trait]
impl Cloud for Journaled {
    async fn list_instances(&self) -> Result<Vec<Instance>, CloudError> {
        self.inner.list_instances().await
    }

    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
        let id = self.intent(
            "RunInstances",
            &req.fleet,
            format!(
                "{} x {} type={} subnet={} token={}",
                req.count,
                req.build,
                req.instance_type.as_deref().unwrap_or("-"),
                req.subnet.as_deref().unwrap_or("-"),
                req.client_token
            ),
        )?;
        let r = self.inner.launch(req).await;
        self.outcome(id, &r, |v| {
            v.iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>()
                .join(",")
        });
        r
    }

    async fn mark_retiring(&self, ids_: &[String], at: DateTime<Utc>) -> Result<(), CloudError> {
        let id = self.intent("TagRetiring", "", ids(ids_))?;
        let r = self.inner.mark_retiring(ids_, at).await;
        self.outcome(id, &r, |_| String::new());
        r
    }

    async fn terminate(&self, ids_: &[String]) -> Result<(), CloudError> {
        let id = self.intent("TerminateInstances", "", ids(ids_))?;
        let r = self.inner.terminate(ids_).await;
        self.outcome(id, &r, |_| String::new());
        r
    }

    async fn get_metrics(
        &self,
        queries: &[MetricQuery],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<MetricSeries>, CloudError> {
        self.inner.get_metrics(queries, start, end).await
    }

    async fn describe_groups(&self, names: &[String]) -> Result<Vec<GroupState>, CloudError> {
        self.inner.describe_groups(names).await
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), CloudError> {
        let id = self.intent("SetDesiredCapacity", "", format!("{group} -> {desired}"))?;
        let r = self.inner.set_desired_capacity(group, desired).await;
        self.outcome(id, &r, |_| String::new());
        r
    }

    async fn register_targets(
        &self,
        target_group: &str,
        ids_: &[String],
    ) -> Result<(), CloudError> {
        let id = self.intent(
            "RegisterTargets",
            "",
            format!("{target_group}: {}", ids(ids_)),
        )?;
        let r = self.inner.register_targets(target_group, ids_).await;
        self.outcome(id, &r, |_| String::new());
        r
    }

    async fn deregister_targets(
        &self,
        target_group: &str,
        ids_: &[String],
    ) -> Result<(), CloudError> {
        let id = self.intent(
            "DeregisterTargets",
            "",
            format!("{target_group}: {}", ids(ids_)),
        )?;
        let r = self.inner.deregister_targets(target_group, ids_).await;
        self.outcome(id, &r, |_| String::new());
        r
    }

    async fn target_health(
        &self,
        target_group: &str,
    ) -> Result<Vec<(String, TargetHealth)>, CloudError> {
        self.inner.target_health(target_group).await
    }

    async fn set_forward_weights(
        &self,
        listener_arn: &str,
        weights: &[(String, u32)],
    ) -> Result<(), CloudError> {
        let shown: Vec<String> = weights.iter().map(|(tg, w)| format!("{tg}={w}")).collect();
        let id = self.intent(
            "ModifyListener",
            "",
            format!("{listener_arn}: {}", shown.join(",")),
        )?;
        let r = self.inner.set_forward_weights(listener_arn, weights).await;
        self.outcome(id, &r, |_| String::new());
        r
    }

    async fn instance_status(&self, ids_: &[String]) -> Result<Vec<(String, bool)>, CloudError> {
        self.inner.instance_status(ids_).await
    }

    async fn alarm_states(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, AlarmState)>, CloudError> {
        self.inner.alarm_states(names).await
    }

    fn calls(&self) -> &CallCounts {
        self.inner.calls()
    }
}
