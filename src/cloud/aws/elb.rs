//! Elastic Load Balancing v2: register new instances, deregister (drain) leaving ones,
//! read target health.

use super::classify;
use crate::cloud::{CloudError, TargetHealth};
use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata;
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthStateEnum};
use aws_sdk_elasticloadbalancingv2::Client;

fn targets(ids: &[String]) -> Vec<TargetDescription> {
    ids.iter()
        .map(|id| TargetDescription::builder().id(id).build())
        .collect()
}

pub(super) async fn register(client: &Client, tg: &str, ids: &[String]) -> Result<(), CloudError> {
    client
        .register_targets()
        .target_group_arn(tg)
        .set_targets(Some(targets(ids)))
        .send()
        .await
        .map_err(|e| classify("RegisterTargets", e))?;
    Ok(())
}

pub(super) async fn deregister(
    client: &Client,
    tg: &str,
    ids: &[String],
) -> Result<(), CloudError> {
    let result = client
        .deregister_targets()
        .target_group_arn(tg)
        .set_targets(Some(targets(ids)))
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        // Not registered (any more): there is nothing to drain, which is what we wanted.
        // Deregistration is therefore safe to repeat.
        Err(e) if e.code() == Some("InvalidTarget") => Ok(()),
        Err(e) => Err(classify("DeregisterTargets", e)),
    }
}

pub(super) async fn health(
    client: &Client,
    tg: &str,
) -> Result<Vec<(String, TargetHealth)>, CloudError> {
    let out = client
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .map_err(|e| classify("DescribeTargetHealth", e))?;
    Ok(out
        .target_health_descriptions()
        .iter()
        .filter_map(|d| {
            let id = d.target()?.id()?.to_string();
            let h = match d.target_health().and_then(|h| h.state()) {
                Some(TargetHealthStateEnum::Initial) => TargetHealth::Initial,
                Some(TargetHealthStateEnum::Healthy) => TargetHealth::Healthy,
                Some(TargetHealthStateEnum::Unhealthy) => TargetHealth::Unhealthy,
                Some(TargetHealthStateEnum::Draining) => TargetHealth::Draining,
                Some(TargetHealthStateEnum::Unused) => TargetHealth::Unused,
                _ => TargetHealth::Other,
            };
            Some((id, h))
        })
        .collect())
}

/// DescribeTargetGroups by ARN, 20 per call (paged). A batch naming a target group that
/// no longer exists fails whole with `TargetGroupNotFound`; its groups are then asked one
/// by one, so one deleted group does not hide the others.
pub(super) async fn load_balancers_of(
    client: &Client,
    tgs: &[String],
    calls: &crate::cloud::CallCounts,
) -> Result<Vec<(String, Vec<String>)>, CloudError> {
    async fn ask(
        client: &Client,
        arns: &[String],
        calls: &crate::cloud::CallCounts,
    ) -> Result<Option<Vec<(String, Vec<String>)>>, CloudError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            crate::cloud::CallCounts::bump(&calls.describe_target_groups);
            let r = client
                .describe_target_groups()
                .set_target_group_arns(Some(arns.to_vec()))
                .set_marker(marker.clone())
                .send()
                .await;
            let page = match r {
                Ok(p) => p,
                Err(e) if e.code() == Some("TargetGroupNotFound") => return Ok(None),
                Err(e) => return Err(classify("DescribeTargetGroups", e)),
            };
            for g in page.target_groups() {
                if let Some(arn) = g.target_group_arn() {
                    out.push((arn.to_string(), g.load_balancer_arns().to_vec()));
                }
            }
            marker = page.next_marker().map(str::to_string);
            if marker.is_none() {
                return Ok(Some(out));
            }
        }
    }
    let mut out = Vec::with_capacity(tgs.len());
    for batch in tgs.chunks(20) {
        match ask(client, batch, calls).await? {
            Some(found) => out.extend(found),
            None => {
                for one in batch {
                    if let Some(found) = ask(client, std::slice::from_ref(one), calls).await? {
                        out.extend(found);
                    }
                }
            }
        }
    }
    Ok(out)
}

pub(super) async fn set_weights(
    client: &Client,
    listener_arn: &str,
    weights: &[(String, u32)],
) -> Result<(), CloudError> {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple,
    };
    let groups: Vec<TargetGroupTuple> = weights
        .iter()
        .map(|(tg, w)| {
            TargetGroupTuple::builder()
                .target_group_arn(tg)
                .weight(i32::try_from(*w).unwrap_or(999))
                .build()
        })
        .collect();
    let action = Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(
            ForwardActionConfig::builder()
                .set_target_groups(Some(groups))
                .build(),
        )
        .build();
    client
        .modify_listener()
        .listener_arn(listener_arn)
        .default_actions(action)
        .send()
        .await
        .map_err(|e| classify("ModifyListener", e))?;
    Ok(())
}
