//! Replicas: per-fleet leases in DynamoDB, with fencing.
//!
//! One item per fleet in the lease table: `{fleet, owner, version, expires_ms}`.
//! - **Taking** a lease is a conditional update that succeeds only if the lease is free or
//!   expired; it bumps `version`, the fencing token. Two replicas racing for one lease:
//!   exactly one write succeeds.
//! - **Renewing** succeeds only for the owner holding the current `version`, before expiry.
//! - **Fenced writes**: a state write is a transaction with a condition check on the lease
//!   item (this owner, this version, not expired). A replica that has lost its lease, or
//!   whose lease was taken over while it was paused, cannot write; the daemon writes its
//!   intent this way before every action, so such a replica never acts.
//! - **Spreading work**: replicas heartbeat into the same table; each fleet prefers the
//!   live replica with the highest rendezvous hash of (fleet, replica), so fleets spread
//!   across replicas and move only when replicas come or go.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, KeySchemaElement, KeyType,
    Put, ScalarAttributeType, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A lease held (or seen) on one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fleet: String,
    pub owner: String,
    /// The fencing token: bumped each time the lease changes hands.
    pub version: i64,
    pub expires: DateTime<Utc>,
}

impl Lease {
    /// Held and not within `margin` of expiring: safe to start an action.
    pub fn usable(&self, me: &str, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        self.owner == me && now + margin < self.expires
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("DynamoDB {operation}: {message}")]
    Service {
        operation: &'static str,
        message: String,
    },
    #[error("the lease item for {0} is malformed")]
    Malformed(String),
    #[error("a shared ledger item is malformed: {0}")]
    SharedItem(String),
}

fn service(operation: &'static str, e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Service {
        operation,
        message: e.to_string(),
    }
}

/// Table names for a prefix: `<prefix>-leases` and `<prefix>-state`.
pub fn table_names(prefix: &str) -> (String, String) {
    (format!("{prefix}-leases"), format!("{prefix}-state"))
}

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
            .map_err(|e| service("CreateTable", e))?;
        let schema = KeySchemaElement::builder()
            .attribute_name(key)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| service("CreateTable", e))?;
        client
            .create_table()
            .table_name(&table)
            .attribute_definitions(attr)
            .key_schema(schema)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| {
                service(
                    "CreateTable",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?;
        created.push(table);
    }
    Ok(created)
}

pub struct Leases {
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

fn is_condition_failure<E: std::fmt::Debug>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> bool {
    let text = format!("{e:?}");
    text.contains("ConditionalCheckFailed") || text.contains("TransactionCanceled")
}

impl Leases {
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

    pub fn replica(&self) -> &str {
        &self.replica
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

    /// Take `fleet`'s lease if it is free or expired. `None` if another replica holds it.
    pub async fn take(&self, fleet: &str, now: DateTime<Utc>) -> Result<Option<Lease>, LeaseError> {
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
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(service(
                "UpdateItem",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )),
        }
    }

    /// Extend a lease this replica holds. `None` if it was lost (expired, or taken over).
    pub async fn renew(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, LeaseError> {
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
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(service(
                "UpdateItem",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )),
        }
    }

