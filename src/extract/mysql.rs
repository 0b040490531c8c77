//! MySQL / MariaDB source (see `docs/databases.md`).

use tokio::sync::mpsc;

use super::{Chunk, Item};
use crate::error::{Error, Result};
use crate::pipeline::spec::DbSourceConfig;

/// An open MySQL source.
pub struct MySession {
    /// Work items.
    pub items: Vec<Item>,
}

impl MySession {
    /// Open.
    ///
    /// # Errors
    /// Always, for now.
    pub async fn open(_cfg: &DbSourceConfig) -> Result<MySession> {
        Err(Error::config("mysql source: not implemented yet"))
    }
    /// Description.
    pub fn describe(&self) -> String {
        "mysql".into()
    }
    /// Start an item.
    pub fn start(&self, _item: Item, _tx: mpsc::Sender<Result<Chunk>>) {}
}
