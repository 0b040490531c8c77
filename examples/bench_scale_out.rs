//! The scale-out protocol at 10^4 partitions, simulated in one process (issue 13): the
//! memory store, the in-memory queue, and many lightweight workers (`work` loops), so the
//! figures are the protocol's own costs — coordinator, queue operations, commit path —
//! not the network's or the disk's.
//!
//! ```text
//! bench_scale_out [FILES] [WORKERS]     default 10000 files (≈ one partition each), 32 workers
//! ```
//!
//! Prints a markdown table: coordinator time (walk + one put per partition + the planned
//! record) and per 1,000 partitions, worker time, queue operations per partition, and the
//! finalizer's commit path (read every part record, merge, manifest, metadata verify,
//! run record) with its throughput in partitions per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blobpipe::pipeline::scale::{self, FinalizeOutcome, WorkOptions};
use blobpipe::pipeline::Pipeline;
use blobpipe::store::queue::{MemoryQueue, WorkQueue};
use blobpipe::support::cancel::Cancel;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    blobpipe::support::http::ensure_tls_provider();
    let mut args = std::env::args().skip(1);
    let files: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let dir = std::env::temp_dir().join(format!(
        "bench-scale-out-{}",
        blobpipe::support::ids::random_hex(4)
    ));
    let src = dir.join("src");
    // Files of 60 KiB against partitions of 64 KiB: about one partition per file.
    let body = "0123456789abcdef".repeat(60 * 64);
    for i in 0..files {
        let d = src.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&d).expect("dir");
        }
        std::fs::write(d.join(format!("f{i:06}")), &body).expect("file");
    }
    let pf = dir.join("bench.toml");
    std::fs::write(
        &pf,
        format!(
            "name = \"bench\"\n[source]\ntype = \"fs\"\nroot = \"{}\"\n[target]\nurl = \"memory://bench-{}\"\n\
             [partitions]\nsize = \"64KiB\"\nmax_entries = 16\n[verify]\nmode = \"metadata\"\n",
            src.display(),
            blobpipe::support::ids::random_hex(4)
        ),
    )
    .expect("pipeline");
    let p = Pipeline::load(&pf).expect("load");
    let store = blobpipe::store::open(&p.target, &p.retry)
        .await
        .expect("store");
    let queue = MemoryQueue::new();
    let q: Arc<dyn WorkQueue> = queue.clone();
    let cancel = Cancel::new();

    let t = Instant::now();
    let c = scale::plan_run(
        &p,
        store.clone(),
        Some("bench-1".into()),
        false,
        false,
        &*q,
        &cancel,
    )
    .await
    .expect("plan");
    let coordinate = t.elapsed();

    let opts = WorkOptions {
        run_id: Some("bench-1".into()),
        visibility: Duration::from_secs(60),
        retry_delay: Duration::from_secs(1),
        max_dequeue: 5,
        poll: Duration::from_millis(50),
        finalize: false,
        parallel: workers,
        plan_wait: Duration::from_secs(60),
        cancel: cancel.clone(),
    };
    let t = Instant::now();
    let w = scale::work(std::slice::from_ref(&p), q.clone(), &opts)
        .await
        .expect("work");
    let work = t.elapsed();

    let t = Instant::now();
    let repo = blobpipe::manifest::layout::Repo::new(store.clone(), &p.target.prefix);
    let f = scale::finalize_run(&p, &repo, "bench-1", &Default::default(), &cancel, None)
        .await
        .expect("finalize");
    let finalize = t.elapsed();
    let FinalizeOutcome::Committed { report } = f else {
        panic!("not committed: {f:?}");
    };
    assert_eq!(report.totals.files as usize, files);
    let n = c.partitions as f64;
    // Coordinator puts + worker receives, renewals, deletes (and idle polls).
    let ops = c.enqueued as f64 + w.queue_ops as f64;
    println!("| what | value |");
    println!("|---|---|");
    println!("| files / partitions | {files} / {} |", c.partitions);
    println!("| lightweight workers (work loops) | {workers} |");
    println!(
        "| coordinator: walk + enqueue + planned record | {:.2} s ({:.0} ms per 1,000 partitions) |",
        coordinate.as_secs_f64(),
        coordinate.as_secs_f64() * 1000.0 / n * 1000.0
    );
    println!(
        "| workers: pack + part records | {:.2} s ({:.0} partitions/s) |",
        work.as_secs_f64(),
        n / work.as_secs_f64()
    );
    println!(
        "| queue operations | {ops:.0} ({:.2} per partition; {} idle receives included) |",
        ops / n,
        w.queue_ops.saturating_sub(2 * w.processed)
    );
    println!(
        "| finalizer: read {} part records, merge, manifest, metadata verify, run record | {:.2} s ({:.0} partitions/s) |",
        c.partitions,
        finalize.as_secs_f64(),
        n / finalize.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(queue.is_empty());
}
