//! The whole bench: servers, dataset, throughput runs, concurrency sweep and
//! cold starts, in that order.

use std::path::Path;

use serde_json::json;

use crate::BenchResult;
use crate::cold_start::{self, ColdStarts};
use crate::dataset::{BENCH_USER, Dataset};
use crate::dynalite::Dynalite;
use crate::dynamodb::{self, BATCH_SIZE};
use crate::proxy::{LatencyProxy, OperationCounts};
use crate::runners::{Measurement, Runner, RunnerContext, boto3, floor, naive, ours};
use crate::settings::{SWEEP_CONCURRENCIES, Settings};

/// The bench table's name on dynalite.
const TABLE: &str = "bench_learnings";

/// One measured run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub runner: Runner,
    pub items: usize,
    /// DELETE_CONCURRENCY of the function, or the floor's calls in flight.
    pub concurrency: Option<usize>,
    pub measurement: Measurement,
    /// Requests that passed the proxy during the run.
    pub counts: OperationCounts,
}

impl RunRecord {
    pub fn items_per_second(&self) -> f64 {
        self.items as f64 / self.measurement.seconds
    }
}

/// Everything the report needs.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub throughput: Vec<RunRecord>,
    pub sweep: Vec<RunRecord>,
    pub sweep_items: usize,
    pub cold_starts: ColdStarts,
    /// Counts that differ from what the run should have sent, for the report.
    pub warnings: Vec<String>,
}

/// Runs every measurement. Servers and processes stop when this returns, also on error.
pub async fn run(settings: &Settings, root: &Path) -> BenchResult<Results> {
    let dynalite = Dynalite::start(root).await?;
    let proxy = LatencyProxy::start(dynalite.address, settings.latency).await?;
    eprintln!(
        "dynalite on {}, latency proxy on {} ({} ms)",
        dynalite.address,
        proxy.address,
        settings.latency.as_millis()
    );
    let dataset = Dataset::create(dynamodb::client_for(&dynalite.endpoint()), TABLE).await?;
    let context = runner_context(root, &proxy, settings)?;
    let mut results = Results {
        sweep_items: settings.sweep_size(),
        ..Results::default()
    };

    // One unrecorded run of each runner first, so that no recorded run pays
    // for cold caches, dynalite's first delete requests, or the first Python start.
    let warm_up_items = settings
        .sizes
        .iter()
        .min()
        .copied()
        .unwrap_or(1000)
        .min(1000);
    for runner in Runner::ALL {
        let concurrency =
            matches!(runner, Runner::Ours | Runner::Floor).then_some(settings.concurrency);
        let record = run_once(
            &context,
            &dataset,
            &proxy,
            runner,
            warm_up_items,
            concurrency,
        )
        .await?;
        log_run(&record, "warm-up, not recorded");
    }

    // Runners take turns within each repeat, so that a slow phase of the
    // machine does not land on one runner only.
    for &items in &settings.sizes {
        for repeat in 1..=settings.repeats {
            for runner in Runner::ALL {
                let concurrency =
                    matches!(runner, Runner::Ours | Runner::Floor).then_some(settings.concurrency);
                let record =
                    run_once(&context, &dataset, &proxy, runner, items, concurrency).await?;
                log_run(&record, &format!("repeat {repeat}/{}", settings.repeats));
                results.warnings.extend(check_counts(&record));
                results.throughput.push(record);
            }
        }
    }

    for repeat in 1..=settings.repeats {
        for concurrency in SWEEP_CONCURRENCIES {
            let record = run_once(
                &context,
                &dataset,
                &proxy,
                Runner::Ours,
                results.sweep_items,
                Some(concurrency),
            )
            .await?;
            log_run(
                &record,
                &format!("sweep, repeat {repeat}/{}", settings.repeats),
            );
            results.warnings.extend(check_counts(&record));
            results.sweep.push(record);
        }
    }

    eprintln!(
        "cold starts: {} of each function",
        crate::settings::COLD_START_REPEATS
    );
    results.cold_starts = cold_start::measure(&context, &dataset).await?;
    Ok(results)
}

