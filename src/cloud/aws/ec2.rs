//! EC2: launch with ownership tags, list owned instances (paginated), tag, terminate.

use super::{classify, to_chrono};
use crate::cloud::{
    tags, CallCounts, CloudError, FleetAnswer, Instance, InstanceState, LaunchRequest, Market,
    Pool, PoolError,
};
use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, Filter, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest,
    FleetOnDemandAllocationStrategy, FleetType, InstanceLifecycle, InstanceLifecycleType,
    InstanceStateName, InstanceType, LaunchTemplateSpecification, OnDemandOptionsRequest,
    ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};
use aws_sdk_ec2::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// DescribeInstances page size (the API's maximum).
const PAGE: i32 = 1000;

fn state(s: Option<&InstanceStateName>) -> InstanceState {
    match s {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        _ => InstanceState::Terminated,
    }
}

fn convert(i: &aws_sdk_ec2::types::Instance) -> Option<(Instance, HashMap<String, String>)> {
    let tags: HashMap<String, String> = i
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    let id = i.instance_id()?.to_string();
    let inst = Instance {
        id,
        fleet: tags.get(tags::FLEET).cloned().unwrap_or_default(),
        build: tags.get(tags::BUILD).cloned().unwrap_or_default(),
        state: state(i.state().and_then(|s| s.name())),
        launched_at: i.launch_time().map(to_chrono).unwrap_or_default(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        subnet: i.subnet_id().map(str::to_string),
        private_ip: i.private_ip_address().map(str::to_string),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        retiring_since: tags
            .get(tags::RETIRING)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc)),
        replacing: tags.get(tags::REPLACE).cloned(),
        weight: 1,
        market: match i.instance_lifecycle() {
            Some(InstanceLifecycleType::Spot) => Market::Spot,
            _ => tags
                .get(tags::MARKET)
                .map_or(Market::OnDemand, |m| Market::from_aws(m)),
        },
    };
    Some((inst, tags))
}

fn live_states() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .values("stopping")
        .values("stopped")
        .values("shutting-down")
        .build()
}

