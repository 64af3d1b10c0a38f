//! The floor: the same BatchWriteItem calls as a deletion needs, prebuilt from
//! the seeded keys and sent with a fixed number in flight, without any Query.
//! A deletion with as many calls in flight sends the same calls plus its
//! Queries, so it should not finish faster.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::task::JoinSet;

use super::{Measurement, RunnerContext};
use crate::BenchResult;
use crate::dataset::{self, BENCH_USER};
use crate::dynamodb::{self, BATCH_SIZE};

/// Deletes the bench user's `items` items, known in advance, with
/// `context.concurrency` BatchWriteItem calls in flight.
pub async fn run(context: &RunnerContext, items: usize) -> BenchResult<Measurement> {
    let client = dynamodb::client_for(&context.endpoint);

    // The requests are built before the timer starts: the floor measures the calls alone.
    let mut batches = Vec::new();
    for chunk in dataset::sort_keys(items).chunks(BATCH_SIZE) {
        let mut batch = Vec::with_capacity(chunk.len());
        for sort_key in chunk {
            batch.push(dynamodb::delete_request(dynamodb::key(
                BENCH_USER, sort_key,
            ))?);
        }
        batches.push(batch);
    }
    let queue = Arc::new(Mutex::new(batches));

    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..context.concurrency {
        let queue = queue.clone();
        let client = client.clone();
        let table = context.table.clone();
        workers.spawn(async move {
            let mut deleted = 0_u64;
            while let Some(batch) = dataset::next_batch(&queue) {
                let size = batch.len() as u64;
                dynamodb::write_batch(&client, &table, batch).await?;
                deleted += size;
            }
            BenchResult::Ok(deleted)
        });
    }

    let mut deleted = 0;
    while let Some(joined) = workers.join_next().await {
        deleted += joined.map_err(|error| format!("a floor worker failed: {error}"))??;
    }

    Ok(Measurement {
        seconds: started.elapsed().as_secs_f64(),
        deleted,
        peak_rss_kib: None,
        logged_calls: None,
    })
}
