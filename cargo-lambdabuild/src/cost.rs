//! What a build cost on AWS, estimated from what it used: Lambda's GB-seconds and requests, S3's
//! requests, and bytes moved. The prices are the constants below (us-east-1, x86_64, on-demand,
//! 2026), overridable in the config file's `[prices]` table. Transfer between Lambda and S3 in one
//! region is free; a laptop downloading from S3 pays for egress, which `transfer-gb` can price.

use serde::{Deserialize, Serialize};
use thunk::stats::Tally;

/// Prices in US dollars.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    /// Per GB-second of Lambda duration (memory × billed time).
    pub lambda_gb_second: f64,
    /// Per Lambda invocation.
    pub lambda_request: f64,
    /// Per S3 PUT (and COPY, POST, LIST).
    pub s3_put: f64,
    /// Per S3 GET (and HEAD).
    pub s3_get: f64,
    /// Per GB moved between this machine and S3.
    pub transfer_gb: f64,
}

impl Default for Prices {
    fn default() -> Prices {
        Prices {
            lambda_gb_second: 0.000_016_666_7,
            lambda_request: 0.20 / 1_000_000.0,
            s3_put: 0.005 / 1000.0,
            s3_get: 0.0004 / 1000.0,
            transfer_gb: 0.0,
        }
    }
}

/// The `[prices]` table: any price may be given.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PriceOverrides {
    /// See [`Prices::lambda_gb_second`].
    pub lambda_gb_second: Option<f64>,
    /// See [`Prices::lambda_request`].
    pub lambda_request: Option<f64>,
    /// See [`Prices::s3_put`].
    pub s3_put: Option<f64>,
    /// See [`Prices::s3_get`].
    pub s3_get: Option<f64>,
    /// See [`Prices::transfer_gb`].
    pub transfer_gb: Option<f64>,
}

impl Prices {
    /// These prices with `overrides` over them.
    pub fn with(self, overrides: &PriceOverrides) -> Prices {
        Prices {
            lambda_gb_second: overrides.lambda_gb_second.unwrap_or(self.lambda_gb_second),
            lambda_request: overrides.lambda_request.unwrap_or(self.lambda_request),
            s3_put: overrides.s3_put.unwrap_or(self.s3_put),
            s3_get: overrides.s3_get.unwrap_or(self.s3_get),
            transfer_gb: overrides.transfer_gb.unwrap_or(self.transfer_gb),
        }
    }
}

/// A build's use of AWS and its estimated price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cost {
    /// Lambda invocations.
    pub invocations: u64,
    /// Memory × billed duration.
    pub gb_seconds: f64,
    /// S3 PUT requests.
    pub s3_puts: u64,
    /// S3 GET requests.
    pub s3_gets: u64,
    /// Bytes sent to S3.
    pub bytes_up: u64,
    /// Bytes fetched from S3.
    pub bytes_down: u64,
    /// The estimate, in US dollars.
    pub usd: f64,
}

impl Cost {
    /// The cost of what `tally` counts, for a function of `memory_mb`.
    pub fn of(tally: &Tally, memory_mb: u32, prices: &Prices) -> Cost {
        let gb_seconds = tally.lambda_billed_ms as f64 / 1000.0 * f64::from(memory_mb) / 1024.0;
        let traffic = tally.traffic;
        let bytes = (traffic.bytes_up + traffic.bytes_down) as f64 / 1e9;
        let usd = gb_seconds * prices.lambda_gb_second
            + tally.lambda_invocations as f64 * prices.lambda_request
            + traffic.put_requests as f64 * prices.s3_put
            + traffic.get_requests as f64 * prices.s3_get
            + bytes * prices.transfer_gb;
        Cost {
            invocations: tally.lambda_invocations,
            gb_seconds,
            s3_puts: traffic.put_requests,
            s3_gets: traffic.get_requests,
            bytes_up: traffic.bytes_up,
            bytes_down: traffic.bytes_down,
            usd,
        }
    }

    /// One line for the summary.
    pub fn describe(&self) -> String {
        format!(
            "{} invocations, {:.1} GB-s, {} PUT + {} GET requests, {:.1} MB up, {:.1} MB down: about ${:.4}",
            self.invocations,
            self.gb_seconds,
            self.s3_puts,
            self.s3_gets,
            self.bytes_up as f64 / 1e6,
            self.bytes_down as f64 / 1e6,
            self.usd
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thunk::store::Traffic;

    #[test]
    fn a_build_is_priced_from_what_it_used() {
        let tally = Tally {
            lambda_invocations: 1000,
            lambda_billed_ms: 1_000_000,
            traffic: Traffic { put_requests: 2000, bytes_up: 0, get_requests: 10_000, bytes_down: 0 },
            ..Tally::default()
        };
        // 1000 s at 2 GB = 2000 GB-s.
        let cost = Cost::of(&tally, 2048, &Prices::default());
        assert!((cost.gb_seconds - 2000.0).abs() < 1e-9);
        let expected = 2000.0 * 0.000_016_666_7 + 1000.0 * 0.2e-6 + 2000.0 * 5e-6 + 10_000.0 * 0.4e-6;
        assert!((cost.usd - expected).abs() < 1e-12, "{} vs {expected}", cost.usd);
        let free = Prices::default().with(&PriceOverrides { lambda_gb_second: Some(0.0), ..PriceOverrides::default() });
        assert!(Cost::of(&tally, 2048, &free).usd < cost.usd);
        assert_eq!(Cost::of(&Tally::default(), 2048, &Prices::default()).usd, 0.0);
    }
}