fn runner_context(
    root: &Path,
    proxy: &LatencyProxy,
    settings: &Settings,
) -> BenchResult<RunnerContext> {
    // The admin of the sample event may delete any user's learnings, so only
    // the target user changes.
    let event_path = root.join("events/http-api-admin.json");
    let text = std::fs::read_to_string(&event_path)
        .map_err(|error| format!("failed to read {}: {error}", event_path.display()))?;
    let mut event: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("invalid JSON in {}: {error}", event_path.display()))?;
    let path = format!("/learnings/users/{BENCH_USER}");
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["pathParameters"]["user_id"] = json!(BENCH_USER);

    Ok(RunnerContext {
        bootstrap: root.join("target/release/bootstrap"),
        python: root.join(".bench-venv/bin/python"),
        python_scripts: root.join("bench/python"),
        endpoint: proxy.endpoint(),
        table: TABLE.to_owned(),
        event,
        concurrency: settings.concurrency,
    })
}

/// Seeds the bench user, runs one runner through the proxy and checks the table afterwards.
async fn run_once(
    context: &RunnerContext,
    dataset: &Dataset,
    proxy: &LatencyProxy,
    runner: Runner,
    items: usize,
    concurrency: Option<usize>,
) -> BenchResult<RunRecord> {
    dataset.seed_bench_user(items).await?;
    proxy.reset_counts();

    let measured = match runner {
        Runner::Ours => ours::run(context, items, concurrency.unwrap_or(context.concurrency)).await,
        Runner::Naive => naive::run(context).await,
        Runner::Boto3 => boto3::run(context, items).await,
        Runner::Floor => floor::run(context, items).await,
    };
    let measurement =
        measured.map_err(|error| format!("{} at {items} items: {error}", runner.label()))?;
    let counts = proxy.counts();
    dataset.check_after_run(runner.label()).await?;

    Ok(RunRecord {
        runner,
        items,
        concurrency,
        measurement,
        counts,
    })
}

fn log_run(record: &RunRecord, phase: &str) {
    let concurrency = record
        .concurrency
        .map_or(String::new(), |concurrency| format!(" x{concurrency}"));
    eprintln!(
        "{:>5}{concurrency:<4} {:>7} items ({phase}): {:>8.3} s, {:>8.0} items/s, {} Query, {} BatchWriteItem",
        record.runner.label(),
        record.items,
        record.measurement.seconds,
        record.items_per_second(),
        record.counts.query,
        record.counts.batch_write_item,
    );
}

/// Returns a warning for each count of a run that differs from what the
/// deletion should take. Every item must be deleted with ceil(N/25)
/// BatchWriteItem calls, plus up to one partial batch per extra page for the
/// naive loop. The floor must send no Query, and the function's own log must
/// agree with the proxy.
fn check_counts(record: &RunRecord) -> Vec<String> {
    let label = format!(
        "{} at {} items{}",
        record.runner.label(),
        record.items,
        record
            .concurrency
            .map_or(String::new(), |concurrency| format!(
                " (concurrency {concurrency})"
            ))
    );
    let counts = record.counts;
    let expected_batches = record.items.div_ceil(BATCH_SIZE) as u64;
    let mut warnings = Vec::new();

    if record.measurement.deleted != record.items as u64 {
        warnings.push(format!(
            "{label}: reported {} items deleted, expected {}",
            record.measurement.deleted, record.items
        ));
    }
    // The naive loop batches each page on its own, so every page but the last
    // may end in a partial batch of fewer than 25 keys.
    let extra_batches = match record.runner {
        Runner::Naive => counts.query.saturating_sub(1),
        _ => 0,
    };
    if !(expected_batches..=expected_batches + extra_batches).contains(&counts.batch_write_item) {
        let expected = if extra_batches == 0 {
            expected_batches.to_string()
        } else {
            format!("{expected_batches} to {}", expected_batches + extra_batches)
        };
        warnings.push(format!(
            "{label}: {} BatchWriteItem requests, expected {expected}",
            counts.batch_write_item
        ));
    }
    if record.runner == Runner::Floor && counts.query != 0 {
        warnings.push(format!(
            "{label}: {} Query requests, expected none",
            counts.query
        ));
    }
    if record.runner != Runner::Floor && counts.query == 0 {
        warnings.push(format!("{label}: no Query request passed the proxy"));
    }
    if counts.other != 0 {
        warnings.push(format!(
            "{label}: {} requests of other operations",
            counts.other
        ));
    }
    if let Some(logged) = record.measurement.logged_calls
        && (logged.pages != counts.query || logged.batches != counts.batch_write_item)
    {
        warnings.push(format!(
            "{label}: the function logged {} pages and {} batches, the proxy counted {} Query and {} BatchWriteItem requests",
            logged.pages, logged.batches, counts.query, counts.batch_write_item
        ));
    }
    warnings
}
