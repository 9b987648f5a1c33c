//! The settings, from one place: a flag, else its `LAMBDABUILD_*` variable, else the config file, else
//! the default. The config file is `--config FILE`, else `LAMBDABUILD_CONFIG`, else
//! `$XDG_CONFIG_HOME/lambdabuild/config.toml` (`~/.config/lambdabuild/config.toml`):
//!
//! ```toml
//! store = "s3://my-bucket/lambdabuild"   # or a directory; default: the cache directory
//! cache-dir = "/var/cache/lambdabuild"  # the local store, and the cache in front of S3
//! engine = ["lambda=256", "local=2"]    # where thunks run; default: local=<cores>
//! function = "cargo-lambdabuild"        # the Lambda function
//! region = "eu-west-1"                  # of the bucket and the function; default: AWS's config
//! upload-jobs = 32                      # requests to S3 in flight
//! invoke-timeout = 960                  # seconds the client waits for one invocation
//!
//! [deploy]                              # cargo lambdabuild deploy
//! role = "arn:aws:iam::123456789012:role/lambdabuild"
//! memory = 3008                         # MB; Lambda gives CPU in proportion
//! ephemeral-storage = 4096              # MB of /tmp
//! timeout = 900                         # seconds per invocation
//! architecture = "x86_64"
//!
//! [prices]                              # USD, for the cost estimate
//! lambda-gb-second = 0.0000166667
//! lambda-request = 0.0000002
//! s3-put = 0.000005
//! s3-get = 0.0000004
//! transfer-gb = 0.0
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::cost::PriceOverrides;

/// Names the config file.
pub const CONFIG_VAR: &str = "LAMBDABUILD_CONFIG";
/// Names the engines, as `--engine` values separated by commas (`lambda=64,local=2`).
pub const ENGINE_VAR: &str = "LAMBDABUILD_ENGINE";
/// Names the Lambda function.
pub const FUNCTION_VAR: &str = "LAMBDABUILD_FUNCTION";
/// Names the AWS region of the bucket and the function.
pub const REGION_VAR: &str = "LAMBDABUILD_REGION";
/// Requests to S3 in flight.
pub const UPLOAD_JOBS_VAR: &str = "LAMBDABUILD_UPLOAD_JOBS";
/// Seconds the client waits for one invocation.
pub const INVOKE_TIMEOUT_VAR: &str = "LAMBDABUILD_INVOKE_TIMEOUT";

/// Requests to S3 in flight when nothing says otherwise.
pub const DEFAULT_UPLOAD_JOBS: usize = 32;
/// Memory of the function in MB: rustc wants about 2 GiB for a large crate, and Lambda gives CPU in
/// proportion to memory (about two vCPUs at 3008 MB).
pub const DEFAULT_MEMORY_MB: u32 = 3008;
/// Lambda's longest invocation, plus a minute for the round trip.
pub const DEFAULT_INVOKE_TIMEOUT_S: u64 = 960;

/// The config file, as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// A directory or `s3://BUCKET/PREFIX`.
    pub store: Option<String>,
    /// The local store and cache.
    pub cache_dir: Option<PathBuf>,
    /// `--engine` values.
    pub engine: Option<Vec<String>>,
    /// The Lambda function.
    pub function: Option<String>,
    /// The AWS region.
    pub region: Option<String>,
    /// Requests to S3 in flight.
    pub upload_jobs: Option<usize>,
    /// Seconds the client waits for one invocation.
    pub invoke_timeout: Option<u64>,
    /// `cargo lambdabuild deploy`'s settings.
    #[serde(default)]
    pub deploy: DeployConfig,
    /// Prices over the built-in ones.
    #[serde(default)]
    pub prices: PriceOverrides,
}

/// The `[deploy]` table: the same settings as `deploy`'s flags.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeployConfig {
    /// Deprecated place of the function's name (the top-level `function` is read first).
    pub function: Option<String>,
    /// The role's ARN.
    pub role: Option<String>,
    /// MB.
    pub memory: Option<u32>,
    /// MB of /tmp.
    pub ephemeral_storage: Option<u32>,
    /// Seconds.
    pub timeout: Option<u32>,
    /// `x86_64` or `arm64`.
    pub architecture: Option<String>,
}

impl ConfigFile {
    /// The config file's path: `explicit`, else `LAMBDABUILD_CONFIG`, else the XDG location.
    pub fn path(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(path.to_owned());
        }
        if let Some(path) = thunk::env::var(CONFIG_VAR).filter(|value| !value.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let base = thunk::env::var("XDG_CONFIG_HOME")
            .filter(|dir| Path::new(dir).is_absolute())
            .map(PathBuf::from)
            .or_else(|| thunk::env::var("HOME").map(|home| Path::new(&home).join(".config")))?;
        Some(base.join("lambdabuild/config.toml"))
    }

