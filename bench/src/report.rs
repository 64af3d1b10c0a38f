//! BENCHMARKS.md: the setup, every table of figures, and the targets.

use std::fmt::Write as _;

use crate::cold_start::{ColdStart, ColdStarts};
use crate::dataset::{ITEM_BYTES, OTHER_USER_ITEMS, OTHER_USERS};
use crate::dynamodb::BATCH_SIZE;
use crate::environment::Environment;
use crate::runners::Runner;
use crate::settings::{COLD_START_ITEMS, COLD_START_REPEATS, Settings};
use crate::stats::{Summary, summarize};
use crate::suite::{Results, RunRecord};

/// Peak RSS limit of the memory target: 40 MB, in KiB as /proc reports it.
const RSS_LIMIT_KIB: f64 = 40_000_000.0 / 1024.0;

/// Renders the whole report.
pub fn render(settings: &Settings, environment: &Environment, results: &Results) -> String {
    let mut page = String::new();
    write_introduction(&mut page, settings, environment);
    write_throughput(&mut page, settings, results);
    write_ratios(&mut page, settings, results);
    write_memory(&mut page, settings, results);
    write_requests(&mut page, settings, results);
    write_sweep(&mut page, settings, results);
    write_cold_start(&mut page, &results.cold_starts);
    write_targets(&mut page, settings, results);
    write_warnings(&mut page, results);
    page
}

fn write_introduction(page: &mut String, settings: &Settings, environment: &Environment) {
    let latency = settings.latency.as_millis();
    let concurrency = settings.concurrency;
    let other_items = thousands((OTHER_USERS.len() * OTHER_USER_ITEMS) as f64);
    let _ = write!(
        page,
        "# Benchmarks

Throughput, memory and cold start of the `bootstrap` binary of `delete-learning-user`, written by
`make bench` (the `bench/` crate). Every run overwrites this file.

## What is measured

Each throughput run deletes the N items of one user, about {ITEM_BYTES} bytes each, from a dynalite
table that also holds {other_items} items of {} other users. Every DynamoDB request of the runners
goes through a TCP proxy on 127.0.0.1 that delays each chunk from client to server by {latency} ms, so
each request takes about {latency} ms longer, as it would against a remote endpoint. Before each run
the bench reseeds the user directly on dynalite. After each run it checks that the user has no items
left and that every other user still has all of theirs, and it stops with an error otherwise.

- **ours**: the release `target/release/bootstrap`, started fresh for each run with
  `DELETE_CONCURRENCY`, and driven by a Runtime API that the bench serves. The time runs from the
  event handed out to the 204 response posted, so it leaves out the process's init.
- **naive**: sequential Rust in the bench. It queries one page of keys, deletes them in
  BatchWriteItem batches of {BATCH_SIZE}, one call at a time, and then queries the next page.
- **boto3**: `bench/python/boto3_delete.py`, a paginated `Table.query` with
  `Table.batch_writer`. The script times its own query and delete section, after the client is built.
- **floor**: the same BatchWriteItem calls, prebuilt from the known keys and sent {concurrency} at a
  time, without any Query. A deletion with as many calls in flight sends the same calls plus its
  Queries, so it should not be faster.

Every Query is keys-only and strongly consistent. One unrecorded run of each runner at the smallest
size (at most 1,000 items) comes first, to warm caches. Each runner ran {} at each size, and the tables
give the median with the minimum and maximum. dynalite is a single-threaded Node.js server, and it
shares the machine's cores with the function, the proxy and the bench. So the figures compare the
runners with each other. They are not DynamoDB's figures.

## Setup

| Setting | Value |
| --- | --- |
| Date | {} |
| Command | `{}` |
| Commit | {} |
| CPU | {}, {} cores |
| Memory | {} |
| OS | {}, kernel {} |
| rustc | {} |
| dynalite | {} |
| Python | {}, boto3 {}, awslambdaric {} |
| Latency | {latency} ms one way, client to server, per chunk |
| Concurrency | {concurrency}: `DELETE_CONCURRENCY` of ours, calls in flight of the floor |

",
        OTHER_USERS.len(),
        times(settings.repeats),
        environment.date_utc,
        settings.command(),
        environment.commit,
        environment.cpu_model,
        environment.cores,
        environment.memory,
        environment.os,
        environment.kernel,
        environment.rustc,
        environment.dynalite,
        environment.python,
        environment.boto3,
        environment.awslambdaric,
    );
}