pub(super) async fn list_owned(
    client: &Client,
    controller_id: &str,
    calls: &CallCounts,
) -> Result<Vec<Instance>, CloudError> {
    let mut out = Vec::new();
    let mut pages = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{}", tags::CONTROLLER))
                .values(controller_id)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("tag-key")
                .values(tags::FLEET)
                .build(),
        )
        .filters(live_states())
        .max_results(PAGE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        CallCounts::bump(&calls.describe_instances);
        let page = page.map_err(|e| classify("DescribeInstances", e))?;
        for r in page.reservations() {
            for i in r.instances() {
                if let Some((inst, tags_)) = convert(i) {
                    // Belt and braces: the filter already asked for these tags.
                    if tags_.get(tags::CONTROLLER).map(String::as_str) == Some(controller_id)
                        && tags_.contains_key(tags::FLEET)
                    {
                        out.push(inst);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// These instances in any state, with their tags: DescribeInstances by `instance-id`,
/// 200 ids per request, paginated.
async fn describe_ids(
    client: &Client,
    ids: &[String],
    calls: &CallCounts,
) -> Result<Vec<(Instance, HashMap<String, String>)>, CloudError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(200) {
        let mut pages = client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            CallCounts::bump(&calls.describe_instances);
            let page = page.map_err(|e| classify("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().filter_map(convert));
            }
        }
    }
    Ok(out)
}

/// These instances in any state (see [`crate::cloud::Cloud::instances_by_id`]).
pub(super) async fn by_id(
    client: &Client,
    ids: &[String],
    calls: &CallCounts,
) -> Result<Vec<Instance>, CloudError> {
    Ok(describe_ids(client, ids, calls)
        .await?
        .into_iter()
        .map(|(i, _)| i)
        .collect())
}

/// Split `ids` into those we own (and that still exist). Any id that exists but is not
/// ours makes the whole call fail: a mutating call never touches a foreign instance.
async fn owned_subset(
    client: &Client,
    controller_id: &str,
    ids: &[String],
    operation: &'static str,
    calls: &CallCounts,
) -> Result<Vec<String>, CloudError> {
    let found: HashMap<String, HashMap<String, String>> = describe_ids(client, ids, calls)
        .await?
        .into_iter()
        .map(|(i, t)| (i.id, t))
        .collect();
    let foreign: Vec<String> = found
        .iter()
        .filter(|(_, t)| {
            t.get(tags::CONTROLLER).map(String::as_str) != Some(controller_id)
                || !t.contains_key(tags::FLEET)
        })
        .map(|(id, _)| id.clone())
        .collect();
    if !foreign.is_empty() {
        return Err(CloudError::NotOwned {
            operation,
            ids: foreign,
        });
    }
    Ok(ids
        .iter()
        .filter(|id| found.contains_key(*id))
        .cloned()
        .collect())
}

pub(super) async fn run(client: &Client, req: &LaunchRequest) -> Result<Vec<Instance>, CloudError> {
    let count = i32::try_from(req.count).unwrap_or(i32::MAX);
    let tag_list: Vec<Tag> = req
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let mut call = client
        .run_instances()
        .min_count(count)
        .max_count(count)
        .client_token(&req.client_token)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(tag_list.clone()))
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Volume)
                .set_tags(Some(tag_list))
                .build(),
        );
    if let Some(lt) = &req.template {
        call = call.launch_template(
            LaunchTemplateSpecification::builder()
                .set_launch_template_id(lt.id.clone())
                .set_launch_template_name(lt.name.clone())
                .version(&lt.version)
                .build(),
        );
    }
    if let Some(ami) = &req.image_id {
        call = call.image_id(ami);
    }
    if let Some(t) = &req.instance_type {
        call = call.instance_type(InstanceType::from(t.as_str()));
    }
    if let Some(s) = &req.subnet {
        call = call.subnet_id(s);
    }
    if !req.security_groups.is_empty() {
        call = call.set_security_group_ids(Some(req.security_groups.clone()));
    }
    if let Some(k) = &req.key_name {
        call = call.key_name(k);
    }
    let out = call.send().await.map_err(|e| classify("RunInstances", e))?;
    Ok(out
        .instances()
        .iter()
        .filter_map(convert)
        .map(|(i, _)| i)
        .collect())
}

fn lifecycle(l: Option<&InstanceLifecycle>) -> Option<Market> {
    match l {
        Some(InstanceLifecycle::Spot) => Some(Market::Spot),
        Some(InstanceLifecycle::OnDemand) => Some(Market::OnDemand),
        _ => None,
    }
}

/// EC2 CreateFleet, type `instant` (see [`crate::cloud::Cloud::create_fleet`]): one
/// launch template config with an override per pool (priority = its place in the list),
/// all of the target capacity in `req.market`, tags on the instances at launch, and
/// `req.client_token`. The answer's instances are built from what CreateFleet says about
/// them (id, type, subnet, lifecycle) and the request's tags, as `pending`: DescribeInstances
/// may not list them yet (eventual consistency), and the next listing replaces them.
pub(super) async fn create_fleet(
    client: &Client,
    req: &LaunchRequest,
) -> Result<FleetAnswer, CloudError> {
    let Some(lt) = &req.template else {
        return Err(CloudError::Rejected {
            operation: "CreateFleet",
            code: "MissingLaunchTemplate".into(),
            message: "CreateFleet launches from a launch template; the fleet has none".into(),
        });
    };
    let count = i32::try_from(req.count).unwrap_or(i32::MAX);
    let tag_list: Vec<Tag> = req
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let overrides: Vec<FleetLaunchTemplateOverridesRequest> = req
        .pools
        .iter()
        .enumerate()
        .map(|(n, p)| {
            FleetLaunchTemplateOverridesRequest::builder()
                .set_instance_type(p.instance_type.as_deref().map(InstanceType::from))
                .set_subnet_id(p.subnet.clone())
                .set_weighted_capacity(p.weighted_capacity.map(f64::from))
                .set_image_id(req.image_id.clone())
                .priority(n as f64)
                .build()
        })
        .collect();
    let config = FleetLaunchTemplateConfigRequest::builder()
        .launch_template_specification(
            FleetLaunchTemplateSpecificationRequest::builder()
                .set_launch_template_id(lt.id.clone())
                .set_launch_template_name(if lt.id.is_some() {
                    None
                } else {
                    lt.name.clone()
                })
                .version(&lt.version)
                .build(),
        )
        .set_overrides(Some(overrides))
        .build();
    let mut capacity = TargetCapacitySpecificationRequest::builder().total_target_capacity(count);
    capacity = match req.market {
        Market::Spot => capacity
            .spot_target_capacity(count)
            .on_demand_target_capacity(0)
            .default_target_capacity_type(DefaultTargetCapacityType::Spot),
        Market::OnDemand => capacity
            .on_demand_target_capacity(count)
            .spot_target_capacity(0)
            .default_target_capacity_type(DefaultTargetCapacityType::OnDemand),
    };
    let strategy = req
        .spot_allocation_strategy
        .as_deref()
        .unwrap_or("price-capacity-optimized");
    let out = client
        .create_fleet()
        .r#type(FleetType::Instant)
        .client_token(&req.client_token)
        .launch_template_configs(config)
        .target_capacity_specification(capacity.build())
        .spot_options(
            SpotOptionsRequest::builder()
                .allocation_strategy(SpotAllocationStrategy::from(strategy))
                .build(),
        )
        .on_demand_options(
            OnDemandOptionsRequest::builder()
                .allocation_strategy(FleetOnDemandAllocationStrategy::Prioritized)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(tag_list))
                .build(),
        )
        .send()
        .await
        .map_err(|e| classify("CreateFleet", e))?;
    let pool_of = |o: Option<&aws_sdk_ec2::types::LaunchTemplateAndOverridesResponse>| {
        let o = o.and_then(|o| o.overrides());
        Pool {
            instance_type: o
                .and_then(|o| o.instance_type())
                .map(|t| t.as_str().to_string()),
            subnet: o.and_then(|o| o.subnet_id()).map(str::to_string),
            weighted_capacity: o
                .and_then(|o| o.weighted_capacity())
                .filter(|w| w.is_finite() && *w >= 1.0)
                .map(|w| w as u32),
        }
    };
    let now = Utc::now();
    let mut instances = Vec::new();
    for group in out.instances() {
        let pool = pool_of(group.launch_template_and_overrides());
        let market = lifecycle(group.lifecycle()).unwrap_or(req.market);
        for id in group.instance_ids() {
            instances.push(Instance {
                id: id.clone(),
                fleet: req.fleet.clone(),
                build: req.build.clone(),
                state: InstanceState::Pending,
                launched_at: now,
                instance_type: group
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .or_else(|| pool.instance_type.clone())
                    .unwrap_or_default(),
                subnet: group
                    .subnet_id()
                    .map(str::to_string)
                    .or_else(|| pool.subnet.clone()),
                availability_zone: group.availability_zone().map(str::to_string),
                private_ip: None,
                retiring_since: None,
                market,
                replacing: None,
                weight: 1,
            });
        }
    }
    let errors: Vec<PoolError> = out
        .errors()
        .iter()
        .map(|e| PoolError {
            pool: pool_of(e.launch_template_and_overrides()),
            market: lifecycle(e.lifecycle()).unwrap_or(req.market),
            code: e.error_code().unwrap_or("Unknown").to_string(),
            message: e.error_message().unwrap_or_default().to_string(),
        })
        .collect();
    // Nothing launched and a reason that is not capacity (an invalid template, a quota,
    // a permission): the request as a whole was refused.
    if instances.is_empty() {
        if let Some(e) = errors
            .iter()
            .find(|e| !crate::cloud::errors::is_capacity_code(&e.code))
        {
            return Err(CloudError::Rejected {
                operation: "CreateFleet",
                code: e.code.clone(),
                message: e.message.clone(),
            });
        }
    }
    Ok(FleetAnswer { instances, errors })
}

