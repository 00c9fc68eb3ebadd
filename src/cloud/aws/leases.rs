//! Leases and shared state in DynamoDB: the [`LeaseStore`] replicas use on AWS. Conditional
//! writes do what the trait documents; a refused condition is told by its error code.

use crate::lease::{table_names, Lease, LeaseError, LeaseStore, StateItem};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, KeySchemaElement, KeyType,
    Put, ScalarAttributeType, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// `coxswain init`: create the lease and state tables (on-demand billing) if missing.
/// Returns the tables created.
pub async fn create_tables(client: &Client, prefix: &str) -> Result<Vec<String>, LeaseError> {
    let (leases, state) = table_names(prefix);
    let mut created = Vec::new();
    for (table, key) in [(leases, "fleet"), (state, "key")] {
        let exists = client
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .is_ok();
        if exists {
            continue;
        }
        let attr = AttributeDefinition::builder()
            .attribute_name(key)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| build_error("CreateTable", e))?;
        let schema = KeySchemaElement::builder()
            .attribute_name(key)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| build_error("CreateTable", e))?;
        client
            .create_table()
            .table_name(&table)
            .attribute_definitions(attr)
            .key_schema(schema)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| service("CreateTable", e))?;
        created.push(table);
    }
    Ok(created)
}

/// Leases and shared state in two DynamoDB tables (`coxswain init` creates them).
pub struct DynamoLeases {
    client: Client,
    table: String,
    state_table: String,
    replica: String,
    ttl: chrono::Duration,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}
fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A conditional write refused because its condition did not hold, told by error code:
/// `ConditionalCheckFailedException` for one item; for a transaction,
/// `TransactionCanceledException` with a `ConditionalCheckFailed` cancellation reason (or
/// no reasons given, as some implementations answer: then the write did not happen
/// either, and a fence must not pass).
fn is_condition_failure<E: ProvideErrorMetadata, R>(
    e: &SdkError<E, R>,
    reasons: &[Option<&str>],
) -> bool {
    match e.as_service_error().and_then(|s| s.code()) {
        Some("ConditionalCheckFailedException") => true,
        Some("TransactionCanceledException") => {
            reasons.is_empty() || reasons.contains(&Some("ConditionalCheckFailed"))
        }
        _ => false,
    }
}

/// A lease error that keeps the service's code and the SDK error as its source.
fn service<E, R>(operation: &'static str, e: SdkError<E, R>) -> LeaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    LeaseError::Service {
        operation,
        code: e.code().map(str::to_string),
        message: DisplayErrorContext(&e).to_string(),
        source: Some(Box::new(e)),
    }
}

/// A request that could not be built (a missing required field: a bug, not AWS).
fn build_error(operation: &'static str, e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Service {
        operation,
        code: None,
        message: e.to_string(),
        source: None,
    }
}

impl DynamoLeases {
    /// Leases of `replica` in the tables named by `prefix` ([`table_names`]), lasting
    /// `ttl` from each take, renewal and heartbeat.
    pub fn new(client: Client, prefix: &str, replica: &str, ttl: chrono::Duration) -> Self {
        let (table, state_table) = table_names(prefix);
        Self {
            client,
            table,
            state_table,
            replica: replica.to_string(),
            ttl,
        }
    }

    fn parse(fleet: &str, item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
        let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let get_n = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        let bad = || LeaseError::Malformed(fleet.to_string());
        Ok(Lease {
            fleet: fleet.to_string(),
            owner: get_s("owner").ok_or_else(bad)?,
            version: get_n("version").ok_or_else(bad)?,
            expires: DateTime::from_timestamp_millis(get_n("expires_ms").ok_or_else(bad)?)
                .ok_or_else(bad)?,
        })
    }

    /// One item of the state table, read consistently.
    async fn state_item(
        &self,
        key: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key("key", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service("GetItem", e))?;
        Ok(out.item)
    }
}

#[async_trait::async_trait]
impl LeaseStore for DynamoLeases {
    fn replica(&self) -> &str {
        &self.replica
    }

