//! Work queues: the transport of a scale-out run's partitions (`blobpipe plan` puts,
//! `blobpipe work` receives, renews, deletes or dead-letters).
//!
//! [`WorkQueue`] is the few operations of an Azure Storage queue the protocol needs, with
//! three implementations so that one protocol runs everywhere:
//!
//! - the Azure Storage queue ([`super::azure::queue::AzureWorkQueue`]: `https://…` or the
//!   emulator's `http://127.0.0.1:…/devstoreaccount1/<queue>`), dead letters going to
//!   `<queue>-poison`;
//! - [`FileQueue`] (`file:///dir` or an absolute path): one file per message in a
//!   directory any process on the machine (or an NFS/Azure Files mount) can share; the
//!   message's state (dequeue count, invisible-until time, pop receipt) is its file name,
//!   and every change of state is one atomic `rename`, so two receivers racing for one
//!   message cannot both get it. Dead letters go to `<dir>/poison/`;
//! - [`MemoryQueue`], for unit tests and the protocol benchmark.
//!
//! Semantics are the Azure queue's: a received message is invisible for the visibility
//! timeout, reappears when it expires (its receiver died), carries a dequeue count that
//! every receive increments, and is deleted with the pop receipt of its latest receive or
//! visibility update — a stale receipt (someone else received it since) fails with
//! `NotFound`. Messages are not ordered strictly (Azure's are not either).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::support::ids;

/// Largest message text the Azure service takes (64 KiB, as stored); the others accept
/// the same, so a protocol tested on one holds on all.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// Message id.
    pub id: String,
    /// Pop receipt (needed to delete or update it; changes on every update).
    pub pop_receipt: String,
    /// How many times the message has been received, this time included.
    pub dequeue_count: u32,
    /// The message text as stored.
    pub text: String,
}

/// A queue of text messages with visibility timeouts, dequeue counts and a dead-letter
/// queue beside it.
#[async_trait]
pub trait WorkQueue: Send + Sync + fmt::Debug {
    /// Printable address (no secret).
    fn display(&self) -> String;

    /// Put `text` (at most [`MAX_MESSAGE`] bytes) on the queue.
    ///
    /// # Errors
    /// `Refused` for a text that is too long; service, network or I/O errors.
    async fn put(&self, text: &str) -> Result<()>;

    /// Receive at most one visible message, invisible to others for `visibility`.
    ///
    /// # Errors
    /// Service, network or I/O errors.
    async fn receive(&self, visibility: Duration) -> Result<Option<Received>>;

    /// Make `m` invisible for `visibility` from now (0: visible again now). Returns the
    /// new pop receipt.
    ///
    /// # Errors
    /// `NotFound` when the receipt is stale (the message reappeared and was received by
    /// someone else, or was deleted); service, network or I/O errors.
    async fn set_visibility(&self, m: &Received, visibility: Duration) -> Result<String>;

    /// Delete `m` (already gone is fine).
    ///
    /// # Errors
    /// Service, network or I/O errors.
    async fn delete(&self, m: &Received) -> Result<()>;

    /// Move `m` to the dead-letter queue: put its text there, then delete it here.
    ///
    /// # Errors
    /// Service, network or I/O errors (the message stays where it was).
    async fn dead_letter(&self, m: &Received) -> Result<()>;
}

