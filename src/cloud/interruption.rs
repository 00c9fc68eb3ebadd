//! EC2's notices about instances, as EventBridge delivers them to the interruption queue
//! (`coxswain init` creates the queue and the rules): Spot interruption warnings,
//! rebalance recommendations, scheduled events (AWS Health) and state changes. Pure:
//! a message body in, the notices it carries out.
//!
//! Event shapes: "EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance
//! Recommendation" and "EC2 Instance State-change Notification" from `aws.ec2`
//! (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html>,
//! <https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html>),
//! and "AWS Health Event" from `aws.health` with `service: EC2` and
//! `eventTypeCategory: scheduledChange`, whose affected entities are instance ids.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The EventBridge event pattern of each rule `coxswain init` creates, by rule suffix.
/// The CloudFormation in `deploy/` carries the same patterns (a test checks).
pub fn event_patterns() -> Vec<(&'static str, Value)> {
    vec![
        (
            "spot-interruption",
            serde_json::json!({"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]}),
        ),
        (
            "rebalance",
            serde_json::json!({"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]}),
        ),
        (
            "scheduled-change",
            serde_json::json!({"source": ["aws.health"], "detail-type": ["AWS Health Event"], "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]}}),
        ),
        (
            "state-change",
            serde_json::json!({"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]}),
        ),
    ]
}

/// What EC2 says is going to happen, or happened, to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeKind {
    /// The two-minute warning: the Spot instance will be taken back (`action`:
    /// `terminate`, `stop` or `hibernate`).
    SpotInterruption { action: String },
    /// The Spot instance is at elevated risk of interruption: replace it early.
    Rebalance,
    /// AWS Health scheduled change (instance retirement, system maintenance), with its
    /// event type code.
    Scheduled { event_type: String },
    /// The instance's state changed (`pending`, `running`, `stopping`, `stopped`,
    /// `shutting-down`, `terminated`).
    StateChange { state: String },
}

impl NoticeKind {
    /// Whether the instance should be replaced before it goes (launch first).
    pub fn replace_early(&self) -> bool {
        matches!(self, NoticeKind::Rebalance | NoticeKind::Scheduled { .. })
    }
}

/// One notice about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub instance_id: String,
    pub kind: NoticeKind,
    /// The event's `time`.
    pub time: Option<DateTime<Utc>>,
}

/// Why a message is not a notice this controller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("an event of a kind coxswain does not read ({0})")]
    Unknown(String),
    #[error("{0} without an instance id")]
    NoInstance(String),
}

/// The notices in one queue message body (one EventBridge event; a Health event may name
/// several instances).
pub fn parse(body: &str) -> Result<Vec<Notice>, ParseError> {
    let v: Value = serde_json::from_str(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let source = text(&v, "source").unwrap_or_default();
    let detail_type = text(&v, "detail-type").unwrap_or_default();
    let time = text(&v, "time")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let detail = v.get("detail").cloned().unwrap_or(Value::Null);
    let one = |kind: NoticeKind| -> Result<Vec<Notice>, ParseError> {
        let id = text(&detail, "instance-id")
            .filter(|id| id.starts_with("i-"))
            .ok_or_else(|| ParseError::NoInstance(detail_type.clone()))?;
        Ok(vec![Notice {
            instance_id: id,
            kind,
            time,
        }])
    };
    match (source.as_str(), detail_type.as_str()) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => {
            one(NoticeKind::SpotInterruption {
                action: text(&detail, "instance-action").unwrap_or_else(|| "terminate".into()),
            })
        }
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => one(NoticeKind::Rebalance),
        ("aws.ec2", "EC2 Instance State-change Notification") => one(NoticeKind::StateChange {
            state: text(&detail, "state").unwrap_or_default(),
        }),
        ("aws.health", "AWS Health Event")
            if text(&detail, "service").as_deref() == Some("EC2") =>
        {
            let event_type = text(&detail, "eventTypeCode").unwrap_or_default();
            let ids: Vec<String> = detail
                .get("affectedEntities")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| text(e, "entityValue"))
                        .filter(|id| id.starts_with("i-"))
                        .collect()
                })
                .unwrap_or_default();
            if ids.is_empty() {
                return Err(ParseError::NoInstance(detail_type));
            }
            Ok(ids
                .into_iter()
                .map(|instance_id| Notice {
                    instance_id,
                    kind: NoticeKind::Scheduled {
                        event_type: event_type.clone(),
                    },
                    time,
                })
                .collect())
        }
        _ => Err(ParseError::Unknown(format!("{source} / {detail_type}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example from the EC2 user guide ("Spot Instance interruption notices").
    const SPOT: &str = r#"{
        "version": "0",
        "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2021-02-03T14:05:06Z",
        "region": "us-east-2",
        "resources": ["arn:aws:ec2:us-east-2a:instance/i-1234567890abcdef0"],
        "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"}
    }"#;

    #[test]
    fn the_documented_events_are_read() {
        let n = parse(SPOT).expect("spot");
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].instance_id, "i-1234567890abcdef0");
        assert_eq!(
            n[0].kind,
            NoticeKind::SpotInterruption {
                action: "terminate".into()
            }
        );
        assert_eq!(
            n[0].time,
            DateTime::parse_from_rfc3339("2021-02-03T14:05:06Z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        );
        let rebalance = SPOT.replace(
            "EC2 Spot Instance Interruption Warning",
            "EC2 Instance Rebalance Recommendation",
        );
        assert_eq!(
            parse(&rebalance).expect("rebalance")[0].kind,
            NoticeKind::Rebalance
        );
        let state = r#"{"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "detail": {"instance-id": "i-0abc", "state": "stopping"}}"#;
        assert_eq!(
            parse(state).expect("state")[0].kind,
            NoticeKind::StateChange {
                state: "stopping".into()
            }
        );
        let health = r#"{"source": "aws.health", "detail-type": "AWS Health Event",
            "detail": {"service": "EC2", "eventTypeCategory": "scheduledChange",
              "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
              "affectedEntities": [{"entityValue": "i-0aaa"}, {"entityValue": "i-0bbb"}]}}"#;
        let h = parse(health).expect("health");
        assert_eq!(
            h.iter().map(|n| n.instance_id.as_str()).collect::<Vec<_>>(),
            ["i-0aaa", "i-0bbb"]
        );
        assert!(h[0].kind.replace_early());
    }

    #[test]
    fn what_is_not_a_notice_says_why() {
        assert!(matches!(parse("{"), Err(ParseError::NotJson(_))));
        assert!(matches!(
            parse(r#"{"source": "aws.s3", "detail-type": "Object Created"}"#),
            Err(ParseError::Unknown(_))
        ));
        assert!(matches!(
            parse(
                r#"{"source": "aws.ec2", "detail-type": "EC2 Instance Rebalance Recommendation", "detail": {}}"#
            ),
            Err(ParseError::NoInstance(_))
        ));
    }

    proptest! {
        /// Any text, JSON or not, is answered (no panic), and an answer names only
        /// instance ids.
        #[test]
        fn any_body_is_answered(body in ".{0,200}", id in "i-[0-9a-f]{8,17}", kind in 0usize..4) {
            let _ = parse(&body);
            let types = [
                "EC2 Spot Instance Interruption Warning",
                "EC2 Instance Rebalance Recommendation",
                "EC2 Instance State-change Notification",
                "Something Else",
            ];
            let event = serde_json::json!({
                "source": "aws.ec2", "detail-type": types[kind],
                "detail": {"instance-id": id, "state": "running"}
            });
            match parse(&event.to_string()) {
                Ok(n) => {
                    prop_assert!(kind < 3);
                    prop_assert_eq!(n.len(), 1);
                    prop_assert_eq!(&n[0].instance_id, &id);
                }
                Err(e) => prop_assert!(kind == 3, "{e}"),
            }
        }
    }
}