    /// Take `fleet`'s lease if it is free or expired. `None` if another replica holds it.
    async fn take(&self, fleet: &str, now: DateTime<Utc>) -> Result<Option<Lease>, LeaseError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("fleet", s(fleet))
            .update_expression("SET #o = :me, #e = :exp, #v = if_not_exists(#v, :zero) + :one")
            .condition_expression("attribute_not_exists(#f) OR #e < :now")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#e", "expires_ms")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#f", "fleet")
            .expression_attribute_values(":me", s(&self.replica))
            .expression_attribute_values(":exp", n((now + self.ttl).timestamp_millis()))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match r {
            Ok(out) => out.attributes().map(|a| Self::parse(fleet, a)).transpose(),
            Err(e) if is_condition_failure(&e, &[]) => Ok(None),
            Err(e) => Err(service("UpdateItem", e)),
        }
    }

    /// Extend a lease this replica holds. `None` if it was lost (expired, or taken over).
    async fn renew(&self, lease: &Lease, now: DateTime<Utc>) -> Result<Option<Lease>, LeaseError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("fleet", s(&lease.fleet))
            .update_expression("SET #e = :exp")
            .condition_expression("#o = :me AND #v = :v AND #e >= :now")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#e", "expires_ms")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":me", s(&self.replica))
            .expression_attribute_values(":v", n(lease.version))
            .expression_attribute_values(":exp", n((now + self.ttl).timestamp_millis()))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match r {
            Ok(out) => out
                .attributes()
                .map(|a| Self::parse(&lease.fleet, a))
                .transpose(),
            Err(e) if is_condition_failure(&e, &[]) => Ok(None),
            Err(e) => Err(service("UpdateItem", e)),
        }
    }

    /// Give a lease up (on shutdown) so another replica can take it at once.
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("fleet", s(&lease.fleet))
            .update_expression("SET #e = :zero")
            .condition_expression("#o = :me AND #v = :v")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#e", "expires_ms")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":me", s(&self.replica))
            .expression_attribute_values(":v", n(lease.version))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e, &[]) => Ok(()),
            Err(e) => Err(service("UpdateItem", e)),
        }
    }

    /// Write `body` under `key` in the state table only while `lease` is still this
    /// replica's, unexpired, at its version. `false` if the fence stopped it.
    async fn fenced_put(
        &self,
        lease: &Lease,
        key: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, LeaseError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("fleet", s(&lease.fleet))
            .condition_expression("#o = :me AND #v = :v AND #e > :now")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#e", "expires_ms")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":me", s(&self.replica))
            .expression_attribute_values(":v", n(lease.version))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .build()
            .map_err(|e| build_error("TransactWriteItems", e))?;
        let put = Put::builder()
            .table_name(&self.state_table)
            .item("key", s(key))
            .item("body", s(body))
            .item("fence", n(lease.version))
            .item("writer", s(&self.replica))
            .build()
            .map_err(|e| build_error("TransactWriteItems", e))?;
        let r = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        let reasons: Vec<Option<&str>> = match &r {
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(t)) => {
                    t.cancellation_reasons().iter().map(|c| c.code()).collect()
                }
                _ => Vec::new(),
            },
            Ok(_) => Vec::new(),
        };
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e, &reasons) => Ok(false),
            Err(e) => Err(service("TransactWriteItems", e)),
        }
    }

    /// Read a state item: (body, fence, writer).
    async fn get_state(&self, key: &str) -> Result<Option<StateItem>, LeaseError> {
        let out = self.state_item(key).await?;
        Ok(out.and_then(|i| {
            let body = i.get("body")?.as_s().ok()?.clone();
            let fence = i.get("fence")?.as_n().ok()?.parse().ok()?;
            let writer = i.get("writer")?.as_s().ok()?.clone();
            Some((body, fence, writer))
        }))
    }

    /// Shared facts (the build ledger's passes, approvals) live in the state table under
    /// `ledger#...` and `approval#...` keys. They only ever grow and every write is
    /// idempotent, so they need no fence: any replica may add one.
    async fn put_fact(&self, key: &str, body: &str) -> Result<(), LeaseError> {
        self.client
            .put_item()
            .table_name(&self.state_table)
            .item("key", s(key))
            .item("body", s(body))
            .item("writer", s(&self.replica))
            .send()
            .await
            .map_err(|e| service("PutItem", e))?;
        Ok(())
    }

    /// The body of a fact written by [`Leases::put_fact`].
    async fn get_fact(&self, key: &str) -> Result<Option<String>, LeaseError> {
        let out = self.state_item(key).await?;
        Ok(out.and_then(|i| i.get("body")?.as_s().ok().cloned()))
    }

    /// Add `member` to the string set under `key` (created on first use). Atomic, so two
    /// replicas adding at once both land.
    async fn add_member(&self, key: &str, member: &str) -> Result<(), LeaseError> {
        self.client
            .update_item()
            .table_name(&self.state_table)
            .key("key", s(key))
            .update_expression("ADD #m :m")
            .expression_attribute_names("#m", "members")
            .expression_attribute_values(":m", AttributeValue::Ss(vec![member.to_string()]))
            .send()
            .await
            .map_err(|e| service("UpdateItem", e))?;
        Ok(())
    }

    /// The members of the set under `key` (empty if there is none).
    async fn members(&self, key: &str) -> Result<Vec<String>, LeaseError> {
        let out = self.state_item(key).await?;
        Ok(out
            .and_then(|i| i.get("members")?.as_ss().ok().cloned())
            .unwrap_or_default())
    }

    /// The lease item of `fleet`, as stored.
    async fn current(&self, fleet: &str) -> Result<Option<Lease>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("fleet", s(fleet))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service("GetItem", e))?;
        out.item().map(|i| Self::parse(fleet, i)).transpose()
    }

    /// Announce this replica as alive until `now + ttl` (an item `replica#<id>`).
    async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), LeaseError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("fleet", s(&format!("replica#{}", self.replica)))
            .item("owner", s(&self.replica))
            .item("version", n(0))
            .item("expires_ms", n((now + self.ttl).timestamp_millis()))
            .send()
            .await
            .map_err(|e| service("PutItem", e))?;
        Ok(())
    }

    /// One consistent scan of the lease table: the live replicas (sorted) and every
    /// fleet's lease, so a pass needs no read per fleet.
    async fn snapshot(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, HashMap<String, Lease>), LeaseError> {
        let mut live = Vec::new();
        let mut fleets = HashMap::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| service("Scan", e))?;
            for item in page.items() {
                let Some(key) = item.get("fleet").and_then(|v| v.as_s().ok()) else {
                    continue;
                };
                let Ok(l) = Self::parse(key, item) else {
                    continue;
                };
                match key.strip_prefix("replica#") {
                    Some(id) if l.expires > now => live.push(id.to_string()),
                    Some(_) => {}
                    None => {
                        fleets.insert(key.clone(), l);
                    }
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        live.sort();
        Ok((live, fleets))
    }
}
