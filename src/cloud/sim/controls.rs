//! What tests, the demo and the simulator do to the simulated cloud from outside: bind
//! metrics, inject faults (throttling, lost answers, listing lag, missing capacity), set
//! health, alarms and per-build metrics, and read back what it holds.

use super::{Op, SimCloud};
use crate::cloud::model::Meaning;
use crate::cloud::{tags, Instance, InstanceState, MetricQuery};
use crate::cloud::{AlarmState, LaunchTemplate};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

impl SimCloud {
    /// Bind a metric query to a fleet explicitly (tests).
    pub fn bind_metric(&self, q: MetricQuery, fleet: &str) {
        let meaning = match q.name.as_str() {
            "RequestCount" => Meaning::RequestCount,
            "CPUUtilization" => Meaning::Cpu,
            _ => Meaning::RequestCountPerTarget,
        };
        self.lock().bindings.insert(q, (fleet.to_string(), meaning));
    }

    /// The next `n` calls of `op` fail with `code` (a throttling code → `Throttled`).
    pub fn fail_next(&self, op: Op, n: u32, code: &'static str) {
        self.lock().faults.insert(op, (n, code));
    }

    /// The next `n` launches are carried out but answered with a service error, as when a
    /// connection drops after EC2 acted.
    pub fn lose_launch_answers(&self, n: u32) {
        self.lock().lose_launch_answers = n;
    }

    /// New instances appear in `list_instances` only `lag` after their launch, as
    /// DescribeInstances can lag RunInstances on AWS.
    pub fn set_list_lag(&self, lag: chrono::Duration) {
        self.lock().list_lag = lag;
    }

    /// `build` (`TEMPLATE:VERSION` or `ami-…`) does not exist: launches of it are rejected
    /// as EC2 rejects them, and `launch_source_missing` says so.
    pub fn forget_build(&self, build: &str) {
        self.lock().missing_builds.insert(build.to_string());
    }

    /// Why a launch from `template`/`image_id` cannot start, if it cannot.
    pub(crate) fn missing_source(
        &self,
        template: Option<&LaunchTemplate>,
        image_id: Option<&str>,
    ) -> Option<(String, &'static str)> {
        let st = self.lock();
        if let Some(t) = template {
            if st.missing_builds.contains(&t.build_id()) {
                return Some((
                    format!("launch template version {} does not exist", t.build_id()),
                    "InvalidLaunchTemplateId.VersionNotFound",
                ));
            }
        }
        if let Some(ami) = image_id {
            if st.missing_builds.contains(ami) {
                return Some((format!("AMI {ami} does not exist"), "InvalidAMIID.NotFound"));
            }
        }
        None
    }

    /// Number instances from `n` on. The daemon on the simulator starts past every id an
    /// earlier run of it handed out (a restart with `--state` must not meet a new
    /// instance under an old one's id: EC2 never reuses one).
    pub fn start_ids_at(&self, n: u64) {
        let mut st = self.lock();
        st.next_id = st.next_id.max(n);
    }

    /// No capacity for `instance_type` in `subnet` (None = any subnet), in either market.
    pub fn remove_capacity(&self, instance_type: &str, subnet: Option<&str>) {
        self.lock().no_capacity.insert((
            instance_type.to_string(),
            subnet.map(str::to_string),
            None,
        ));
    }

    /// No capacity for `instance_type` in `subnet` (None = any subnet) in `market` only:
    /// a Spot pool that is out while On-Demand still launches.
    pub fn remove_capacity_in(
        &self,
        market: crate::cloud::Market,
        instance_type: &str,
        subnet: Option<&str>,
    ) {
        self.lock().no_capacity.insert((
            instance_type.to_string(),
            subnet.map(str::to_string),
            Some(market),
        ));
    }

    /// Every CreateFleet request received so far, in order (resends included).
    pub fn fleet_requests(&self) -> Vec<crate::cloud::LaunchRequest> {
        self.lock().fleet_requests.clone()
    }

    /// EC2 takes back up to `n` of `fleet`'s running Spot instances now (the newest
    /// first), as a Spot interruption does once its two-minute warning is over. Returns
    /// their ids.
    pub fn interrupt_spot(&self, fleet: &str, n: usize) -> Vec<String> {
        let now = self.clock.now();
        let mut st = self.lock();
        let mut spot: Vec<(DateTime<Utc>, String)> = st
            .instances
            .iter()
            .filter(|(_, i)| {
                i.terminated_at.is_none()
                    && i.inst.fleet == fleet
                    && i.inst.market == crate::cloud::Market::Spot
            })
            .map(|(id, i)| (i.inst.launched_at, id.clone()))
            .collect();
        spot.sort();
        spot.reverse();
        let ids: Vec<String> = spot.into_iter().take(n).map(|(_, id)| id).collect();
        for id in &ids {
            if let Some(i) = st.instances.get_mut(id) {
                i.terminated_at = Some(now);
                i.inst.state = InstanceState::Terminated;
                st.terminated_total += 1;
            }
        }
        ids
    }