fn write_throughput(page: &mut String, settings: &Settings, results: &Results) {
    page.push_str("## Throughput\n\nItems deleted per second, median (min–max).\n\n");
    write_size_header(page, "Runner", &settings.sizes);
    for runner in Runner::ALL {
        let _ = write!(page, "| {} |", runner_name(runner, settings));
        for &items in &settings.sizes {
            let cell = rates(results, runner, items).map_or_else(
                || "not measured".to_owned(),
                |summary| format_range(summary, 0),
            );
            let _ = write!(page, " {cell} |");
        }
        page.push('\n');
    }
    page.push('\n');

    let latency_ms = settings.latency.as_secs_f64() * 1000.0;
    if latency_ms > 0.0 {
        let latency_cap = (BATCH_SIZE * settings.concurrency) as f64 * 1000.0 / latency_ms;
        let _ = write!(
            page,
            "With {latency_ms:.0} ms added to each request and {} calls in flight, the latency alone \
             would cap a deletion at {BATCH_SIZE} × {} items per {latency_ms:.0} ms, {} items/s. A \
             floor well below that cap means that dynalite's CPU limits it, not the latency, and \
             then any other load on the machine moves the figures.\n\n",
            settings.concurrency,
            settings.concurrency,
            thousands(latency_cap)
        );
    }
}

fn write_ratios(page: &mut String, settings: &Settings, results: &Results) {
    page.push_str(
        "## Ratios\n\nThe median items/s of ours divided by that of each other runner.\n\n",
    );
    page.push_str(
        "| N | ours / naive | ours / boto3 | ours / floor |\n| ---: | ---: | ---: | ---: |\n",
    );
    for &items in &settings.sizes {
        let _ = write!(page, "| {} |", thousands(items as f64));
        for other in [Runner::Naive, Runner::Boto3, Runner::Floor] {
            let cell = ratio(results, items, other)
                .map_or_else(|| "not measured".to_owned(), |ratio| format!("{ratio:.2}×"));
            let _ = write!(page, " {cell} |");
        }
        page.push('\n');
    }
    page.push('\n');
}

fn write_memory(page: &mut String, settings: &Settings, results: &Results) {
    page.push_str(
        "## Peak memory of ours\n\nVmHWM of the bootstrap process, read from /proc after the response \
         and before the process is stopped, in MiB: median (min–max). The function parses one Query \
         page at a time, so the table also gives the mean keys per page (N divided by the Query \
         requests). dynalite ends a page at 1 MB of item data, as DynamoDB does.\n\n",
    );
    page.push_str("| N | Peak RSS | Keys per Query page |\n| ---: | ---: | ---: |\n");
    for &items in &settings.sizes {
        let peaks: Vec<f64> = peak_rss_values(&results.throughput, items);
        let cell = summarize(&peaks).map_or_else(
            || "not measured".to_owned(),
            |summary| format_range(scale(summary, 1.0 / 1024.0), 1),
        );
        let queries: Vec<f64> = results
            .throughput
            .iter()
            .filter(|record| record.runner == Runner::Ours && record.items == items)
            .map(|record| record.counts.query as f64)
            .collect();
        let keys_per_page = summarize(&queries)
            .filter(|queries| queries.median > 0.0)
            .map_or_else(
                || "not measured".to_owned(),
                |queries| thousands(items as f64 / queries.median),
            );
        let _ = writeln!(
            page,
            "| {} | {cell} | {keys_per_page} |",
            thousands(items as f64)
        );
    }
    page.push('\n');
}

fn write_requests(page: &mut String, settings: &Settings, results: &Results) {
    let _ = write!(
        page,
        "## Requests per run\n\nRequests that passed the proxy during one run, median (min–max where \
         the repeats differ). A deletion of N items needs ceil(N/{BATCH_SIZE}) BatchWriteItem calls \
         unless DynamoDB returns unprocessed items. The naive loop batches each Query page on its \
         own, so each page but the last can add one partial batch.\n\n"
    );
    page.push_str("| Runner | N | Query | BatchWriteItem | ceil(N/25) |\n| --- | ---: | ---: | ---: | ---: |\n");
    for runner in Runner::ALL {
        for &items in &settings.sizes {
            let records: Vec<&RunRecord> = results
                .throughput
                .iter()
                .filter(|record| record.runner == runner && record.items == items)
                .collect();
            let queries: Vec<f64> = records
                .iter()
                .map(|record| record.counts.query as f64)
                .collect();
            let batches: Vec<f64> = records
                .iter()
                .map(|record| record.counts.batch_write_item as f64)
                .collect();
            let _ = writeln!(
                page,
                "| {} | {} | {} | {} | {} |",
                runner.label(),
                thousands(items as f64),
                format_counts(&queries),
                format_counts(&batches),
                thousands(items.div_ceil(BATCH_SIZE) as f64),
            );
        }
    }
    page.push('\n');
}

