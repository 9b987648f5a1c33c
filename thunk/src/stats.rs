//! The counters of a store since the last `cargo lambdabuild stats --reset`: thunks executed by engine,
//! cache hits, traffic with the remote, Lambda's billed time.
//!
//! Every process that forces thunks through the store adds its own tally when it ends: `cargo
//! lambdabuild`, and each CI-mode wrapper (one per rustc call). Each tally is one JSON line appended
//! to a file beside the local store, `work/stats/<store>.jsonl`, with one `write(2)` on a file opened
//! for appending, so concurrent processes never interleave or lose a line; reading sums the lines.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::store::Traffic;
use crate::workdir::Workdir;

/// What one process (or the sum of many) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    /// Thunks run, by the engine that ran them (`local`, `lambda`).
    pub executed: BTreeMap<String, u64>,
    /// Thunks whose reduction came from the store.
    pub cached: u64,
    /// rustc calls the model did not take, which ran for real.
    pub passed_through: u64,
    /// Thunks whose program failed (a compile error).
    pub failed: u64,
    /// Requests and bytes to and from the remote store.
    pub traffic: Traffic,
    /// Lambda invocations that answered, and the milliseconds Lambda billed for them.
    pub lambda_invocations: u64,
    /// See `lambda_invocations`.
    pub lambda_billed_ms: u64,
}

impl Tally {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    /// Adds `other` to this tally.
    pub fn add(&mut self, other: &Tally) {
        for (engine, count) in &other.executed {
            *self.executed.entry(engine.clone()).or_default() += count;
        }
        self.cached += other.cached;
        self.passed_through += other.passed_through;
        self.failed += other.failed;
        self.traffic.put_requests += other.traffic.put_requests;
        self.traffic.bytes_up += other.traffic.bytes_up;
        self.traffic.get_requests += other.traffic.get_requests;
        self.traffic.bytes_down += other.traffic.bytes_down;
        self.lambda_invocations += other.lambda_invocations;
        self.lambda_billed_ms += other.lambda_billed_ms;
    }

    /// Thunks executed on every engine.
    pub fn executed_total(&self) -> u64 {
        self.executed.values().sum()
    }
}

/// A line of the file: a tally, or the mark of a reset.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    /// Set on the first line after a reset: seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
    #[serde(default, flatten)]
    tally: Tally,
}

/// The counters of one store on this machine.
#[derive(Debug, Clone)]
pub struct Stats {
    path: PathBuf,
}

impl Stats {
    /// The counters of the store `described` (as [`crate::Store::describe`] names it), kept in `workdir`.
    pub fn of(workdir: &Workdir, described: &str) -> Stats {
        let name = Hash::of(described.as_bytes()).to_hex();
        Stats { path: workdir.stats_dir().join(format!("{}.jsonl", &name[..16])) }
    }

    /// The file they are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a process's tally (nothing when it is empty).
    pub fn record(&self, tally: &Tally) -> io::Result<()> {
        if tally.is_empty() {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&Line { since: None, tally: tally.clone() })?;
        line.push(b'\n');
        self.append(&line)
    }

    fn append(&self, line: &[u8]) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        // One write: O_APPEND keeps concurrent lines whole.
        file.write_all(line)
    }

    /// The sum of every tally since the last reset, and when that was (seconds since the epoch).
    pub fn read(&self) -> io::Result<(Tally, Option<u64>)> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Tally::default(), None)),
            Err(error) => return Err(error),
        };
        let mut sum = Tally::default();
        let mut since = None;
        // A line cut short by a crash is skipped: the counters are a report, not a ledger.
        for line in text.lines().filter_map(|line| serde_json::from_str::<Line>(line).ok()) {
            since = since.or(line.since);
            sum.add(&line.tally);
        }
        Ok((sum, since))
    }

    /// Starts the counters again from zero.
    pub fn reset(&self) -> io::Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut line = serde_json::to_vec(&Line { since: Some(now), tally: Tally::default() })?;
        line.push(b'\n');
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = tempfile::NamedTempFile::new_in(self.path.parent().unwrap_or(Path::new(".")))?;
        file.write_all(&line)?;
        file.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_across_writers_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let workdir = Workdir::open(dir.path()).unwrap();
        let stats = Stats::of(&workdir, "s3://bucket/prefix");
        assert_eq!(stats.read().unwrap(), (Tally::default(), None));
        let one = Tally { executed: [("local".to_owned(), 2)].into(), cached: 1, ..Tally::default() };
        let two = Tally { executed: [("lambda".to_owned(), 3), ("local".to_owned(), 1)].into(), ..Tally::default() };
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| stats.record(&one).unwrap());
            }
        });
        stats.record(&two).unwrap();
        stats.record(&Tally::default()).unwrap();
        let (sum, since) = stats.read().unwrap();
        assert_eq!(sum.executed["local"], 17);
        assert_eq!(sum.executed["lambda"], 3);
        assert_eq!(sum.cached, 8);
        assert_eq!(since, None);
        // Another store on the same machine keeps its own counters.
        assert_eq!(Stats::of(&workdir, "/some/dir").read().unwrap().0, Tally::default());

        stats.reset().unwrap();
        let (sum, since) = stats.read().unwrap();
        assert_eq!(sum, Tally::default());
        assert!(since.is_some());
        stats.record(&two).unwrap();
        assert_eq!(stats.read().unwrap().0.executed_total(), 4);
    }
}