    /// Put a message (an EventBridge event body) on the interruption queue.
    pub fn send_notice(&self, body: &str) {
        let mut st = self.lock();
        st.notices_sent += 1;
        let receipt = format!("sim-receipt-{}", st.notices_sent);
        st.notices.push((receipt, body.to_string()));
    }

    /// Messages still on the interruption queue.
    pub fn notices_left(&self) -> usize {
        self.lock().notices.len()
    }

    /// Every pool has capacity again.
    pub fn restore_capacity(&self) {
        self.lock().no_capacity.clear();
    }

    /// A listener's forward weights, as last set.
    pub fn listener_weights(&self, listener_arn: &str) -> Vec<(String, u32)> {
        self.lock()
            .listeners
            .get(listener_arn)
            .cloned()
            .unwrap_or_default()
    }

    /// Create or set a CloudWatch alarm's state.
    pub fn set_alarm(&self, name: &str, state: AlarmState) {
        self.lock().alarms.insert(name.to_string(), state);
    }

    /// Make a per-build metric read `value` at every period: any query for `namespace` /
    /// `name` with a dimension whose value is `build` (deploy gates put the build id there).
    pub fn set_build_metric(&self, namespace: &str, name: &str, build: &str, value: f64) {
        self.lock()
            .build_metrics
            .insert((namespace.into(), name.into(), build.into()), value);
    }

    /// Make an instance fail (or pass again) its health check in every target group it is
    /// registered with, as a crashed application would.
    pub fn set_unhealthy(&self, id: &str, unhealthy: bool) {
        let now = self.clock.now();
        let mut st = self.lock();
        st.health_changes
            .entry(id.to_string())
            .or_default()
            .push((now, unhealthy));
        if unhealthy {
            st.unhealthy.insert(id.to_string());
        } else {
            st.unhealthy.remove(id);
        }
    }

    /// Detach a target group from its load balancer (it then publishes no
    /// `UnHealthyHostCount`, as on AWS).
    pub fn detach_load_balancers(&self, target_group: &str) {
        self.lock().load_balancers.remove(target_group);
    }

    /// Make an instance fail (or pass again) its EC2 status checks, as an impaired host
    /// would.
    pub fn set_impaired(&self, id: &str, impaired: bool) {
        let mut st = self.lock();
        if impaired {
            st.impaired.insert(id.to_string());
        } else {
            st.impaired.remove(id);
        }
    }

    /// Create an instance that coxswain does not own (for ownership tests).
    pub fn add_foreign_instance(&self, tags_: BTreeMap<String, String>) -> String {
        let now = self.clock.now();
        let mut st = self.lock();
        let fleet = tags_.get(tags::FLEET).cloned().unwrap_or_default();
        Self::create(&mut st, &fleet, "foreign", None, None, tags_, now, now)
    }

    /// Requests per minute that `fleet` sees at `t`, and what its ready instances serve.
    pub fn demand_and_capacity(&self, fleet: &str, t: DateTime<Utc>) -> Option<(f64, f64)> {
        let st = self.lock();
        let f = st.fleets.get(fleet)?;
        let ready = Self::ready_count(&st, fleet, t);
        Some((f.demand.at(t), f64::from(ready) * f.capacity_per_instance))
    }

    /// (launched, terminated) since the start.
    pub fn totals(&self) -> (u64, u64) {
        let st = self.lock();
        (st.launched_total, st.terminated_total)
    }

    /// Every instance ever created that is not terminated, owned or not (for tests).
    pub fn all_live(&self) -> Vec<Instance> {
        self.lock()
            .instances
            .values()
            .filter(|i| i.terminated_at.is_none())
            .map(|i| i.inst.clone())
            .collect()
    }

    /// Ids currently registered (not draining) in a target group.
    pub fn registered(&self, target_group: &str) -> Vec<String> {
        let st = self.lock();
        let mut v: Vec<String> = st
            .target_groups
            .get(target_group)
            .map(|g| {
                g.iter()
                    .filter(|(_, t)| t.deregistered_at.is_none())
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}
