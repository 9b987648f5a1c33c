//! Turning the SDK's errors into one line a user can act on. The SDK's own `Display` says "service
//! error" or "dispatch failure" and hides the cause; its `Debug` is a page long. Neither ever carries a
//! secret, and neither does what is written here: no credential value is ever formatted.

use std::error::Error;

use aws_sdk_s3::error::ProvideErrorMetadata;

use crate::S3Location;

/// The SDK's error type for S3 operations.
pub type SdkError<E> = aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>;

/// Whether S3 answered with HTTP `status`.
pub fn is_status<E>(error: &SdkError<E>, status: u16) -> bool {
    error.raw_response().is_some_and(|response| response.status().as_u16() == status)
}

/// Whether a 404 is about the bucket rather than the key.
pub fn is_missing_bucket<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    error.as_service_error().and_then(|e| e.code()) == Some("NoSuchBucket")
}

/// One line for `error`, about the store at `location`.
pub fn describe_sdk_error<E>(error: &SdkError<E>, location: &S3Location) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
{
    const CREDENTIALS: &str = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE";
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code();
            let message = service.err().message().unwrap_or_default();
            match (code, status) {
                (Some("NoSuchBucket"), _) => {
                    format!("the bucket of {location} does not exist; create it or fix --store")
                }
                (Some(code @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken")), _) => {
                    format!("S3 refused the credentials ({code}); {CREDENTIALS}")
                }
                (Some("AccessDenied"), _) | (None, 403) => {
                    format!("S3 denied access to {location} (HTTP 403): the credentials lack permission; {CREDENTIALS}")
                }
                (Some(code), _) => format!("S3 answered {code} (HTTP {status}): {message}"),
                (None, _) => format!("S3 answered HTTP {status}"),
            }
        }
        SdkError::DispatchFailure(failure) => {
            let endpoint = thunk::env::var("AWS_ENDPOINT_URL_S3")
                .or_else(|| thunk::env::var("AWS_ENDPOINT_URL"))
                .unwrap_or_else(|| "S3".to_owned());
            if failure.is_user() {
                // The request could not be made: most often no credentials at all.
                format!("cannot send a request to {endpoint}: {}; {CREDENTIALS}", causes(error))
            } else {
                format!("cannot reach {endpoint}: {}", causes(error))
            }
        }
        SdkError::TimeoutError(_) => format!("a request to {location} timed out"),
        SdkError::ConstructionFailure(_) => format!("cannot make a request to {location}: {}", causes(error)),
        _ => format!("a request to {location} failed: {}", causes(error)),
    }
}

/// The chain of causes below an error, innermost last, without repeats (the AWS SDK's own `Display`
/// hides them).
pub fn causes(error: &dyn Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    if parts.is_empty() { error.to_string() } else { parts.join(": ") }
}
