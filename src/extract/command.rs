//! Command source: a program's standard output, stored as a stream of chunk entries.
//!
//! The program runs with an argument list (no shell unless `shell = true`, then
//! `/bin/sh -c <script>`), standard input closed. Its output is read in blocks and cut
//! into tar entries of `chunk_size` bytes (tar needs each entry's size up front and the
//! output's length is unknown, so memory holds one chunk, never the whole output);
//! concatenating the chunks in order gives the output back. Standard error is drained
//! concurrently (so the program never blocks on a full pipe) and its last 64 KiB are kept
//! for the manifest and for the error message.
//!
//! A non-zero exit or a timeout (the program is killed) fails the partition, so the run
//! commits nothing: no snapshot ever claims a truncated dump. Command failures are not
//! retried: running e.g. a dump twice is not obviously harmless.

use std::process::Stdio;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{Chunk, Done, Item, ItemKind};
use crate::error::{Error, ErrorKind, Result};
use crate::extract::config::CommandSourceConfig;

/// Standard error kept, at most.
pub const STDERR_KEEP: usize = 64 << 10;

/// A planned command run.
pub struct CommandSession {
    cfg: CommandSourceConfig,
    /// The single work item.
    pub items: Vec<Item>,
}

impl CommandSession {
    /// Plan one item for `cfg`.
    pub fn new(cfg: &CommandSourceConfig) -> Self {
        let program = if cfg.shell {
            "sh".to_string()
        } else {
            cfg.argv.first().cloned().unwrap_or_default()
        };
        Self {
            cfg: cfg.clone(),
            items: vec![Item {
                kind: ItemKind::Command {
                    name: cfg.name.clone(),
                    program,
                },
                range: 0,
                bounds: None,
                base: format!("command/{}/part", cfg.name),
                ext: "out",
                chunk_size: cfg.chunk_size,
            }],
        }
    }

    /// `command:<program>` (arguments left out: they may hold secrets).
    pub fn describe(&self) -> String {
        match self.items[0].kind {
            ItemKind::Command { ref program, .. } => format!("command:{program}"),
            _ => "command".into(),
        }
    }

    /// Spawn the command and its reader.
    pub fn start(&self, _item: Item, tx: mpsc::Sender<Result<Chunk>>) {
        let cfg = self.cfg.clone();
        tokio::spawn(async move {
            if let Err(e) = run(&cfg, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
}

/// Keep the last [`STDERR_KEEP`] bytes of a stream.
async fn tail(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut keep = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                keep.extend_from_slice(&buf[..n]);
                if keep.len() > 2 * STDERR_KEEP {
                    keep.drain(..keep.len() - STDERR_KEEP);
                }
            }
        }
    }
    if keep.len() > STDERR_KEEP {
        keep.drain(..keep.len() - STDERR_KEEP);
    }
    keep
}

async fn run(cfg: &CommandSourceConfig, tx: &mpsc::Sender<Result<Chunk>>) -> Result<()> {
    let mut cmd = if cfg.shell {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(&cfg.argv[0]);
        c
    } else {
        let mut c = tokio::process::Command::new(&cfg.argv[0]);
        c.args(&cfg.argv[1..]);
        c
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let program = if cfg.shell {
        "sh"
    } else {
        cfg.argv[0].as_str()
    };
    let mut child = cmd.spawn().map_err(|e| {
        Error::caused(
            ErrorKind::Source,
            format!("cannot start command {program:?}"),
            e,
        )
    })?;
    let stderr = child.stderr.take().map(|s| tokio::spawn(tail(s)));
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::internal("no stdout pipe"))?;
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    let work = async {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| Error::io(ErrorKind::Source, "reading the command's output", e))?;
            if n == 0 {
                break;
            }
            if tx
                .send(Ok(Chunk::Data(Bytes::copy_from_slice(&buf[..n]))))
                .await
                .is_err()
            {
                return Ok(None); // packer gone; kill_on_drop ends the child
            }
        }
        child
            .wait()
            .await
            .map(Some)
            .map_err(|e| Error::io(ErrorKind::Source, "waiting for the command", e))
    };
    let status = match tokio::time::timeout_at(deadline, work).await {
        Ok(r) => r?,
        Err(_) => {
            let _ = child.kill().await;
            let err = match stderr {
                Some(h) => String::from_utf8_lossy(&h.await.unwrap_or_default()).into_owned(),
                None => String::new(),
            };
            return Err(Error::new(
                ErrorKind::Source,
                format!(
                    "command {program:?} timed out after {:?} and was killed{}",
                    cfg.timeout,
                    stderr_note(&err)
                ),
            ));
        }
    };
    let Some(status) = status else { return Ok(()) };
    let err = match stderr {
        Some(h) => String::from_utf8_lossy(&h.await.unwrap_or_default()).into_owned(),
        None => String::new(),
    };
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".into(),
        };
        return Err(Error::new(
            ErrorKind::Source,
            format!("command {program:?} {how}{}", stderr_note(&err)),
        ));
    }
    let _ = tx
        .send(Ok(Chunk::Done(Done {
            exit_code: 0,
            stderr: err,
        })))
        .await;
    Ok(())
}

fn stderr_note(err: &str) -> String {
    let t = err.trim();
    if t.is_empty() {
        String::new()
    } else {
        // The message carries the end of stderr; the whole tail is in the error record.
        let start = t
            .char_indices()
            .rev()
            .nth(2000)
            .map(|(i, _)| i)
            .unwrap_or(0);
        format!("; stderr: {}", &t[start..])
    }
}