fn write_sweep(page: &mut String, settings: &Settings, results: &Results) {
    let items = results.sweep_items;
    let _ = write!(
        page,
        "## Concurrency sweep\n\nOurs at N = {}, run {} with each `DELETE_CONCURRENCY`. \
         Rates that stop rising show where more calls in flight stop helping. If the rates do not \
         change at all, the binary does not use the variable.\n\n",
        thousands(items as f64),
        times(settings.repeats)
    );
    page.push_str("| DELETE_CONCURRENCY | Items/s | Seconds (median) | Speed-up over 1 |\n| ---: | ---: | ---: | ---: |\n");
    let rate_at = |concurrency: usize| {
        let rates: Vec<f64> = results
            .sweep
            .iter()
            .filter(|record| record.concurrency == Some(concurrency))
            .map(RunRecord::items_per_second)
            .collect();
        summarize(&rates)
    };
    let baseline = rate_at(1);
    for concurrency in crate::settings::SWEEP_CONCURRENCIES {
        let Some(summary) = rate_at(concurrency) else {
            continue;
        };
        let seconds: Vec<f64> = results
            .sweep
            .iter()
            .filter(|record| record.concurrency == Some(concurrency))
            .map(|record| record.measurement.seconds)
            .collect();
        let median_seconds = summarize(&seconds).map_or(0.0, |seconds| seconds.median);
        let speed_up = baseline.map_or_else(
            || "not measured".to_owned(),
            |baseline| format!("{:.2}×", summary.median / baseline.median),
        );
        let _ = writeln!(
            page,
            "| {concurrency} | {} | {median_seconds:.3} | {speed_up} |",
            format_range(summary, 0)
        );
    }
    page.push('\n');
}

fn write_cold_start(page: &mut String, cold_starts: &ColdStarts) {
    let _ = write!(
        page,
        "## Cold start\n\nA fresh process with the event already queued, {COLD_START_REPEATS} starts \
         of each function, alternating. Milliseconds after the spawn: (a) to the first \
         `GET /runtime/invocation/next`, the end of init, and (b) to the first posted response, \
         which deletes a user's {COLD_START_ITEMS} items. The Python handler is \
         `bench/python/bench_handler.py` under `python -m awslambdaric`, with the boto3 resource \
         made at import. Median (min–max).\n\n"
    );
    page.push_str("| Function | (a) spawn to first request | (b) spawn to first response |\n| --- | ---: | ---: |\n");
    for (name, samples) in [
        ("ours (Rust bootstrap)", &cold_starts.rust),
        ("Python (awslambdaric + boto3)", &cold_starts.python),
    ] {
        let _ = writeln!(
            page,
            "| {name} | {} | {} |",
            cold_start_cell(samples, |sample| sample.to_first_next_ms),
            cold_start_cell(samples, |sample| sample.to_response_ms),
        );
    }
    page.push('\n');
}

fn write_targets(page: &mut String, settings: &Settings, results: &Results) {
    page.push_str("## Targets\n\nThe bench reports these and does not fail on them.\n\n");
    page.push_str("| Target | Measured | Result |\n| --- | --- | --- |\n");
    let targets = [
        floor_target(settings, results),
        boto3_target(settings, results),
        memory_target(settings, results),
        cold_start_target(&results.cold_starts),
        cold_start_ratio_target(&results.cold_starts),
    ];
    for (target, measured, met) in targets {
        let result = match met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "not measured",
        };
        let _ = writeln!(page, "| {target} | {measured} | {result} |");
    }
    page.push('\n');
    page.push_str(
        "What limits the two hardest targets, by construction of the runs:\n\n\
         - The floor sends no Query. The function cannot start a delete before its first Query \
         page arrives, so that page's time is added to every run and weighs most at the smallest \
         N. Later pages are fetched while deletes run, but dynalite serves every request on one \
         Node.js thread, so each page's server time still competes with the deletes.\n\
         - The function parses one Query page at a time, while the keys of the page before it \
         wait as plain strings. The AWS SDK parses each key into its own map, so the peak RSS \
         follows the keys per page in the memory table: it rises until a partition fills a whole \
         1 MB page and stays flat after that.\n\n",
    );
}