    /// Reads the config file; none at the default place is an empty one, none where the user named
    /// one is an error.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<ConfigFile> {
        let named = explicit.is_some() || thunk::env::var(CONFIG_VAR).is_some_and(|value| !value.is_empty());
        let Some(path) = ConfigFile::path(explicit) else {
            return Ok(ConfigFile::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{} is not a valid config file", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !named => Ok(ConfigFile::default()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                bail!("the config file {} does not exist", path.display())
            }
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// Settings every command shares, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The store, when one is named (else the cache directory is the store).
    pub store: Option<String>,
    /// The cache directory, when one is named.
    pub cache_dir: Option<PathBuf>,
    /// `--engine` values.
    pub engine: Vec<String>,
    /// The Lambda function.
    pub function: String,
    /// The AWS region, when one is named.
    pub region: Option<String>,
    /// Requests to S3 in flight.
    pub upload_jobs: usize,
    /// Seconds the client waits for one invocation.
    pub invoke_timeout_s: u64,
    /// The function's memory, for the cost estimate.
    pub memory_mb: u32,
    /// The prices of the cost estimate.
    pub prices: crate::cost::Prices,
    /// The config file as read (for `deploy`'s table).
    pub file: ConfigFile,
}

/// What the command line (or, in CI mode, nothing) gave; `None` and empty mean "not given".
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// `--store`.
    pub store: Option<String>,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--engine`.
    pub engine: Vec<String>,
    /// `--function`.
    pub function: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--upload-jobs`.
    pub upload_jobs: Option<usize>,
    /// `--config`.
    pub config: Option<PathBuf>,
}

impl Settings {
    /// Flags, else variables, else the file, else the defaults.
    pub fn resolve(given: &Given) -> anyhow::Result<Settings> {
        let file = ConfigFile::load(given.config.as_deref())?;
        let var = |name: &str| thunk::env::var(name).filter(|value| !value.is_empty());
        let engine = if !given.engine.is_empty() {
            given.engine.clone()
        } else if let Some(value) = var(ENGINE_VAR) {
            value.split(',').map(|spec| spec.trim().to_owned()).filter(|spec| !spec.is_empty()).collect()
        } else {
            file.engine.clone().unwrap_or_default()
        };
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            var(name)
                .map(|value| value.parse::<u64>().with_context(|| format!("{name}={value} is not a number")))
                .transpose()
        };
        Ok(Settings {
            store: given.store.clone().or_else(|| var(thunk::env::STORE_VAR)).or(file.store.clone()),
            cache_dir: given
                .cache_dir
                .clone()
                .or_else(|| var(thunk::env::CACHE_DIR_VAR).map(PathBuf::from))
                .or(file.cache_dir.clone()),
            engine,
            function: given
                .function
                .clone()
                .or_else(|| var(FUNCTION_VAR))
                .or(file.function.clone())
                .or(file.deploy.function.clone())
                .unwrap_or_else(|| crate::engine::lambda::DEFAULT_FUNCTION.to_owned()),
            region: given.region.clone().or_else(|| var(REGION_VAR)).or(file.region.clone()),
            upload_jobs: match given.upload_jobs {
                Some(jobs) => jobs,
                None => number(UPLOAD_JOBS_VAR)?
                    .map(|jobs| jobs as usize)
                    .or(file.upload_jobs)
                    .unwrap_or(DEFAULT_UPLOAD_JOBS),
            }
            .max(1),
            invoke_timeout_s: number(INVOKE_TIMEOUT_VAR)?.or(file.invoke_timeout).unwrap_or(DEFAULT_INVOKE_TIMEOUT_S),
            memory_mb: number("LAMBDABUILD_MEMORY_MB")?
                .map(|mb| mb as u32)
                .or(file.deploy.memory)
                .unwrap_or(DEFAULT_MEMORY_MB),
            prices: crate::cost::Prices::default().with(&file.prices),
            file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|line| !line.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|line| !line.starts_with("//! ```"))
            .map(|line| format!("{}\n", line.trim_start_matches("//!").trim_start()))
            .collect();
        let file: ConfigFile = toml::from_str(&example).unwrap();
        assert_eq!(file.store.as_deref(), Some("s3://my-bucket/lambdabuild"));
        assert_eq!(file.engine, Some(vec!["lambda=256".to_owned(), "local=2".to_owned()]));
        assert_eq!(file.deploy.memory, Some(3008));
        assert_eq!(file.prices.lambda_gb_second, Some(0.0000166667));
        assert!(toml::from_str::<ConfigFile>("stor = \"x\"").is_err(), "a misspelt key is refused");
    }
}