    /// Give a lease up (on shutdown) so another replica can take it at once.
    pub async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
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
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(service(
                "UpdateItem",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )),
        }
    }

    /// Write `body` under `key` in the state table only while `lease` is still this
    /// replica's, unexpired, at its version. `false` if the fence stopped it.
    pub async fn fenced_put(
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
            .map_err(|e| service("TransactWriteItems", e))?;
        let put = Put::builder()
            .table_name(&self.state_table)
            .item("key", s(key))
            .item("body", s(body))
            .item("fence", n(lease.version))
            .item("writer", s(&self.replica))
            .build()
            .map_err(|e| service("TransactWriteItems", e))?;
        let r = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(service(
                "TransactWriteItems",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )),
        }
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
            .map_err(|e| service("GetItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(out.item)
    }

    /// Read a state item: (body, fence, writer).
    pub async fn get_state(&self, key: &str) -> Result<Option<(String, i64, String)>, LeaseError> {
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
    pub async fn put_fact(&self, key: &str, body: &str) -> Result<(), LeaseError> {
        self.client
            .put_item()
            .table_name(&self.state_table)
            .item("key", s(key))
            .item("body", s(body))
            .item("writer", s(&self.replica))
            .send()
            .await
            .map_err(|e| service("PutItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// The body of a fact written by [`Leases::put_fact`].
    pub async fn get_fact(&self, key: &str) -> Result<Option<String>, LeaseError> {
        let out = self.state_item(key).await?;
        Ok(out.and_then(|i| i.get("body")?.as_s().ok().cloned()))
    }

    /// Add `member` to the string set under `key` (created on first use). Atomic, so two
    /// replicas adding at once both land.
    pub async fn add_member(&self, key: &str, member: &str) -> Result<(), LeaseError> {
        self.client
            .update_item()
            .table_name(&self.state_table)
            .key("key", s(key))
            .update_expression("ADD #m :m")
            .expression_attribute_names("#m", "members")
            .expression_attribute_values(":m", AttributeValue::Ss(vec![member.to_string()]))
            .send()
            .await
            .map_err(|e| {
                service(
                    "UpdateItem",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?;
        Ok(())
    }

    /// The members of the set under `key` (empty if there is none).
    pub async fn members(&self, key: &str) -> Result<Vec<String>, LeaseError> {
        let out = self.state_item(key).await?;
        Ok(out
            .and_then(|i| i.get("members")?.as_ss().ok().cloned())
            .unwrap_or_default())
    }

    /// The lease item of `fleet`, as stored.
    pub async fn current(&self, fleet: &str) -> Result<Option<Lease>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("fleet", s(fleet))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| service("GetItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        out.item().map(|i| Self::parse(fleet, i)).transpose()
    }

    /// Announce this replica as alive until `now + ttl` (an item `replica#<id>`).
    pub async fn heartbeat(&self, now: DateTime<Utc>) -> Result<(), LeaseError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("fleet", s(&format!("replica#{}", self.replica)))
            .item("owner", s(&self.replica))
            .item("version", n(0))
            .item("expires_ms", n((now + self.ttl).timestamp_millis()))
            .send()
            .await
            .map_err(|e| service("PutItem", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Replicas whose heartbeat has not expired, sorted.
    pub async fn live_replicas(&self, now: DateTime<Utc>) -> Result<Vec<String>, LeaseError> {
        Ok(self.snapshot(now).await?.0)
    }

    /// One consistent scan of the lease table: the live replicas (sorted) and every
    /// fleet's lease, so a pass needs no read per fleet.
    pub async fn snapshot(
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
                .map_err(|e| service("Scan", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
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

/// The replica that should own `fleet` among `replicas` (rendezvous hashing).
pub fn preferred<'a>(fleet: &str, replicas: &'a [String]) -> Option<&'a str> {
    replicas
        .iter()
        .max_by_key(|r| {
            let mut h = Sha256::new();
            h.update(fleet.as_bytes());
            h.update([0]);
            h.update(r.as_bytes());
            let d = h.finalize();
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_spread_over_replicas_and_move_only_from_a_replica_that_left() {
        let three: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let two: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let fleets: Vec<String> = (0..300).map(|i| format!("fleet-{i}")).collect();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for f in &fleets {
            *count
                .entry(preferred(f, &three).expect("some"))
                .or_default() += 1;
        }
        for r in ["a", "b", "c"] {
            let c = count.get(r).copied().unwrap_or(0);
            assert!((60..=140).contains(&c), "{r} got {c} of 300: {count:?}");
        }
        for f in &fleets {
            let before = preferred(f, &three).expect("some");
            let after = preferred(f, &two).expect("some");
            if before != "c" {
                assert_eq!(before, after, "{f} moved although its replica stayed");
            }
        }
        assert_eq!(preferred("x", &[]), None);
    }

    #[test]
    fn a_lease_is_usable_only_by_its_owner_before_the_margin() {
        let now = Utc::now();
        let l = Lease {
            fleet: "web".into(),
            owner: "a".into(),
            version: 3,
            expires: now + chrono::Duration::seconds(10),
        };
        assert!(l.usable("a", now, chrono::Duration::seconds(3)));
        assert!(!l.usable("b", now, chrono::Duration::seconds(3)));
        assert!(!l.usable(
            "a",
            now + chrono::Duration::seconds(8),
            chrono::Duration::seconds(3)
        ));
    }
}
