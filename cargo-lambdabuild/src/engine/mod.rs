//! Where thunks run: `--engine local=N` (processes on this machine, the forcer's own) and
//! `--engine lambda=N` (N invocations of the deployed function in flight). Both may be given: the
//! local engine then runs what falls back from Lambda.

pub mod lambda;

use anyhow::{Context, bail};

/// The engines a build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engines {
    /// Thunks run at once on this machine (for fallbacks, when Lambda is the engine).
    pub local: usize,
    /// Invocations in flight, when Lambda is the engine.
    pub lambda: Option<usize>,
}

impl Engines {
    /// Reads `--engine` values: `local`, `local=N`, `lambda=N`, each kind at most once. Without any,
    /// the local engine with a slot per core.
    pub fn parse(specs: &[String]) -> anyhow::Result<Engines> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut local = None;
        let mut lambda = None;
        for spec in specs {
            let (kind, count) = match spec.split_once('=') {
                Some((kind, n)) => {
                    let n = n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| format!("`--engine {spec}`: N must be a positive number"))?;
                    (kind, n)
                }
                None if spec == "local" => ("local", cores),
                None => bail!("`--engine {spec}`: write local=N or lambda=N"),
            };
            let slot = match kind {
                "local" => &mut local,
                "lambda" => &mut lambda,
                _ => bail!("unknown engine `{spec}`; this version has local=N and lambda=N"),
            };
            if slot.replace(count).is_some() {
                bail!("`--engine {kind}=…` is given twice");
            }
        }
        Ok(Engines { local: local.unwrap_or(cores), lambda })
    }

    /// How the summary names them: `local=2`, `lambda=8 + local=2`.
    pub fn describe(&self) -> String {
        match self.lambda {
            Some(n) => format!("lambda={n} + local={}", self.local),
            None => format!("local={}", self.local),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(specs: &[&str]) -> anyhow::Result<Engines> {
        Engines::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn engines_parse_alone_and_together() {
        assert_eq!(parse(&["local=3"]).unwrap(), Engines { local: 3, lambda: None });
        assert_eq!(parse(&["lambda=512", "local=2"]).unwrap(), Engines { local: 2, lambda: Some(512) });
        assert!(parse(&["lambda=8"]).unwrap().local >= 1);
        for bad in [&["lambda=0"][..], &["gpu=4"], &["lambda"], &["local=2", "local=3"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