/// Open the queue `url` names: `file:///dir` or an absolute path (a [`FileQueue`]), or an
/// Azure Storage queue URL. Makes no network call.
///
/// # Errors
/// `Config` for an address of neither form, a queue name too long for its dead-letter
/// queue, or no usable credential.
pub fn open(url: &str) -> Result<Arc<dyn WorkQueue>> {
    let raw = url.trim();
    if let Some(path) = raw.strip_prefix("file://") {
        return Ok(Arc::new(FileQueue::open(Path::new(path))?));
    }
    if raw.starts_with('/') {
        return Ok(Arc::new(FileQueue::open(Path::new(raw))?));
    }
    Ok(Arc::new(super::azure::queue::AzureWorkQueue::open(raw)?))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn too_long(text: &str) -> Result<()> {
    if text.len() > MAX_MESSAGE {
        return Err(Error::refused(format!(
            "queue message of {} bytes (at most {MAX_MESSAGE})",
            text.len()
        )));
    }
    Ok(())
}

/// A queue in a directory: one file per message, its state in its name.
///
/// `<id>.<dequeue count>.<invisible until, ms since the epoch>.<receipt>.msg`; a put writes
/// `.tmp-…` and renames it in, so a receiver never sees half a message. Receiving renames
/// a visible message to its next state; of two racing renames one finds the source gone
/// and moves on. Memory and time per receive are bounded by the directory read up to the
/// first visible message, not by the queue's length.
#[derive(Debug, Clone)]
pub struct FileQueue {
    dir: PathBuf,
}

struct FileName {
    id: String,
    count: u32,
    until: u64,
}

impl FileName {
    fn parse(name: &str) -> Option<FileName> {
        let rest = name.strip_suffix(".msg")?;
        let mut it = rest.split('.');
        let id = it.next()?.to_string();
        let count = it.next()?.parse().ok()?;
        let until = it.next()?.parse().ok()?;
        let _receipt = it.next()?;
        it.next().is_none().then_some(FileName { id, count, until })
    }
    fn name(id: &str, count: u32, until: u64) -> String {
        format!("{id}.{count}.{until}.{}.msg", ids::random_hex(4))
    }
}

impl FileQueue {
    /// The queue in `dir` (created if missing).
    ///
    /// # Errors
    /// `Config` when the directory cannot be created.
    pub fn open(dir: &Path) -> Result<FileQueue> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::config(format!("queue directory {}: {e}", dir.display())))?;
        Ok(FileQueue {
            dir: dir.to_path_buf(),
        })
    }

    /// The dead-letter queue beside it.
    ///
    /// # Errors
    /// As [`FileQueue::open`].
    pub fn poison(&self) -> Result<FileQueue> {
        FileQueue::open(&self.dir.join("poison"))
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(
            ErrorKind::Store,
            format!("queue {}: {what}", self.dir.display()),
            e,
        )
    }

    fn put_sync(&self, text: &str) -> Result<()> {
        too_long(text)?;
        // Time first, so a directory read meets older messages first more often.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = format!("{nanos:020}-{}", ids::random_hex(4));
        let tmp = self.dir.join(format!(".tmp-{id}"));
        std::fs::write(&tmp, text).map_err(|e| self.io("writing a message", e))?;
        std::fs::rename(&tmp, self.dir.join(FileName::name(&id, 0, 0)))
            .map_err(|e| self.io("putting a message", e))
    }

    fn receive_sync(&self, visibility: Duration) -> Result<Option<Received>> {
        let now = now_ms();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| self.io("listing", e))?;
        for ent in rd {
            let ent = ent.map_err(|e| self.io("listing", e))?;
            let name = ent.file_name();
            let Some(f) = name.to_str().and_then(FileName::parse) else {
                continue;
            };
            if f.until > now {
                continue;
            }
            let next = FileName::name(&f.id, f.count + 1, now + visibility.as_millis() as u64);
            match std::fs::rename(ent.path(), self.dir.join(&next)) {
                Ok(()) => {}
                // Another receiver took it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("receiving", e)),
            }
            let text = std::fs::read_to_string(self.dir.join(&next))
                .map_err(|e| self.io("reading a message", e))?;
            return Ok(Some(Received {
                id: f.id,
                pop_receipt: next,
                dequeue_count: f.count + 1,
                text,
            }));
        }
        Ok(None)
    }

    fn set_visibility_sync(&self, m: &Received, visibility: Duration) -> Result<String> {
        let f = FileName::parse(&m.pop_receipt)
            .ok_or_else(|| Error::internal(format!("bad pop receipt {:?}", m.pop_receipt)))?;
        let next = FileName::name(&f.id, f.count, now_ms() + visibility.as_millis() as u64);
        match std::fs::rename(self.dir.join(&m.pop_receipt), self.dir.join(&next)) {
            Ok(()) => Ok(next),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::not_found(format!(
                "queue message {}: the pop receipt is stale (received again elsewhere, or deleted)",
                m.id
            ))),
            Err(e) => Err(self.io("updating a message", e)),
        }
    }

    fn delete_sync(&self, m: &Received) -> Result<()> {
        match std::fs::remove_file(self.dir.join(&m.pop_receipt)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("deleting a message", e)),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("queue task: {e}")))?
}

#[async_trait]
impl WorkQueue for FileQueue {
    fn display(&self) -> String {
        format!("file://{}", self.dir.display())
    }
    async fn put(&self, text: &str) -> Result<()> {
        let (q, t) = (self.clone(), text.to_string());
        blocking(move || q.put_sync(&t)).await
    }
    async fn receive(&self, visibility: Duration) -> Result<Option<Received>> {
        let q = self.clone();
        blocking(move || q.receive_sync(visibility)).await
    }
    async fn set_visibility(&self, m: &Received, visibility: Duration) -> Result<String> {
        let (q, m) = (self.clone(), m.clone());
        blocking(move || q.set_visibility_sync(&m, visibility)).await
    }
    async fn delete(&self, m: &Received) -> Result<()> {
        let (q, m) = (self.clone(), m.clone());
        blocking(move || q.delete_sync(&m)).await
    }
    async fn dead_letter(&self, m: &Received) -> Result<()> {
        self.poison()?.put(&m.text).await?;
        self.delete(m).await
    }
}

