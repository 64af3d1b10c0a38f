//! Sequential Rust, the straightforward way to write the deletion: one Query
//! page, then its batches of 25 one after another, then the next page.

use std::time::Instant;

use super::{Measurement, RunnerContext};
use crate::BenchResult;
use crate::dataset::BENCH_USER;
use crate::dynamodb::{self, BATCH_SIZE};

/// Deletes the bench user's items with one call in flight at a time.
///
/// The client is built before the timer starts, as a warm Lambda would have it.
pub async fn run(context: &RunnerContext) -> BenchResult<Measurement> {
    let client = dynamodb::client_for(&context.endpoint);
    let started = Instant::now();

    let mut deleted = 0;
    let mut start_key = None;
    loop {
        let page =
            dynamodb::query_key_page(&client, &context.table, BENCH_USER, start_key.take()).await?;

        let mut requests = Vec::with_capacity(page.items().len());
        for item in page.items() {
            requests.push(dynamodb::delete_request(dynamodb::key_of(item)?)?);
        }
        for batch in requests.chunks(BATCH_SIZE) {
            dynamodb::write_batch(&client, &context.table, batch.to_vec()).await?;
            deleted += batch.len() as u64;
        }

        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start_key = Some(key),
            _ => break,
        }
    }

    Ok(Measurement {
        seconds: started.elapsed().as_secs_f64(),
        deleted,
        peak_rss_kib: None,
        logged_calls: None,
    })
}
