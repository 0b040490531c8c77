//! The upload pool: sealed blocks → bounded channel → uploader tasks staging them with MD5.
//!
//! Partition workers send blocks through [`ChannelSink`], which blocks when the channel
//! is full (backpressure: at most `channel_capacity` blocks wait, and each uploader holds
//! one). Every block gets a one-shot acknowledgement; a pack closes only after all its
//! blocks are acknowledged, and a failed upload surfaces at the next block the pack
//! sends. Blocks the store already holds uncommitted for a pack (an earlier attempt of
//! the run staged them) are not sent again.
//!
//! The pool shuts down by dropping the senders: the uploaders drain the channel and end.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use super::report::Stats;
use crate::error::{Error, Result, ResultExt};
use crate::pack::packer::SinkFactory;
use crate::pack::writer::{BlockSink, SealedBlock};
use crate::store::Store;
use crate::support::cancel::Cancel;
use crate::support::progress::Counters;

/// One block to stage, and where to report the outcome.
pub(super) struct UploadJob {
    blob: String,
    block: SealedBlock,
    done: oneshot::Sender<Result<()>>,
}

/// The sending side of the pool; makes one [`ChannelSink`] per pack.
#[derive(Clone)]
pub(super) struct Uploads {
    tx: mpsc::Sender<UploadJob>,
    stats: Arc<Stats>,
    cancel: Cancel,
}

/// Start `concurrency` uploaders behind a channel of `capacity` blocks.
///
/// The uploaders end when every [`Uploads`] handle (and every sink made from it) is
/// dropped and the channel is drained; await the returned handles then.
pub(super) fn start(
    store: &Store,
    capacity: usize,
    concurrency: usize,
    stats: &Arc<Stats>,
    counters: &Arc<Counters>,
    cancel: &Cancel,
) -> (Uploads, Vec<JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<UploadJob>(capacity);
    let rx = Arc::new(Mutex::new(rx));
    let mut uploaders = Vec::new();
    for _ in 0..concurrency {
        let rx = rx.clone();
        let store = store.clone();
        let stats = stats.clone();
        let counters = counters.clone();
        let cancel = cancel.clone();
        uploaders.push(tokio::spawn(async move {
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let len = job.block.data.len() as u64;
                let r = if cancel.is_cancelled() {
                    Err(Error::cancelled())
                } else {
                    store
                        .stage_block(&job.blob, &job.block.id, job.block.data, job.block.md5)
                        .await
                        .ctx(format!("staging block {} of {}", job.block.index, job.blob))
                };
                stats.inflight_blocks.fetch_sub(1, Ordering::SeqCst);
                if r.is_ok() {
                    stats.blocks_staged.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_transferred.fetch_add(len, Ordering::Relaxed);
                }
                let _ = job.done.send(r);
            }
        }));
    }
    let uploads = Uploads {
        tx,
        stats: stats.clone(),
        cancel: cancel.clone(),
    };
    (uploads, uploaders)
}

impl SinkFactory for Uploads {
    type Sink = ChannelSink;

    fn sink(&self, blob: &str, already: HashSet<String>) -> ChannelSink {
        ChannelSink {
            blob: blob.to_string(),
            tx: self.tx.clone(),
            acks: Vec::new(),
            already,
            stats: self.stats.clone(),
            cancel: self.cancel.clone(),
        }
    }
}

/// Sends sealed blocks to the uploaders, skipping blocks already staged.
pub(super) struct ChannelSink {
    blob: String,
    tx: mpsc::Sender<UploadJob>,
    acks: Vec<oneshot::Receiver<Result<()>>>,
    already: HashSet<String>,
    stats: Arc<Stats>,
    cancel: Cancel,
}

impl BlockSink for ChannelSink {
    fn send(&mut self, block: SealedBlock) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        // Forget finished uploads; surface a failed one now, not at the end of the pack.
        let mut failed = None;
        self.acks.retain_mut(|a| match a.try_recv() {
            Ok(Ok(())) => false,
            Ok(Err(e)) => {
                failed.get_or_insert(e);
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => {
                failed.get_or_insert(Error::cancelled());
                false
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if self.already.contains(&block.id) {
            self.stats.blocks_reused.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let n = self.stats.inflight_blocks.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats
            .max_inflight_blocks
            .fetch_max(n, Ordering::SeqCst);
        let (done, rx) = oneshot::channel();
        self.acks.push(rx);
        self.tx
            .blocking_send(UploadJob {
                blob: self.blob.clone(),
                block,
                done,
            })
            .map_err(|_| {
                self.stats.inflight_blocks.fetch_sub(1, Ordering::SeqCst);
                Error::cancelled()
            })
    }

    fn drain(&mut self) -> Result<()> {
        for a in self.acks.drain(..) {
            a.blocking_recv().map_err(|_| Error::cancelled())??;
        }
        Ok(())
    }
}
