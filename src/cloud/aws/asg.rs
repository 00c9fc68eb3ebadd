//! Auto Scaling: fleets backed by an existing group get their desired capacity set.

use super::classify;
use crate::cloud::{CallCounts, CloudError, GroupState};
use aws_sdk_autoscaling::types::LifecycleState;
use aws_sdk_autoscaling::Client;

/// DescribeAutoScalingGroups takes at most 100 names per call.
const NAMES_PER_CALL: usize = 100;

pub(super) async fn describe(
    client: &Client,
    names: &[String],
    calls: &CallCounts,
) -> Result<Vec<GroupState>, CloudError> {
    let mut out = Vec::new();
    for chunk in names.chunks(NAMES_PER_CALL) {
        let mut pages = client
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(Some(chunk.to_vec()))
            .max_records(100)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            CallCounts::bump(&calls.describe_groups);
            let page = page.map_err(|e| classify("DescribeAutoScalingGroups", e))?;
            for g in page.auto_scaling_groups() {
                let as_u32 = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
                out.push(GroupState {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
                    desired: as_u32(g.desired_capacity()),
                    min: as_u32(g.min_size()),
                    max: as_u32(g.max_size()),
                    instances: g
                        .instances()
                        .iter()
                        .filter_map(|i| {
                            Some((
                                i.instance_id()?.to_string(),
                                i.lifecycle_state() == Some(&LifecycleState::InService),
                            ))
                        })
                        .collect(),
                });
            }
        }
    }
    Ok(out)
}

pub(super) async fn set_desired(
    client: &Client,
    group: &str,
    desired: u32,
) -> Result<(), CloudError> {
    client
        .set_desired_capacity()
        .auto_scaling_group_name(group)
        .desired_capacity(i32::try_from(desired).unwrap_or(i32::MAX))
        .honor_cooldown(false)
        .send()
        .await
        .map_err(|e| classify("SetDesiredCapacity", e))?;
    Ok(())
}
