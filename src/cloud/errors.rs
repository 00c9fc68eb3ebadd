//! Cloud errors, and the one place that maps AWS error codes to what they mean for the
//! controller (throttled: back off; capacity: try the next type or subnet; not found:
//! already gone). The code, never a flattened string, decides what happens next.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CloudError {
    /// AWS asked us to slow down (after the SDK's own retries ran out).
    #[error("{operation}: throttled by AWS ({code})")]
    Throttled {
        operation: &'static str,
        code: String,
    },
    /// No capacity for this instance type in this AZ: the caller falls back.
    #[error("{operation}: insufficient capacity ({code}): {message}")]
    InsufficientCapacity {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// The request was refused as invalid; retrying the same request will not help.
    #[error("{operation}: rejected ({code}): {message}")]
    Rejected {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// The service failed (5xx, timeouts, dropped connections) after retries.
    #[error("{operation}: service error: {message}")]
    Service {
        operation: &'static str,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An instance id that this controller does not own was passed to a mutating call.
    #[error("{operation}: refusing to touch instances coxswain does not own: {ids:?}")]
    NotOwned {
        operation: &'static str,
        ids: Vec<String>,
    },
}

impl CloudError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CloudError::Throttled { .. } | CloudError::Service { .. }
        )
    }

    pub fn is_capacity(&self) -> bool {
        matches!(self, CloudError::InsufficientCapacity { .. })
    }
}

/// AWS error codes that mean "slow down".
pub fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// The error codes AWS services answer when they throttle (the AWS SDKs' list of
/// throttling errors, less `LimitExceededException`, which Auto Scaling uses for quotas).
pub const THROTTLING_CODES: [&str; 12] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "BandwidthLimitExceeded",
    "ProvisionedThroughputExceededException",
];

/// AWS error codes that mean "no capacity of that shape here; try another".
pub fn is_capacity_code(code: &str) -> bool {
    matches!(
        code,
        "InsufficientInstanceCapacity"
            | "InsufficientHostCapacity"
            | "InsufficientReservedInstanceCapacity"
            | "InsufficientCapacity"
            | "Unsupported"
    )
}

/// AWS error codes that mean the thing is already gone.
pub fn is_not_found_code(code: &str) -> bool {
    code.ends_with(".NotFound") || code == "InvalidInstanceID.NotFound" || code == "NotFound"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert!(is_throttling_code("RequestLimitExceeded"));
        assert!(is_throttling_code("Throttling"));
        assert!(!is_throttling_code("InvalidParameterValue"));
        assert!(is_capacity_code("InsufficientInstanceCapacity"));
        assert!(!is_capacity_code("RequestLimitExceeded"));
        assert!(is_not_found_code("InvalidInstanceID.NotFound"));
    }
}
