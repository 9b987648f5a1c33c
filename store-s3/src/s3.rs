//! The S3 backend: one object per key under `s3://BUCKET/PREFIX/`, same layout as the local store.
//!
//! - Content-addressed objects (blobs, thunks, toolchains) are written with `If-None-Match: *`: a
//!   second writer of the same object gets 412 and that is success. Reductions are overwritten.
//! - Bodies above `multipart_threshold` go up in parts of `part_size`, the parts concurrently.
//! - Every request holds one of `concurrency` permits, so parts and objects together never exceed it.
//! - Throttling (503 SlowDown, 429), 5xx and dropped connections are retried by the SDK's standard
//!   strategy, with exponential backoff and jitter, up to `max_attempts`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use thunk::ObjectKey;
use thunk::store::{Backend, ListPage};
use tokio::sync::Semaphore;

use crate::OpenError;
use crate::error::{SdkError, describe_sdk_error, is_status};
use aws_sdk_s3::error::ProvideErrorMetadata;

/// A bucket and a key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The prefix, without leading or trailing slashes (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses `BUCKET[/PREFIX]` (what follows `s3://`).
    pub fn parse(text: &str) -> Result<S3Location, OpenError> {
        let (bucket, prefix) = text.split_once('/').unwrap_or((text, ""));
        // S3's own rules for bucket names, loosely: enough to catch a typo such as `s3:///path`.
        let valid = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(OpenError::BadBucket { spec: text.to_owned() });
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") {
            return Err(OpenError::BadBucket { spec: text.to_owned() });
        }
        Ok(S3Location { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }

    /// The S3 key of a store object: always under the prefix.
    pub fn key_of(&self, key: ObjectKey) -> String {
        self.under_prefix(&key.path())
    }

    /// `path` under the prefix.
    fn under_prefix(&self, path: &str) -> String {
        if self.prefix.is_empty() { path.to_owned() } else { format!("{}/{path}", self.prefix) }
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// How the backend talks to S3.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Requests in flight at most (objects and parts together).
    pub concurrency: usize,
    /// Bodies larger than this go up as multipart uploads.
    pub multipart_threshold: usize,
    /// The size of each part (S3 wants at least 5 MiB for all but the last).
    pub part_size: usize,
    /// Attempts per request, retries included.
    pub max_attempts: u32,
    /// The first retry waits about this long; later ones wait exponentially longer.
    pub initial_backoff: Duration,
    /// The bucket's region, over the AWS configuration's (`AWS_REGION`, the profile).
    pub region: Option<String>,
}

impl Default for S3Options {
    fn default() -> S3Options {
        S3Options {
            concurrency: 32,
            // rclone's cutoff. Below it one PUT is the cheaper request: multipart costs two more
            // requests, and S3-compatible servers that keep objects as files (s3s-fs, MinIO on a plain
            // filesystem) assemble the parts by copying them once more. Measured on s3s-fs with the
            // 170 MB toolchain layer: one PUT uploads ripgrep's graph 1.6 times as fast as 8 MiB parts.
            // Above it, parts in parallel beat one stream, and a dropped connection costs a part.
            multipart_threshold: 200 << 20,
            part_size: 8 << 20,
            // Enough to ride out throttling; few enough that a dead endpoint is reported in seconds.
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            region: None,
        }
    }
}

/// The S3 backend.
#[derive(Clone)]
pub struct S3Backend {
    client: Client,
    location: S3Location,
    options: S3Options,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: its configuration holds the credentials provider.
        f.debug_struct("S3Backend").field("location", &self.location).field("options", &self.options).finish()
    }
}

impl S3Backend {
    /// A backend for `location`, configured the standard AWS way (environment, profile, instance
    /// role), with this backend's retry policy.
    pub async fn connect(location: S3Location, options: S3Options) -> S3Backend {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        S3Backend::with_config(location, options, &shared)
    }

