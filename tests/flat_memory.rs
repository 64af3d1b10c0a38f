//! The deletion's heap stays flat as the number of items grows: keys are
//! streamed from Query pages to batches, never all collected first.
//!
//! This binary contains one test, because its allocator counts the heap of the
//! whole process and another test running beside it would add to the count.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::Client;
use delete_learning_user::store::{self, DeletionScope};
use support::*;

/// The system allocator, counting the bytes live now and at the peak.
struct PeakCounting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

fn record_growth(bytes: usize) {
    let live = LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for PeakCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            record_growth(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            record_growth(new_size);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: PeakCounting = PeakCounting;

/// Seeds `count` learnings of about 300 bytes for user-a, and a neighbour's.
async fn seeded_table(client: &Client, count: usize) -> String {
    let table = unique_table_name("flat");
    create_table(client, &table).await;
    let sort_keys: Vec<String> = (0..count)
        .map(|index| format!("user_memory#{index:06}"))
        .collect();
    let mut keys: Vec<(&str, &str)> = sort_keys
        .iter()
        .map(|sort_key| ("user-a", sort_key.as_str()))
        .collect();
    keys.push(("user-b", "user_memory#000001"));
    put_learnings(client, &table, &keys, 250).await;
    table
}

/// Deletes user-a's learnings and returns the heap's peak growth during the deletion.
async fn peak_heap_growth(client: &Client, table: &str, expected: u64) -> usize {
    let baseline = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(baseline, Ordering::Relaxed);

    let report = store::delete_learnings(
        client,
        DeletionScope {
            table,
            user_id: "user-a",
            learning_type: None,
        },
        &fast_deletion(),
        None,
    )
    .await
    .unwrap();

    let growth = PEAK_BYTES.load(Ordering::Relaxed) - baseline;
    assert_eq!(report.deleted, expected);
    growth
}

#[tokio::test]
async fn heap_stays_flat_as_items_grow() {
    let client = dynamodb_client();
    // 8,000 items of about 300 bytes span three 1 MB Query pages, 32,000 span eleven.
    let smaller = seeded_table(&client, 8_000).await;
    let larger = seeded_table(&client, 32_000).await;
    let warm_up = seeded_table(&client, 100).await;
    // The first deletion opens connections and fills the SDK's caches, which
    // would count against whichever size ran first.
    peak_heap_growth(&client, &warm_up, 100).await;

    let smaller_peak = peak_heap_growth(&client, &smaller, 8_000).await;
    let larger_peak = peak_heap_growth(&client, &larger, 32_000).await;

    eprintln!("peak heap growth: {smaller_peak} bytes at 8,000 items, {larger_peak} at 32,000");
    // Collecting every key first would need about four times as much.
    assert!(
        larger_peak <= smaller_peak + smaller_peak / 10,
        "the heap grew with the item count: {smaller_peak} bytes at 8,000 items, {larger_peak} at 32,000"
    );
    let remaining = snapshot(&client, &larger).await;
    assert_eq!(sort_keys_of(&remaining, "user-a"), Vec::<String>::new());
    assert_eq!(sort_keys_of(&remaining, "user-b").len(), 1);
}
