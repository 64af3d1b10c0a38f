//! Counts of the DynamoDB calls of one deletion, their attempts and the
//! attempts that DynamoDB throttled, taken by an SDK interceptor that each
//! call of the deletion carries.
//!
//! The SDK retries throttled and failed attempts by itself, so without the
//! interceptor the deletion would see only the calls, never the attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError;
use aws_sdk_dynamodb::operation::query::QueryError;

/// The error codes with which DynamoDB throttles a request.
const THROTTLING_CODES: [&str; 3] = [
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
];

/// Shared counters of one deletion's calls and attempts.
#[derive(Debug, Default)]
pub struct AttemptCounts {
    calls: AtomicU32,
    attempts: AtomicU32,
    throttled: AtomicU32,
}

impl AttemptCounts {
    /// Returns the attempts after the first of each call, that is the
    /// retries of the SDK.
    pub fn retries(&self) -> u32 {
        let calls = self.calls.load(Ordering::Relaxed);
        self.attempts.load(Ordering::Relaxed).saturating_sub(calls)
    }

    /// Returns the attempts that DynamoDB rejected with a throttling error.
    pub fn throttled(&self) -> u32 {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// The interceptor that counts into [`AttemptCounts`].
#[derive(Debug, Clone)]
pub struct AttemptCounter(pub Arc<AttemptCounts>);

/// The interceptor hooks return the SDK's boxed error type.
type HookResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

impl Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "AttemptCounter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> HookResult {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> HookResult {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);

        let code = context
            .output_or_error()
            .and_then(Result::err)
            .and_then(|error| error.as_operation_error())
            .and_then(|error| {
                // The context erases the operation's error type, so each
                // operation of the deletion is tried.
                let query = error
                    .downcast_ref::<QueryError>()
                    .and_then(|error| error.code());
                query.or_else(|| {
                    error
                        .downcast_ref::<BatchWriteItemError>()
                        .and_then(|error| error.code())
                })
            });
        if code.is_some_and(|code| THROTTLING_CODES.contains(&code)) {
            self.0.throttled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
