//! CloudWatch: every fleet's metrics in as few GetMetricData calls as possible
//! (500 queries per call, the API's limit), never one call per fleet.

use super::{classify, from_chrono, to_chrono};
use crate::cloud::{AlarmState, CallCounts, CloudError, MetricQuery, MetricSeries};
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_sdk_cloudwatch::Client;
use chrono::{DateTime, Utc};

/// GetMetricData accepts at most 500 MetricDataQuery entries per call.
pub const QUERIES_PER_CALL: usize = 500;

fn to_query(i: usize, q: &MetricQuery) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace(&q.namespace)
        .metric_name(&q.name)
        .set_dimensions(Some(
            q.dimensions
                .iter()
                .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                .collect(),
        ))
        .build();
    let stat = MetricStat::builder()
        .metric(metric)
        .period(i32::try_from(q.period_secs).unwrap_or(60))
        .stat(&q.stat)
        .build();
    MetricDataQuery::builder()
        .id(format!("q{i}"))
        .metric_stat(stat)
        .return_data(true)
        .build()
}

pub(super) async fn get_metrics(
    client: &Client,
    queries: &[MetricQuery],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    calls: &CallCounts,
) -> Result<Vec<MetricSeries>, CloudError> {
    let mut out = vec![MetricSeries::default(); queries.len()];
    for (c, chunk) in queries.chunks(QUERIES_PER_CALL).enumerate() {
        let base = c * QUERIES_PER_CALL;
        let built: Vec<MetricDataQuery> = chunk
            .iter()
            .enumerate()
            .map(|(i, q)| to_query(base + i, q))
            .collect();
        let mut token: Option<String> = None;
        loop {
            CallCounts::bump(&calls.get_metric_data);
            let resp = client
                .get_metric_data()
                .set_metric_data_queries(Some(built.clone()))
                .start_time(from_chrono(start))
                .end_time(from_chrono(end))
                .scan_by(ScanBy::TimestampAscending)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| classify("GetMetricData", e))?;
            for r in resp.metric_data_results() {
                let Some(idx) = r
                    .id()
                    .and_then(|id| id.strip_prefix('q'))
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                if let Some(series) = out.get_mut(idx) {
                    for (t, v) in r.timestamps().iter().zip(r.values()) {
                        series.points.push((to_chrono(t), *v));
                    }
                }
            }
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    for s in &mut out {
        s.points.sort_by_key(|p| p.0);
        s.points.dedup_by(|a, b| a.0 == b.0);
    }
    Ok(out)
}

/// DescribeAlarms takes at most 100 names per call.
const ALARMS_PER_CALL: usize = 100;

pub(super) async fn alarm_states(
    client: &Client,
    names: &[String],
    calls: &CallCounts,
) -> Result<Vec<(String, AlarmState)>, CloudError> {
    use aws_sdk_cloudwatch::types::StateValue;
    let mut out = Vec::new();
    for chunk in names.chunks(ALARMS_PER_CALL) {
        let mut token: Option<String> = None;
        loop {
            CallCounts::bump(&calls.describe_alarms);
            let resp = client
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| classify("DescribeAlarms", e))?;
            for a in resp.metric_alarms() {
                let Some(name) = a.alarm_name() else { continue };
                let state = match a.state_value() {
                    Some(StateValue::Ok) => AlarmState::Ok,
                    Some(StateValue::Alarm) => AlarmState::Alarm,
                    _ => AlarmState::InsufficientData,
                };
                out.push((name.to_string(), state));
            }
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(out)
}
