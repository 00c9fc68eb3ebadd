//! The action journal: every call that changes the cloud is written to the state database
//! as an intent before it is made, and completed with its outcome after. A restarted daemon
//! reads the intents left open (what was in flight when it stopped), reports them, and
//! reconciles by tags; the journal is also the audit log of what coxswain did and why.
//!
//! It wraps any [`Cloud`], so every caller (scaling, rollouts, garbage collection) is
//! journaled without knowing it.

use crate::clock::Clock;
use crate::cloud::{
    AlarmState, CallCounts, Cloud, CloudError, FleetAnswer, GroupState, Instance, LaunchRequest,
    MetricQuery, MetricSeries, TargetHealth,
};
pub use crate::fence::Fence;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use tracing::error;

pub struct Journaled {
    inner: Arc<dyn Cloud>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    fence: RwLock<Option<Arc<dyn Fence>>>,
    /// Instance ids, target groups, listeners and groups → the fleet they belong to.
    fleet_of: RwLock<HashMap<String, String>>,
    /// Fleets in the config; anything else (orphans) is the garbage collector's.
    fleets: RwLock<HashSet<String>>,
}

impl Journaled {
    pub fn new(inner: Arc<dyn Cloud>, store: Arc<Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            store,
            clock,
            fence: RwLock::new(None),
            fleet_of: RwLock::new(HashMap::new()),
            fleets: RwLock::new(HashSet::new()),
        }
    }

    pub fn set_fence(&self, fence: Option<Arc<dyn Fence>>) {
        if let Ok(mut f) = self.fence.write() {
            *f = fence;
        }
    }

    /// The configured fleets and the resources (target groups, listeners, Auto Scaling
    /// groups) that belong to each.
    pub fn set_fleets(&self, fleets: HashSet<String>, resources: HashMap<String, String>) {
        if let Ok(mut f) = self.fleets.write() {
            *f = fleets;
        }
        if let Ok(mut m) = self.fleet_of.write() {
            m.extend(resources);
        }
    }

    /// The fleet a call acts on, from the first resource it names that is known.
    fn fleet_for(&self, keys: &[&str]) -> String {
        let found = self
            .fleet_of
            .read()
            .ok()
            .and_then(|m| keys.iter().find_map(|k| m.get(*k).cloned()));
        let configured = |f: &str| self.fleets.read().map(|s| s.contains(f)).unwrap_or(false);
        match found {
            Some(f) if configured(&f) => f,
            _ => crate::fence::GC_LEASE.to_string(),
        }
    }

    /// Passes the fence (if any) or refuses the call.
    async fn fenced(
        &self,
        operation: &'static str,
        fleet: &str,
        detail: &str,
    ) -> Result<(), CloudError> {
        let fence = self.fence.read().ok().and_then(|f| f.clone());
        match fence {
            Some(f) if !f.allow(fleet, &format!("{operation} {detail}")).await => {
                Err(CloudError::Rejected {
                    operation,
                    code: "LeaseNotHeld".into(),
                    message: format!("this replica does not hold the lease of {fleet}; not acting"),
                })
            }
            _ => Ok(()),
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

impl Journaled {
    /// Every change goes through here: the fence, then the intent, then the call, then its
    /// outcome. One path, so no kind of change can skip a step.
    async fn change<T>(
        &self,
        operation: &'static str,
        fleet: &str,
        detail: String,
        call: impl std::future::Future<Output = Result<T, CloudError>>,
        ok: impl FnOnce(&T) -> String,
    ) -> Result<T, CloudError> {
        self.fenced(operation, fleet, &detail).await?;
        let id = self.intent(operation, fleet, detail)?;
        let r = call.await;
        self.outcome(id, &r, ok);
        r
    }

    /// The fleet of a call on instances (and optionally the target group they are in).
    fn fleet_of_ids(&self, ids_: &[String], also: Option<&str>) -> String {
        let mut refs: Vec<&str> = ids_.iter().map(String::as_str).collect();
        refs.extend(also);
        self.fleet_for(&refs)
    }
}

fn nothing<T>(_: &T) -> String {
    String::new()
}

#[async_trait::async_trait]
impl Cloud for Journaled {
    async fn list_instances(&self) -> Result<Vec<Instance>, CloudError> {
        let r = self.inner.list_instances().await;
        if let (Ok(list), Ok(mut m)) = (&r, self.fleet_of.write()) {
            for i in list {
                m.insert(i.id.clone(), i.fleet.clone());
            }
        }
        r
    }

    async fn launch(&self, req: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
        let detail = format!(
            "{} x {} type={} subnet={} token={}",
            req.count,
            req.build,
            req.instance_type.as_deref().unwrap_or("-"),
            req.subnet.as_deref().unwrap_or("-"),
            req.client_token
        );
        let r = self
            .change(
                "RunInstances",
                &req.fleet,
                detail,
                self.inner.launch(req),
                |v| {
                    v.iter()
                        .map(|i| i.id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                },
            )
            .await;
        if let (Ok(list), Ok(mut m)) = (&r, self.fleet_of.write()) {
            for i in list {
                m.insert(i.id.clone(), req.fleet.clone());
            }
        }
        r
    }

    async fn create_fleet(&self, req: &LaunchRequest) -> Result<FleetAnswer, CloudError> {
        let detail = format!(
            "{} x {} {} pools={} token={}",
            req.count,
            req.build,
            req.market,
            req.pools
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            req.client_token
        );
        let r = self
            .change(
                "CreateFleet",
                &req.fleet,
                detail,
                self.inner.create_fleet(req),
                |a| {
                    let mut out = a
                        .instances
                        .iter()
                        .map(|i| i.id.as_str())
                        .collect::<Vec<_>>()
                        .join(",");
                    for e in &a.errors {
                        out.push_str(&format!(" [{} {}: {}]", e.market, e.pool, e.code));
                    }
                    out
                },
            )
            .await;
        if let (Ok(a), Ok(mut m)) = (&r, self.fleet_of.write()) {
            for i in &a.instances {
                m.insert(i.id.clone(), req.fleet.clone());
            }
        }
        r
    }

    async fn mark_retiring(&self, ids_: &[String], at: DateTime<Utc>) -> Result<(), CloudError> {
        let fleet = self.fleet_of_ids(ids_, None);
        let call = self.inner.mark_retiring(ids_, at);
        self.change("TagRetiring", &fleet, ids(ids_), call, nothing)
            .await
    }

    async fn mark_replacing(
        &self,
        ids_: &[String],
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CloudError> {
        let fleet = self.fleet_of_ids(ids_, None);
        self.change(
            "TagReplacing",
            &fleet,
            format!("{reason}: {}", ids(ids_)),
            self.inner.mark_replacing(ids_, reason, at),
            nothing,
        )
        .await
    }

    async fn receive_notices(
        &self,
        max: usize,
    ) -> Result<Vec<crate::cloud::QueueMessage>, CloudError> {
        self.inner.receive_notices(max).await
    }

    async fn delete_notices(&self, receipts: &[String]) -> Result<(), CloudError> {
        self.inner.delete_notices(receipts).await
    }

    async fn terminate(&self, ids_: &[String]) -> Result<(), CloudError> {
        let fleet = self.fleet_of_ids(ids_, None);
        let call = self.inner.terminate(ids_);
        self.change("TerminateInstances", &fleet, ids(ids_), call, nothing)
            .await
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

    async fn target_group_load_balancers(
        &self,
        target_groups: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, CloudError> {
        self.inner.target_group_load_balancers(target_groups).await
    }

    async fn set_desired_capacity(&self, group: &str, desired: u32) -> Result<(), CloudError> {
        let fleet = self.fleet_for(&[group]);
        let call = self.inner.set_desired_capacity(group, desired);
        let detail = format!("{group} -> {desired}");
        self.change("SetDesiredCapacity", &fleet, detail, call, nothing)
            .await
    }

    async fn register_targets(
        &self,
        target_group: &str,
        ids_: &[String],
    ) -> Result<(), CloudError> {
        let fleet = self.fleet_of_ids(ids_, Some(target_group));
        let call = self.inner.register_targets(target_group, ids_);
        let detail = format!("{target_group}: {}", ids(ids_));
        self.change("RegisterTargets", &fleet, detail, call, nothing)
            .await
    }

    async fn deregister_targets(
        &self,
        target_group: &str,
        ids_: &[String],
    ) -> Result<(), CloudError> {
        let fleet = self.fleet_of_ids(ids_, Some(target_group));
        let call = self.inner.deregister_targets(target_group, ids_);
        let detail = format!("{target_group}: {}", ids(ids_));
        self.change("DeregisterTargets", &fleet, detail, call, nothing)
            .await
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
        let fleet = self.fleet_for(&[listener_arn]);
        let call = self.inner.set_forward_weights(listener_arn, weights);
        let detail = format!("{listener_arn}: {}", shown.join(","));
        self.change("ModifyListener", &fleet, detail, call, nothing)
            .await
    }

    async fn instances_by_id(&self, ids_: &[String]) -> Result<Vec<Instance>, CloudError> {
        self.inner.instances_by_id(ids_).await
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

    async fn launch_source_missing(
        &self,
        template: Option<&crate::cloud::LaunchTemplate>,
        image_id: Option<&str>,
    ) -> Result<Option<String>, CloudError> {
        self.inner.launch_source_missing(template, image_id).await
    }

    fn calls(&self) -> &CallCounts {
        self.inner.calls()
    }

    fn attempts(&self) -> Vec<(crate::cloud::Attempt, u64)> {
        self.inner.attempts()
    }
}