/// Whether the launch template version and/or AMI of a launch exist (see
/// [`crate::cloud::Cloud::launch_source_missing`]).
pub(super) async fn source_missing(
    client: &Client,
    template: Option<&crate::cloud::LaunchTemplate>,
    image_id: Option<&str>,
) -> Result<Option<String>, CloudError> {
    if let Some(t) = template {
        let call = client
            .describe_launch_template_versions()
            .set_launch_template_id(t.id.clone())
            .set_launch_template_name(if t.id.is_some() { None } else { t.name.clone() })
            .versions(&t.version);
        match call.send().await {
            Ok(out) if out.launch_template_versions().is_empty() => {
                return Ok(Some(format!(
                    "launch template version {} does not exist",
                    t.build_id()
                )))
            }
            Ok(_) => {}
            Err(e) => match classify("DescribeLaunchTemplateVersions", e) {
                CloudError::Rejected { code, message, .. }
                    if code.starts_with("InvalidLaunchTemplate") =>
                {
                    return Ok(Some(format!(
                        "launch template version {} does not exist ({code}: {message})",
                        t.build_id()
                    )))
                }
                other => return Err(other),
            },
        }
    }
    if let Some(ami) = image_id {
        let call = client.describe_images().image_ids(ami);
        match call.send().await {
            Ok(out) => match out.images().first() {
                None => {
                    return Ok(Some(format!(
                        "AMI {ami} does not exist (or is not shared with this account)"
                    )))
                }
                Some(img) => {
                    let state = img.state().map(|s| s.as_str()).unwrap_or("available");
                    if state != "available" {
                        return Ok(Some(format!("AMI {ami} is {state}, not available")));
                    }
                }
            },
            Err(e) => match classify("DescribeImages", e) {
                CloudError::Rejected { code, message, .. } if code.starts_with("InvalidAMIID") => {
                    return Ok(Some(format!(
                        "AMI {ami} does not exist ({code}: {message})"
                    )))
                }
                other => return Err(other),
            },
        }
    }
    Ok(None)
}