fn write_warnings(page: &mut String, results: &Results) {
    page.push_str("## Count checks\n\n");
    if results.warnings.is_empty() {
        page.push_str(
            "Every run deleted all N items with ceil(N/25) BatchWriteItem requests (the naive loop \
             with at most one more per extra page), the floor sent no Query, and the function's log \
             line agreed with the proxy's counts.\n",
        );
        return;
    }
    page.push_str("These runs sent other requests than expected:\n\n");
    for warning in &results.warnings {
        let _ = writeln!(page, "- {warning}");
    }
}

/// A target row: description, measured value and whether it was met.
type TargetRow = (String, String, Option<bool>);

fn floor_target(settings: &Settings, results: &Results) -> TargetRow {
    let ratios: Vec<(usize, f64)> = settings
        .sizes
        .iter()
        .filter_map(|&items| ratio(results, items, Runner::Floor).map(|ratio| (items, ratio)))
        .collect();
    let measured = list_ratios(&ratios);
    let met = (!ratios.is_empty()).then(|| ratios.iter().all(|(_, ratio)| *ratio >= 0.9));
    ("ours ≥ 0.9 × floor at every N".to_owned(), measured, met)
}

fn boto3_target(settings: &Settings, results: &Results) -> TargetRow {
    let ratios: Vec<(usize, f64)> = settings
        .sizes
        .iter()
        .filter(|&&items| items >= 10_000)
        .filter_map(|&items| ratio(results, items, Runner::Boto3).map(|ratio| (items, ratio)))
        .collect();
    let measured = if ratios.is_empty() {
        "no size of 10,000 or more".to_owned()
    } else {
        list_ratios(&ratios)
    };
    let met = (!ratios.is_empty()).then(|| ratios.iter().all(|(_, ratio)| *ratio >= 3.0));
    ("ours ≥ 3 × boto3 at N ≥ 10,000".to_owned(), measured, met)
}

fn memory_target(settings: &Settings, results: &Results) -> TargetRow {
    let target = "peak RSS of ours at the largest N within 10% of the smallest N, and under 40 MB \
                  (highest of the repeats)"
        .to_owned();
    let smallest = settings.sizes.iter().min().copied();
    let largest = settings.sizes.iter().max().copied();
    let highest = |items: usize| {
        peak_rss_values(&results.throughput, items)
            .into_iter()
            .reduce(f64::max)
    };
    let (Some(smallest), Some(largest)) = (smallest, largest) else {
        return (target, "no sizes".to_owned(), None);
    };
    let (Some(small_peak), Some(large_peak)) = (highest(smallest), highest(largest)) else {
        return (target, "not measured".to_owned(), None);
    };

    let growth = large_peak / small_peak - 1.0;
    let measured = format!(
        "{:.1} MiB at N = {}, {:.1} MiB at N = {} ({:+.1}%); 40 MB is {:.1} MiB",
        small_peak / 1024.0,
        thousands(smallest as f64),
        large_peak / 1024.0,
        thousands(largest as f64),
        growth * 100.0,
        RSS_LIMIT_KIB / 1024.0
    );
    (
        target,
        measured,
        Some(growth <= 0.10 && large_peak < RSS_LIMIT_KIB),
    )
}

fn cold_start_target(cold_starts: &ColdStarts) -> TargetRow {
    let target = "cold start of ours to its first request under 50 ms (median of (a))".to_owned();
    match first_next_summary(&cold_starts.rust) {
        Some(summary) => (
            target,
            format!("{:.1} ms", summary.median),
            Some(summary.median < 50.0),
        ),
        None => (target, "not measured".to_owned(), None),
    }
}

