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
// Placeholder impl so the crate builds until the real store lands.
#[async_trait::async_trait]
impl super::BlobStore for LocalStore {
    fn describe(&self) -> String {
        unimplemented!()
    }
    async fn stage_block(
        &self,
        _: &str,
        _: &str,
        _: bytes::Bytes,
        _: [u8; 16],
    ) -> crate::Result<()> {
        unimplemented!()
    }
    async fn commit_blocks(
        &self,
        _: &str,
        _: &[String],
        _: &super::CommitOptions,
    ) -> crate::Result<()> {
        unimplemented!()
    }
    async fn put(&self, _: &str, _: bytes::Bytes, _: bool) -> crate::Result<super::PutOutcome> {
        unimplemented!()
    }
    async fn get(&self, _: &str, _: Option<std::ops::Range<u64>>) -> crate::Result<bytes::Bytes> {
        unimplemented!()
    }
    async fn head(&self, _: &str) -> crate::Result<Option<super::BlobProps>> {
        unimplemented!()
    }
    async fn list(&self, _: &str, _: Option<String>, _: usize) -> crate::Result<super::ListPage> {
        unimplemented!()
    }
    async fn delete(&self, _: &str) -> crate::Result<bool> {
        unimplemented!()
    }
    async fn set_tier(&self, _: &str, _: super::Tier) -> crate::Result<()> {
        unimplemented!()
    }
    async fn block_list(&self, _: &str) -> crate::Result<super::BlockList> {
        unimplemented!()
    }
    async fn acquire_lease(
        &self,
        _: &str,
        _: std::time::Duration,
        _: &str,
    ) -> crate::Result<super::Lease> {
        unimplemented!()
    }
    async fn renew_lease(&self, _: &super::Lease) -> crate::Result<()> {
        unimplemented!()
    }
    async fn release_lease(&self, _: &super::Lease) -> crate::Result<()> {
        unimplemented!()
    }
}