/// Tag owned instances with `key = value` (CreateTags, after the ownership check).
async fn tag_owned(
    client: &Client,
    controller_id: &str,
    ids: &[String],
    key: &str,
    value: String,
    calls: &CallCounts,
) -> Result<(), CloudError> {
    let ids = owned_subset(client, controller_id, ids, "CreateTags", calls).await?;
    if ids.is_empty() {
        return Ok(());
    }
    CallCounts::bump(&calls.create_tags);
    client
        .create_tags()
        .set_resources(Some(ids))
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await
        .map_err(|e| classify("CreateTags", e))?;
    Ok(())
}

pub(super) async fn mark_retiring(
    client: &Client,
    controller_id: &str,
    ids: &[String],
    at: DateTime<Utc>,
    calls: &CallCounts,
) -> Result<(), CloudError> {
    tag_owned(
        client,
        controller_id,
        ids,
        tags::RETIRING,
        at.to_rfc3339(),
        calls,
    )
    .await
}

pub(super) async fn mark_replacing(
    client: &Client,
    controller_id: &str,
    ids: &[String],
    value: String,
    calls: &CallCounts,
) -> Result<(), CloudError> {
    tag_owned(client, controller_id, ids, tags::REPLACE, value, calls).await
}

pub(super) async fn terminate(
    client: &Client,
    controller_id: &str,
    ids: &[String],
    calls: &CallCounts,
) -> Result<(), CloudError> {
    let ids = owned_subset(client, controller_id, ids, "TerminateInstances", calls).await?;
    if ids.is_empty() {
        return Ok(());
    }
    CallCounts::bump(&calls.terminate_instances);
    match client
        .terminate_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already gone is what we wanted.
        Err(e)
            if e.as_service_error()
                .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::code(s))
                .is_some_and(crate::cloud::errors::is_not_found_code) =>
        {
            Ok(())
        }
        Err(e) => Err(classify("TerminateInstances", e)),
    }
}

/// DescribeInstanceStatus takes at most 100 ids per call.
const STATUS_IDS_PER_CALL: usize = 100;

pub(super) async fn instance_status(
    client: &Client,
    ids: &[String],
    calls: &CallCounts,
) -> Result<Vec<(String, bool)>, CloudError> {
    use aws_sdk_ec2::types::SummaryStatus;
    let mut out = Vec::new();
    for chunk in ids.chunks(STATUS_IDS_PER_CALL) {
        CallCounts::bump(&calls.describe_instance_status);
        let resp = client
            .describe_instance_status()
            .set_instance_ids(Some(chunk.to_vec()))
            .include_all_instances(true)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            // An id that is gone makes the whole call fail; report none of them as ok.
            Err(e)
                if e.as_service_error()
                    .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::code(s))
                    .is_some_and(crate::cloud::errors::is_not_found_code) =>
            {
                continue
            }
            Err(e) => return Err(classify("DescribeInstanceStatus", e)),
        };
        for st in resp.instance_statuses() {
            let Some(id) = st.instance_id() else { continue };
            let ok = |s: Option<&aws_sdk_ec2::types::InstanceStatusSummary>| {
                s.and_then(|s| s.status()) == Some(&SummaryStatus::Ok)
            };
            out.push((
                id.to_string(),
                ok(st.instance_status()) && ok(st.system_status()),
            ));
        }
    }
    Ok(out)
}