fn cold_start_ratio_target(cold_starts: &ColdStarts) -> TargetRow {
    let target =
        "cold start of ours to its first request ≥ 5 × faster than the Python handler's (medians of (a))"
            .to_owned();
    match (
        first_next_summary(&cold_starts.rust),
        first_next_summary(&cold_starts.python),
    ) {
        (Some(rust), Some(python)) => {
            let speed_up = python.median / rust.median;
            (
                target,
                format!(
                    "{:.1} ms against {:.1} ms: {speed_up:.1}×",
                    rust.median, python.median
                ),
                Some(speed_up >= 5.0),
            )
        }
        _ => (target, "not measured".to_owned(), None),
    }
}

fn first_next_summary(samples: &[ColdStart]) -> Option<Summary> {
    let values: Vec<f64> = samples
        .iter()
        .map(|sample| sample.to_first_next_ms)
        .collect();
    summarize(&values)
}

fn cold_start_cell(samples: &[ColdStart], value: impl Fn(&ColdStart) -> f64) -> String {
    let values: Vec<f64> = samples.iter().map(value).collect();
    summarize(&values).map_or_else(
        || "not measured".to_owned(),
        |summary| format_range(summary, 1),
    )
}

fn runner_name(runner: Runner, settings: &Settings) -> String {
    match runner {
        Runner::Ours => format!("ours (`DELETE_CONCURRENCY={}`)", settings.concurrency),
        Runner::Naive => "naive sequential Rust".to_owned(),
        Runner::Boto3 => "boto3 `batch_writer`".to_owned(),
        Runner::Floor => format!("floor ({} in flight, no Query)", settings.concurrency),
    }
}

fn rates(results: &Results, runner: Runner, items: usize) -> Option<Summary> {
    let rates: Vec<f64> = results
        .throughput
        .iter()
        .filter(|record| record.runner == runner && record.items == items)
        .map(RunRecord::items_per_second)
        .collect();
    summarize(&rates)
}

fn ratio(results: &Results, items: usize, other: Runner) -> Option<f64> {
    let ours = rates(results, Runner::Ours, items)?;
    let other = rates(results, other, items)?;
    Some(ours.median / other.median)
}

fn peak_rss_values(records: &[RunRecord], items: usize) -> Vec<f64> {
    records
        .iter()
        .filter(|record| record.runner == Runner::Ours && record.items == items)
        .filter_map(|record| record.measurement.peak_rss_kib)
        .map(|kib| kib as f64)
        .collect()
}

fn list_ratios(ratios: &[(usize, f64)]) -> String {
    if ratios.is_empty() {
        return "not measured".to_owned();
    }
    ratios
        .iter()
        .map(|(items, ratio)| format!("{ratio:.2}× at N = {}", thousands(*items as f64)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_size_header(page: &mut String, first_column: &str, sizes: &[usize]) {
    let _ = write!(page, "| {first_column} |");
    for &items in sizes {
        let _ = write!(page, " N = {} |", thousands(items as f64));
    }
    page.push_str("\n| --- |");
    for _ in sizes {
        page.push_str(" ---: |");
    }
    page.push('\n');
}

fn scale(summary: Summary, factor: f64) -> Summary {
    Summary {
        median: summary.median * factor,
        min: summary.min * factor,
        max: summary.max * factor,
    }
}

/// Formats `median (min–max)`, with `decimals` digits after the point.
fn format_range(summary: Summary, decimals: usize) -> String {
    let format = |value: f64| {
        if decimals == 0 {
            thousands(value)
        } else {
            format!("{value:.decimals$}")
        }
    };
    format!(
        "{} ({}–{})",
        format(summary.median),
        format(summary.min),
        format(summary.max)
    )
}

/// Formats request counts: one number when every repeat sent the same, else the median and range.
fn format_counts(values: &[f64]) -> String {
    match summarize(values) {
        None => "not measured".to_owned(),
        Some(summary) if summary.min == summary.max => thousands(summary.median),
        Some(summary) => format_range(summary, 0),
    }
}

/// Returns "once" or "<count> times".
fn times(count: usize) -> String {
    if count == 1 {
        "once".to_owned()
    } else {
        format!("{count} times")
    }
}

/// Rounds to a whole number and groups the digits in thousands: 12345.6 becomes "12,346".
fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if rounded < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }

    #[test]
    fn counts_collapse_when_equal() {
        assert_eq!(format_counts(&[40.0, 40.0, 40.0]), "40");
        assert_eq!(format_counts(&[40.0, 41.0, 40.0]), "40 (40–41)");
    }
}
