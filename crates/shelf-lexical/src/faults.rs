//! The index's tantivy directory, which fault-injection tests can make fail its next
//! commits as a full or failing disk would.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{DirectoryLock, FileHandle, Lock, WatchCallback, WatchHandle, WritePtr};
use tantivy::Directory;

/// The file whose write completes a tantivy commit.
const META_FILE: &str = "meta.json";

/// Another directory (on disk or in memory) whose next `n` writes of `meta.json`, each the
/// last step of a commit, fail with an I/O error when armed.
#[derive(Clone, Debug)]
pub(crate) struct FaultableDirectory {
    inner: Box<dyn Directory>,
    failing_commits: Arc<AtomicU32>,
}

impl FaultableDirectory {
    pub(crate) fn new(inner: impl Directory) -> Self {
        Self {
            inner: Box::new(inner),
            failing_commits: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The switch: how many of the next commits fail.
    pub(crate) fn failing_commits(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.failing_commits)
    }

    fn take_failure(&self) -> bool {
        self.failing_commits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl Directory for FaultableDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.inner.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        self.inner.open_write(path)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if path == Path::new(META_FILE) && self.take_failure() {
            return Err(io::Error::other(format!(
                "{META_FILE} not written (fault injected)"
            )));
        }
        self.inner.atomic_write(path, data)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}
