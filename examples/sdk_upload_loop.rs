//! The ceiling for `scripts/bench-azure`: a bare loop of the same Azure calls blobpipe's
//! store makes, with no engine around them (no tar, no compression, no partitions, no
//! manifest), run on **blobpipe's own pack bytes** (the pack files of a `file://` backup of
//! the same corpus with the same pipeline settings).
//!
//! ```text
//! sdk_upload_loop upload   <container-url> <concurrency> <block-bytes> <root>
//! sdk_upload_loop download <container-url> <concurrency> <block-bytes> [prefix]
//! ```
//!
//! `upload` uploads every regular file under `<root>` (sorted, depth first, dot entries
//! skipped) as its own blob, named by its path relative to `<root>`: each file is cut into
//! blocks, each block MD5'd and staged with its transactional MD5 (Put Block); the block
//! uploads of all files share one pool of `concurrency` in flight (as blobpipe's
//! `upload.concurrency` uploaders share one channel), and each blob's Put Block List is
//! sent as soon as its last block is staged — one per pack, as blobpipe does.
//!
//! `download` lists the blobs under `prefix` and reads every one back in ranged GETs of
//! `block-bytes`, `concurrency` at a time, MD5s each range (as `verify --full` MD5-checks
//! every block) and discards the bytes.
//!
//! Each prints one JSON line: blobs, bytes, seconds, MiB/s, requests, retries.
//!
//! Calls go through `blobpipe::store::azure::AzureStore`, which is one SDK call per
//! operation (`stage_block`, `commit_block_list`, `download` with a range, `list`), so
//! the client configuration (transport, retry policy, SAS signing) is exactly blobpipe's.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use blobpipe::store::azure::{AzureOptions, AzureStore};
use blobpipe::store::{BlobStore, CommitOptions};
use blobpipe::support::secret::Secret;
use bytes::Bytes;
use futures::StreamExt;

fn files_under(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(p)?;
    if md.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        names.retain(|n| {
            !n.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with('.'))
        });
        names.sort();
        for n in names {
            files_under(&n, out)?;
        }
    } else if md.is_file() && md.len() > 0 {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// One block of one file: (file index, block index, bytes, md5).
type Job = (usize, usize, Bytes, [u8; 16]);

/// Reads the files one after the other and sends their blocks into `tx`.
fn reader(
    files: Vec<PathBuf>,
    block: usize,
    tx: tokio::sync::mpsc::Sender<Job>,
) -> std::io::Result<()> {
    for (fi, f) in files.iter().enumerate() {
        let mut file = std::fs::File::open(f)?;
        let mut bi = 0;
        loop {
            let mut buf = vec![0u8; block];
            let mut len = 0;
            while len < block {
                let n = file.read(&mut buf[len..])?;
                if n == 0 {
                    break;
                }
                len += n;
            }
            if len == 0 {
                break;
            }
            buf.truncate(len);
            let data = Bytes::from(buf);
            let md5 = blobpipe::store::md5(&data);
            if tx.blocking_send((fi, bi, data, md5)).is_err() {
                return Ok(());
            }
            bi += 1;
            if len < block {
                break;
            }
        }
    }
    Ok(())
}

fn block_id(i: usize) -> String {
    blobpipe::store::b64(format!("{i:016}").as_bytes())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    blobpipe::support::http::ensure_tls_provider();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 || (args[1] == "upload" && args.len() < 6) {
        eprintln!(
            "usage: sdk_upload_loop upload <container-url> <concurrency> <block-bytes> <root>\n       \
             sdk_upload_loop download <container-url> <concurrency> <block-bytes> [prefix]"
        );
        std::process::exit(2);
    }
    let (mode, url) = (&args[1], &args[2]);
    let concurrency: usize = args[3].parse()?;
    let block: usize = args[4].parse()?;
    let store = Arc::new(AzureStore::open(
        &Secret::new(url.clone()),
        "bench",
        &AzureOptions::default(),
        &blobpipe::store::azure::credential::process_env,
    )?);
    store.ensure_container().await?;
    let started = Instant::now();
    let (blobs, bytes, requests) = match mode.as_str() {
        "upload" => {
            let root = PathBuf::from(&args[5]);
            let mut files = Vec::new();
            files_under(&root, &mut files)?;
            let mut names = Vec::with_capacity(files.len());
            let mut blocks_of = Vec::with_capacity(files.len());
            for f in &files {
                let rel = f.strip_prefix(&root)?.to_string_lossy().replace('\\', "/");
                names.push(rel);
                let len = std::fs::metadata(f)?.len() as usize;
                blocks_of.push(len.div_ceil(block));
            }
            let names = Arc::new(names);
            let (tx, rx) = tokio::sync::mpsc::channel(concurrency);
            let read = std::thread::spawn(move || reader(files, block, tx));
            let mut staged = tokio_stream(rx)
                .map(|(fi, bi, data, md5): Job| {
                    let (store, names) = (store.clone(), names.clone());
                    async move {
                        let n = data.len();
                        store
                            .stage_block(&names[fi], &block_id(bi), data, md5)
                            .await?;
                        Ok::<_, blobpipe::Error>((fi, n))
                    }
                })
                .buffer_unordered(concurrency)
                .boxed();
            let mut left: HashMap<usize, usize> = HashMap::new();
            let mut commits = Vec::new();
            let (mut bytes, mut requests) = (0u64, 0usize);
            while let Some(r) = staged.next().await {
                let (fi, n) = r?;
                bytes += n as u64;
                requests += 1;
                let l = left.entry(fi).or_insert(blocks_of[fi]);
                *l -= 1;
                if *l == 0 {
                    let (store, names) = (store.clone(), names.clone());
                    let ids: Vec<String> = (0..blocks_of[fi]).map(block_id).collect();
                    commits.push(tokio::spawn(async move {
                        store
                            .commit_blocks(&names[fi], &ids, &CommitOptions::default())
                            .await
                    }));
                }
            }
            read.join().map_err(|_| "reader panicked")??;
            for c in commits {
                c.await??;
                requests += 1;
            }
            (names.len(), bytes, requests)
        }
        "download" => {
            let prefix = args.get(5).map(String::as_str).unwrap_or("");
            let items = blobpipe::store::list_all(&*store, prefix).await?;
            let mut ranges = Vec::new();
            for it in &items {
                for a in (0..it.size).step_by(block) {
                    ranges.push((it.name.clone(), a..(a + block as u64).min(it.size)));
                }
            }
            let n = ranges.len();
            let size: u64 = items.iter().map(|i| i.size).sum();
            let got: Vec<Result<usize, blobpipe::Error>> = futures::stream::iter(ranges)
                .map(|(blob, r)| {
                    let store = store.clone();
                    async move {
                        let data = store.get(&blob, Some(r)).await?;
                        std::hint::black_box(blobpipe::store::md5(&data));
                        Ok(data.len())
                    }
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
            (items.len(), total, n + 1)
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"mode\":\"{mode}\",\"blobs\":{blobs},\"bytes\":{bytes},\"seconds\":{secs:.3},\"mib_s\":{:.1},\"requests\":{requests},\"retries\":{}}}",
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
