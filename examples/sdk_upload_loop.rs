//! The ceiling for `scripts/bench-azure`: a bare loop of the same Azure calls blobpipe's
//! store makes, with no engine around them (no tar, no compression, no partitions, no
//! manifest).
//!
//! ```text
//! sdk_upload_loop upload   <container-url> <blob> <concurrency> <block-bytes> <path>...
//! sdk_upload_loop download <container-url> <blob> <concurrency> <block-bytes>
//! ```
//!
//! `upload` reads every file under the paths (sorted, depth first) as one byte stream, cuts
//! it into blocks, MD5s each block and stages it with its transactional MD5 (Put Block),
//! `concurrency` at a time, then commits the block list (Put Block List). `download`
//! reads the blob back in ranged GETs of `block-bytes`, `concurrency` at a time, and
//! discards the bytes. Each prints one JSON line: bytes, seconds, MiB/s, requests.
//!
//! Calls go through `blobpipe::store::azure::AzureStore`, which is one SDK call per
//! operation (`stage_block`, `commit_block_list`, `download` with a range), so the client
//! configuration (transport, retry policy, SAS signing) is exactly blobpipe's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use blobpipe::secret::Secret;
use blobpipe::store::azure::{AzureOptions, AzureStore};
use blobpipe::store::{BlobStore, CommitOptions};
use bytes::Bytes;
use futures::StreamExt;

fn files_under(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(p)?;
    if md.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            files_under(&n, out)?;
        }
    } else if md.is_file() {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// Reads the files as one stream and sends (index, block, md5) into `tx`.
fn reader(
    files: Vec<PathBuf>,
    block: usize,
    tx: tokio::sync::mpsc::Sender<(usize, Bytes, [u8; 16])>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(block);
    let mut index = 0;
    let mut send = |buf: &mut Vec<u8>| {
        let data = Bytes::from(std::mem::replace(buf, Vec::with_capacity(block)));
        let md5 = blobpipe::store::md5(&data);
        let ok = tx.blocking_send((index, data, md5)).is_ok();
        index += 1;
        ok
    };
    for f in files {
        let mut file = std::fs::File::open(&f)?;
        loop {
            let want = block - buf.len();
            let start = buf.len();
            buf.resize(block, 0);
            let n = file.read(&mut buf[start..start + want])?;
            buf.truncate(start + n);
            if n == 0 {
                break;
            }
            if buf.len() == block && !send(&mut buf) {
                return Ok(());
            }
        }
    }
    if !buf.is_empty() {
        send(&mut buf);
    }
    Ok(())
}

fn block_id(i: usize) -> String {
    blobpipe::store::b64(format!("{i:016}").as_bytes())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    blobpipe::store::azure::client::ensure_tls_provider();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: sdk_upload_loop upload|download <container-url> <blob> <concurrency> <block-bytes> [path...]");
        std::process::exit(2);
    }
    let (mode, url, blob) = (&args[1], &args[2], args[3].clone());
    let concurrency: usize = args[4].parse()?;
    let block: usize = args[5].parse()?;
    let store = Arc::new(AzureStore::open(
        &Secret::new(url.clone()),
        "bench",
        &AzureOptions::default(),
        &blobpipe::store::azure::credential::process_env,
    )?);
    store.ensure_container().await?;
    let started = Instant::now();
    let (bytes, requests) = match mode.as_str() {
        "upload" => {
            let mut files = Vec::new();
            for p in &args[6..] {
                files_under(Path::new(p), &mut files)?;
            }
            let (tx, rx) = tokio::sync::mpsc::channel(concurrency);
            let read = std::thread::spawn(move || reader(files, block, tx));
            let rx = tokio_stream(rx);
            let results: Vec<Result<(usize, usize), blobpipe::Error>> = rx
                .map(|(i, data, md5): (usize, Bytes, [u8; 16])| {
                    let (store, blob) = (store.clone(), blob.clone());
                    async move {
                        let n = data.len();
                        store.stage_block(&blob, &block_id(i), data, md5).await?;
                        Ok((i, n))
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            read.join().map_err(|_| "reader panicked")??;
            let mut done = Vec::with_capacity(results.len());
            for r in results {
                done.push(r?);
            }
            done.sort_unstable();
            let ids: Vec<String> = done.iter().map(|(i, _)| block_id(*i)).collect();
            store
                .commit_blocks(&blob, &ids, &CommitOptions::default())
                .await?;
            (
                done.iter().map(|(_, n)| *n as u64).sum::<u64>(),
                done.len() + 1,
            )
        }
        "download" => {
            let size = store.head(&blob).await?.ok_or("no such blob")?.size;
            let ranges: Vec<_> = (0..size)
                .step_by(block)
                .map(|a| a..(a + block as u64).min(size))
                .collect();
            let n = ranges.len();
            let got: Vec<Result<usize, blobpipe::Error>> = futures::stream::iter(ranges)
                .map(|r| {
                    let (store, blob) = (store.clone(), blob.clone());
                    async move { Ok(store.get(&blob, Some(r)).await?.len()) }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            let mut total = 0u64;
            for g in got {
                total += g? as u64;
            }
            if total != size {
                return Err(format!("read {total} of {size} bytes").into());
            }
            (total, n + 1)
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"mode\":\"{mode}\",\"bytes\":{bytes},\"seconds\":{secs:.3},\"mib_s\":{:.1},\"requests\":{requests},\"retries\":{}}}",
        bytes as f64 / 1048576.0 / secs,
        store.retries()
    );
    Ok(())
}

/// A receiver as a stream (no tokio-stream dependency).
fn tokio_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
