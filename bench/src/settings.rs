//! Bench settings, read from BENCH_* environment variables.

use std::time::Duration;

use crate::BenchResult;

/// The settings of one bench run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Numbers of the bench user's items, one throughput run per size and repeat (BENCH_SIZES).
    pub sizes: Vec<usize>,
    /// Runs of each runner at each size (BENCH_REPEATS).
    pub repeats: usize,
    /// One-way delay that the proxy adds to every client-to-server chunk (BENCH_LATENCY_MS).
    pub latency: Duration,
    /// BatchWriteItem calls in flight, for the function and for the floor (BENCH_CONCURRENCY).
    pub concurrency: usize,
}

/// DELETE_CONCURRENCY values that the function accepts, so BENCH_CONCURRENCY must fit them too.
pub const CONCURRENCY_RANGE: std::ops::RangeInclusive<usize> = 1..=64;

/// DELETE_CONCURRENCY values of the sweep.
pub const SWEEP_CONCURRENCIES: [usize; 6] = [1, 2, 4, 8, 16, 32];

/// Fresh starts of each function in the cold-start measurement.
pub const COLD_START_REPEATS: usize = 10;

/// The bench user's items in the cold-start measurement.
pub const COLD_START_ITEMS: usize = 10;

impl Settings {
    /// Reads the settings from the environment, with the documented defaults.
    pub fn from_env() -> BenchResult<Self> {
        let sizes = parse_sizes(&variable_or("BENCH_SIZES", "1000,10000,100000"))?;
        let repeats = parse_positive("BENCH_REPEATS", &variable_or("BENCH_REPEATS", "3"))?;
        let latency_text = variable_or("BENCH_LATENCY_MS", "5");
        let latency_ms: u64 = latency_text.trim().parse().map_err(|_| {
            format!(
                "invalid BENCH_LATENCY_MS {latency_text:?}: expected a whole number of milliseconds"
            )
        })?;
        let concurrency =
            parse_positive("BENCH_CONCURRENCY", &variable_or("BENCH_CONCURRENCY", "8"))?;
        if !CONCURRENCY_RANGE.contains(&concurrency) {
            return Err(format!(
                "invalid BENCH_CONCURRENCY {concurrency}: expected 1 to 64, the range of DELETE_CONCURRENCY"
            )
            .into());
        }

        Ok(Self {
            sizes,
            repeats,
            latency: Duration::from_millis(latency_ms),
            concurrency,
        })
    }

    /// Returns the size of the concurrency sweep: the middle of the sorted sizes.
    pub fn sweep_size(&self) -> usize {
        let mut sizes = self.sizes.clone();
        sizes.sort_unstable();
        sizes[sizes.len() / 2]
    }

    /// Returns the command that reproduces this run.
    pub fn command(&self) -> String {
        let sizes: Vec<String> = self.sizes.iter().map(usize::to_string).collect();
        format!(
            "BENCH_SIZES={} BENCH_REPEATS={} BENCH_LATENCY_MS={} BENCH_CONCURRENCY={} make bench",
            sizes.join(","),
            self.repeats,
            self.latency.as_millis(),
            self.concurrency
        )
    }
}

fn variable_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parse_positive(name: &str, text: &str) -> BenchResult<usize> {
    match text.trim().parse::<usize>() {
        Ok(value) if value > 0 => Ok(value),
        _ => Err(format!("invalid {name} {text:?}: expected a whole number above 0").into()),
    }
}

fn parse_sizes(text: &str) -> BenchResult<Vec<usize>> {
    let mut sizes = Vec::new();
    for part in text.split(',') {
        let size = parse_positive("BENCH_SIZES", part)?;
        if !sizes.contains(&size) {
            sizes.push(size);
        }
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_deduplicate() {
        assert_eq!(
            parse_sizes("1000, 10000,1000").ok(),
            Some(vec![1000, 10000])
        );
    }

    #[test]
    fn sizes_reject_zero_and_text() {
        assert!(parse_sizes("0").is_err());
        assert!(parse_sizes("1000,ten").is_err());
        assert!(parse_sizes("").is_err());
    }

    #[test]
    fn sweep_size_is_middle_size() {
        let settings = Settings {
            sizes: vec![100_000, 1000, 10_000],
            repeats: 1,
            latency: Duration::ZERO,
            concurrency: 8,
        };
        assert_eq!(settings.sweep_size(), 10_000);
    }
}
