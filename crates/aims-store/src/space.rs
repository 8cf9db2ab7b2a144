//! The free-space guard of a SQLite store: writes are refused while the volume holding the
//! database has less room than the configured reserve, so neither the data nor the audit log
//! can be what fills the disk, and the database never meets the wall mid-transaction in
//! normal operation.
//!
//! It asks the kernel (`statvfs`, a few microseconds) before every write; nothing is cached,
//! so it reacts to space freed or consumed by anyone at once.

use std::path::{Path, PathBuf};

use crate::StoreError;

/// Refuses writes below a reserve of free bytes on one directory's volume.
#[derive(Debug, Clone)]
pub(crate) struct SpaceGuard {
    dir: PathBuf,
    reserve_bytes: u64,
}

impl SpaceGuard {
    /// Guards the volume of `database` (its directory) with `reserve_bytes`; 0 never refuses.
    pub(crate) fn new(database: &Path, reserve_bytes: u64) -> Self {
        let dir = match database.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        Self { dir, reserve_bytes }
    }

    /// `Ok` while at least the reserve is free. A volume that cannot be measured is refused
    /// too (fail closed).
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.reserve_bytes == 0 {
            return Ok(());
        }
        let free_bytes = free_bytes(&self.dir)?;
        if free_bytes < self.reserve_bytes {
            return Err(StoreError::LowSpace {
                free_bytes,
                reserve_bytes: self.reserve_bytes,
            });
        }
        Ok(())
    }
}

/// Bytes available to unprivileged writers on the volume holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, StoreError> {
    let stats = rustix::fs::statvfs(dir).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot measure free space of {}: {e}",
            dir.display()
        ))
    })?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reserve_never_refuses() {
        let guard = SpaceGuard::new(Path::new("/nonexistent/aims.db"), 0);
        assert!(guard.check().is_ok());
    }

    #[test]
    fn an_impossible_reserve_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let guard = SpaceGuard::new(&dir.path().join("aims.db"), u64::MAX);
        assert!(matches!(
            guard.check(),
            Err(StoreError::LowSpace {
                reserve_bytes: u64::MAX,
                ..
            })
        ));
        assert!(
            SpaceGuard::new(&dir.path().join("aims.db"), 1)
                .check()
                .is_ok()
        );
    }

    #[test]
    fn an_unmeasurable_volume_is_refused() {
        let guard = SpaceGuard::new(Path::new("/nonexistent/dir/aims.db"), 1);
        assert!(matches!(guard.check(), Err(StoreError::Unavailable(_))));
    }
}