    /// A backend for `location` with an explicit AWS configuration. A custom endpoint
    /// (`AWS_ENDPOINT_URL[_S3]`, or one set in `shared`) gets path-style addressing, which every
    /// S3-compatible server understands; with no region configured, `us-east-1` is used.
    pub fn with_config(location: S3Location, options: S3Options, shared: &aws_config::SdkConfig) -> S3Backend {
        let retry = RetryConfig::standard()
            .with_max_attempts(options.max_attempts.max(1))
            .with_initial_backoff(options.initial_backoff);
        let mut config = aws_sdk_s3::config::Builder::from(shared).retry_config(retry);
        if let Some(region) = &options.region {
            config = config.region(aws_sdk_s3::config::Region::new(region.clone()));
        } else if shared.region().is_none() {
            config = config.region(aws_sdk_s3::config::Region::from_static("us-east-1"));
        }
        let custom_endpoint = shared.endpoint_url().is_some()
            || ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"].iter().any(|name| thunk::env::var(name).is_some());
        if custom_endpoint {
            config = config.force_path_style(true);
        }
        let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
        S3Backend { client: Client::from_conf(config.build()), location, options, permits }
    }

    /// Checks that the bucket exists and the credentials are accepted, with one request.
    pub async fn check(&self) -> io::Result<()> {
        let _permit = self.permit().await;
        match self.client.head_bucket().bucket(&self.location.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 404) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the bucket of {} does not exist; create it or fix --store", self.location),
            )),
            Err(error) => Err(self.error(&error)),
        }
    }

    /// Where this backend keeps its objects.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits.acquire().await.expect("the semaphore is never closed")
    }

    /// One line a user can act on, never the SDK's debug dump.
    fn error<E>(&self, error: &SdkError<E>) -> io::Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        io::Error::other(describe_sdk_error(error, &self.location))
    }

    async fn put_single(&self, key: &str, body: Bytes, if_absent: bool) -> io::Result<()> {
        let _permit = self.permit().await;
        let mut request = self.client.put_object().bucket(&self.location.bucket).key(key).body(ByteStream::from(body));
        if if_absent {
            request = request.if_none_match("*");
        }
        self.conditional(request.send().await, if_absent)
    }

    /// The outcome of a write sent with `If-None-Match: *` when `if_absent`: a 412 means someone wrote
    /// the same content-addressed object first, which is success.
    fn conditional<T, E>(&self, result: Result<T, SdkError<E>>, if_absent: bool) -> io::Result<()>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match result {
            Ok(_) => Ok(()),
            Err(error) if if_absent && is_status(&error, 412) => Ok(()),
            Err(error) => Err(self.error(&error)),
        }
    }

    async fn put_multipart(&self, key: &str, body: Bytes, if_absent: bool) -> io::Result<()> {
        let created = {
            let _permit = self.permit().await;
            self.client
                .create_multipart_upload()
                .bucket(&self.location.bucket)
                .key(key)
                .send()
                .await
                .map_err(|error| self.error(&error))?
        };
        let upload_id =
            created.upload_id().ok_or_else(|| io::Error::other("S3 started a multipart upload without an id"))?;
        match self.upload_parts(key, upload_id, body).await {
            Ok(parts) => {
                let _permit = self.permit().await;
                let completed = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
                let mut request = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(completed);
                if if_absent {
                    request = request.if_none_match("*");
                }
                self.conditional(request.send().await, if_absent)
            }
            Err(error) => {
                // Parts of an abandoned upload cost storage until aborted.
                let _permit = self.permit().await;
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await;
                Err(error)
            }
        }
    }

    async fn upload_parts(&self, key: &str, upload_id: &str, body: Bytes) -> io::Result<Vec<CompletedPart>> {
        let part_size = self.options.part_size.max(5 << 20);
        let mut tasks = tokio::task::JoinSet::new();
        for (index, start) in (0..body.len()).step_by(part_size).enumerate() {
            let part = body.slice(start..(start + part_size).min(body.len()));
            let (this, key, upload_id) = (self.clone(), key.to_owned(), upload_id.to_owned());
            let number = i32::try_from(index + 1).map_err(|_| io::Error::other("too many parts"))?;
            tasks.spawn(async move {
                let _permit = this.permit().await;
                let uploaded = this
                    .client
                    .upload_part()
                    .bucket(&this.location.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(part))
                    .send()
                    .await
                    .map_err(|error| this.error(&error))?;
                Ok::<_, io::Error>(CompletedPart::builder().part_number(number).set_e_tag(uploaded.e_tag).build())
            });
        }
        let mut parts = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            parts.push(joined.map_err(io::Error::other)??);
        }
        parts.sort_by_key(|part| part.part_number());
        Ok(parts)
    }
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    async fn get(&self, key: ObjectKey) -> io::Result<Option<Vec<u8>>> {
        let key = self.location.key_of(key);
        let _permit = self.permit().await;
        let output = match self.client.get_object().bucket(&self.location.bucket).key(&key).send().await {
            Ok(output) => output,
            Err(error) if is_status(&error, 404) && !crate::error::is_missing_bucket(&error) => return Ok(None),
            Err(error) => return Err(self.error(&error)),
        };
        // The SDK checks the body against the checksum S3 stored with the object, when there is one.
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| io::Error::other(format!("reading it failed: {}", crate::error::causes(&e))))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn get_streaming(
        &self,
        key: ObjectKey,
        sink: &mut (dyn for<'b> FnMut(&'b [u8]) -> io::Result<()> + Send),
    ) -> io::Result<bool> {
        let key = self.location.key_of(key);
        let _permit = self.permit().await;
        let mut output = match self.client.get_object().bucket(&self.location.bucket).key(&key).send().await {
            Ok(output) => output,
            Err(error) if is_status(&error, 404) && !crate::error::is_missing_bucket(&error) => return Ok(false),
            Err(error) => return Err(self.error(&error)),
        };
        // The SDK checks the body against the checksum S3 stored with the object, if any, at its end.
        while let Some(chunk) = output
            .body
            .try_next()
            .await
            .map_err(|e| io::Error::other(format!("reading it failed: {}", crate::error::causes(&e))))?
        {
            sink(&chunk)?;
        }
        Ok(true)
    }

    async fn put(&self, key: ObjectKey, bytes: Vec<u8>) -> io::Result<()> {
        let if_absent = !matches!(key, ObjectKey::Reduction(_));
        let key = self.location.key_of(key);
        let body = Bytes::from(bytes);
        if body.len() > self.options.multipart_threshold {
            self.put_multipart(&key, body, if_absent).await
        } else {
            self.put_single(&key, body, if_absent).await
        }
    }

    async fn has(&self, key: ObjectKey) -> io::Result<bool> {
        let key = self.location.key_of(key);
        let _permit = self.permit().await;
        match self.client.head_object().bucket(&self.location.bucket).key(&key).send().await {
            Ok(_) => Ok(true),
            Err(error) if is_status(&error, 404) => Ok(false),
            Err(error) => Err(self.error(&error)),
        }
    }

    async fn list(&self, kind: &str, from: Option<String>) -> io::Result<ListPage> {
        let prefix = self.location.under_prefix(&format!("{kind}/"));
        let _permit = self.permit().await;
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(&prefix)
            .set_continuation_token(from)
            .send()
            .await
            .map_err(|error| self.error(&error))?;
        let under = |key: &str| key.strip_prefix(&prefix).map(|name| format!("{kind}/{name}"));
        let keys = output.contents().iter().filter_map(|object| ObjectKey::parse(&under(object.key()?)?)).collect();
        let next = output
            .is_truncated()
            .unwrap_or(false)
            .then(|| output.next_continuation_token().map(str::to_owned))
            .flatten();
        Ok(ListPage { keys, next })
    }

    fn describe(&self) -> String {
        self.location.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_keys_stay_under_the_prefix() {
        let location = S3Location::parse("my-bucket/team/cache/").unwrap();
        assert_eq!(location.bucket, "my-bucket");
        assert_eq!(location.prefix, "team/cache");
        assert_eq!(location.to_string(), "s3://my-bucket/team/cache");
        let hash = thunk::Hash::of(b"x");
        assert_eq!(location.key_of(ObjectKey::Blob(hash)), format!("team/cache/blobs/{hash}"));
        let bare = S3Location::parse("my-bucket").unwrap();
        assert_eq!(bare.key_of(ObjectKey::Thunk(hash)), format!("thunks/{hash}"));
        for bad in ["", "/path", "UPPER", "b", "my-bucket/../escape"] {
            assert!(S3Location::parse(bad).is_err(), "{bad}");
        }
    }
}