/// A queue in memory (unit tests, the protocol benchmark): the same semantics, one
/// process.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<MemState>,
    /// Dead letters, as texts.
    pub poison: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct MemState {
    next: u64,
    messages: Vec<MemMessage>,
}

#[derive(Debug)]
struct MemMessage {
    id: u64,
    text: String,
    count: u32,
    until: u64,
    receipt: String,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Arc<MemoryQueue> {
        Arc::new(MemoryQueue::default())
    }

    /// Messages on the queue, visible or not.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.messages.len()).unwrap_or(0)
    }

    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn poisoned() -> Error {
    Error::internal("memory queue lock poisoned")
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    fn display(&self) -> String {
        "memory".into()
    }
    async fn put(&self, text: &str) -> Result<()> {
        too_long(text)?;
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.next += 1;
        let id = s.next;
        s.messages.push(MemMessage {
            id,
            text: text.to_string(),
            count: 0,
            until: 0,
            receipt: String::new(),
        });
        Ok(())
    }
    async fn receive(&self, visibility: Duration) -> Result<Option<Received>> {
        let now = now_ms();
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        let Some(m) = s.messages.iter_mut().find(|m| m.until <= now) else {
            return Ok(None);
        };
        m.count += 1;
        m.until = now + visibility.as_millis() as u64;
        m.receipt = ids::random_hex(6);
        Ok(Some(Received {
            id: m.id.to_string(),
            pop_receipt: m.receipt.clone(),
            dequeue_count: m.count,
            text: m.text.clone(),
        }))
    }
    async fn set_visibility(&self, r: &Received, visibility: Duration) -> Result<String> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        let m = s
            .messages
            .iter_mut()
            .find(|m| m.id.to_string() == r.id && m.receipt == r.pop_receipt)
            .ok_or_else(|| Error::not_found(format!("queue message {}: stale receipt", r.id)))?;
        m.until = now_ms() + visibility.as_millis() as u64;
        m.receipt = ids::random_hex(6);
        Ok(m.receipt.clone())
    }
    async fn delete(&self, r: &Received) -> Result<()> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        s.messages
            .retain(|m| !(m.id.to_string() == r.id && m.receipt == r.pop_receipt));
        Ok(())
    }
    async fn dead_letter(&self, r: &Received) -> Result<()> {
        self.poison
            .lock()
            .map_err(|_| poisoned())?
            .push(r.text.clone());
        self.delete(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The semantics every implementation shares: one receiver per visible message, a
    /// dequeue count, stale receipts refused, reappearance after the timeout.
    async fn conformance(q: &dyn WorkQueue) {
        q.put("one").await.unwrap();
        let a = q.receive(Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!((a.text.as_str(), a.dequeue_count), ("one", 1));
        assert!(q.receive(Duration::from_secs(60)).await.unwrap().is_none());
        let r = q.set_visibility(&a, Duration::ZERO).await.unwrap();
        assert!(
            q.set_visibility(&a, Duration::ZERO).await.is_err(),
            "stale receipt"
        );
        let b = q.receive(Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(b.dequeue_count, 2);
        assert_ne!(b.pop_receipt, r);
        q.dead_letter(&b).await.unwrap();
        assert!(q.receive(Duration::ZERO).await.unwrap().is_none());
        assert!(q.put(&"x".repeat(MAX_MESSAGE + 1)).await.is_err());
    }

    #[tokio::test]
    async fn file_queue_behaves_like_a_queue() {
        let t = std::env::temp_dir().join(format!("bpq-{}", ids::random_hex(6)));
        let q = FileQueue::open(&t).unwrap();
        conformance(&q).await;
        let poison = q.poison().unwrap();
        let m = poison.receive(Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(m.text, "one");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[tokio::test]
    async fn memory_queue_behaves_like_a_queue() {
        let q = MemoryQueue::new();
        conformance(&*q).await;
        assert_eq!(q.poison.lock().unwrap().as_slice(), ["one"]);
    }

    #[tokio::test]
    async fn racing_receivers_never_share_a_file_message() {
        let t = std::env::temp_dir().join(format!("bpq-{}", ids::random_hex(6)));
        let q = FileQueue::open(&t).unwrap();
        for i in 0..40 {
            q.put(&i.to_string()).await.unwrap();
        }
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(m) = q.receive(Duration::from_secs(60)).await.unwrap() {
                    got.push(m.text);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        assert_eq!(all.len(), 40, "every message received once");
        all.dedup();
        assert_eq!(all.len(), 40, "no message received twice");
        std::fs::remove_dir_all(&t).unwrap();
    }
}
