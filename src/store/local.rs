//! Local directory store (placeholder, being written).

use std::path::Path;

/// A store in a local directory.
#[derive(Debug)]
pub struct LocalStore;

impl LocalStore {
    /// Open (creating) a store rooted at `dir`.
    ///
    /// # Errors
    /// `Store` if the directory cannot be created.
    pub fn open(_dir: &Path) -> crate::Result<Self> {
        Err(crate::Error::internal("local store not written yet"))
    }
}
