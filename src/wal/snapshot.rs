//! The snapshot container: durable files holding a blob the caller serialized (the
//! engine's state, later) and the last log index it includes.
//!
//! A snapshot is written to a temp file, fsynced, renamed into place and the directory
//! fsynced, so a crash leaves either no new snapshot or a whole one. Only then may the
//! caller `purge` the log up to its index. Older snapshots are kept (two by default) so
//! that a snapshot damaged on disk still leaves a valid one to fall back to, provided
//! the log has not been purged past it; the caller decides how far to purge.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::error::{WalError, WalResult};
use super::format::{
    parse_snapshot_file_name, snapshot_file_name, Corruption, SnapshotHeader, SNAPSHOT_HEADER_LEN,
};
use super::io::{read_to_end, write_all, FsIo, WalIo};
use super::vote::remove_if_exists;

/// A snapshot read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Last log index the snapshot includes.
    pub last_index: u64,
    /// The bytes given to [`SnapshotStore::save`].
    pub data: Vec<u8>,
}

/// Where a snapshot was saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last log index the snapshot includes.
    pub last_index: u64,
    /// Length of the data.
    pub len: u64,
    /// The file.
    pub path: PathBuf,
}

/// A directory of snapshots.
#[derive(Debug)]
pub struct SnapshotStore {
    io: Arc<dyn WalIo>,
    dir: PathBuf,
    retain: usize,
}

impl SnapshotStore {
    /// Opens (creating if needed) a snapshot directory on the real file system.
    pub fn open(dir: impl Into<PathBuf>) -> WalResult<SnapshotStore> {
        SnapshotStore::open_with_io(dir, Arc::new(FsIo::new()))
    }

    /// Opens a snapshot directory through `io`; removes temp files a crash left behind.
    pub fn open_with_io(dir: impl Into<PathBuf>, io: Arc<dyn WalIo>) -> WalResult<SnapshotStore> {
        let dir = dir.into();
        io.create_dir_all(&dir)
            .map_err(|e| WalError::io("create directory", &dir, e))?;
        let names = io.list(&dir).map_err(|e| WalError::io("list", &dir, e))?;
        let mut removed = false;
        for name in names {
            if name.starts_with("snap-") && name.ends_with(".tmp") {
                remove_if_exists(io.as_ref(), &dir.join(&name))?;
                removed = true;
            }
        }
        if removed {
            io.sync_dir(&dir)
                .map_err(|e| WalError::io("fsync directory", &dir, e))?;
        }
        Ok(SnapshotStore { io, dir, retain: 2 })
    }

    /// Opens a snapshot directory on the real file system only to read it: nothing is
    /// created or removed, so a server may be using the directory meanwhile (`turnstile
    /// audit`). Reading works as usual; do not save through it.
    pub fn open_read_only(dir: impl Into<PathBuf>) -> SnapshotStore {
        SnapshotStore {
            io: Arc::new(FsIo::new()),
            dir: dir.into(),
            retain: usize::MAX,
        }
    }

    /// Keeps the newest `retain` snapshots (at least one) after each save.
    pub fn with_retain(mut self, retain: usize) -> SnapshotStore {
        self.retain = retain.max(1);
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves a snapshot that includes the log up to `last_index`, durably, then deletes
    /// snapshots beyond the newest `retain`. A snapshot with the same index is replaced.
    pub fn save(&self, last_index: u64, data: &[u8]) -> WalResult<SnapshotMeta> {
        let path = self.dir.join(snapshot_file_name(last_index));
        let tmp = self
            .dir
            .join(format!("{}.tmp", snapshot_file_name(last_index)));
        remove_if_exists(self.io.as_ref(), &tmp)?;
        let file = self
            .io
            .create(&tmp)
            .map_err(|e| WalError::io("create", &tmp, e))?;
        let header = SnapshotHeader {
            last_index,
            len: data.len() as u64,
            data_crc: crc32c::crc32c(data),
        };
        write_all(file.as_ref(), &header.encode()).map_err(|e| WalError::io("write", &tmp, e))?;
        write_all(file.as_ref(), data).map_err(|e| WalError::io("write", &tmp, e))?;
        file.sync().map_err(|e| WalError::io("fsync", &tmp, e))?;
        drop(file);
        self.io
            .rename(&tmp, &path)
            .map_err(|e| WalError::io("rename", &tmp, e))?;
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| WalError::io("fsync directory", &self.dir, e))?;
        info!(file = %path.display(), last_index, bytes = data.len(), "snapshot saved");
        self.prune()?;
        Ok(SnapshotMeta {
            last_index,
            len: data.len() as u64,
            path,
        })
    }

    /// The snapshot files present, oldest first (by name; not validated).
    pub fn list(&self) -> WalResult<Vec<SnapshotMeta>> {
        let names = self
            .io
            .list(&self.dir)
            .map_err(|e| WalError::io("list", &self.dir, e))?;
        let mut found: Vec<(u64, String)> = names
            .into_iter()
            .filter_map(|n| parse_snapshot_file_name(&n).map(|i| (i, n)))
            .collect();
        found.sort();
        Ok(found
            .into_iter()
            .map(|(last_index, name)| SnapshotMeta {
                last_index,
                len: 0,
                path: self.dir.join(name),
            })
            .collect())
    }

    /// The newest snapshot that reads back whole. A damaged newer one is skipped with a
    /// warning naming the file and offset; I/O errors are returned.
    pub fn load_latest(&self) -> WalResult<Option<Snapshot>> {
        for meta in self.list()?.into_iter().rev() {
            match self.load(&meta.path, meta.last_index)? {
                Ok(snapshot) => return Ok(Some(snapshot)),
                Err((offset, kind)) => warn!(
                    file = %meta.path.display(),
                    offset,
                    reason = %kind,
                    "skipping a damaged snapshot; trying an older one",
                ),
            }
        }
        Ok(None)
    }

    /// Reads and checks one snapshot file.
    fn load(&self, path: &Path, name_index: u64) -> WalResult<Result<Snapshot, (u64, Corruption)>> {
        let file = self
            .io
            .open(path)
            .map_err(|e| WalError::io("open", path, e))?;
        let bytes = read_to_end(file.as_ref()).map_err(|e| WalError::io("read", path, e))?;
        let header = match SnapshotHeader::decode(&bytes) {
            Ok(h) => h,
            Err(kind) => return Ok(Err((0, kind))),
        };
        if header.last_index != name_index {
            return Ok(Err((
                16,
                Corruption::NameMismatch {
                    name: name_index,
                    header: header.last_index,
                },
            )));
        }
        let body = (bytes.len() - SNAPSHOT_HEADER_LEN) as u64;
        if header.len != body {
            return Ok(Err((
                24,
                Corruption::LengthMismatch {
                    header: header.len,
                    file: body,
                },
            )));
        }
        let mut data = bytes;
        data.drain(..SNAPSHOT_HEADER_LEN);
        let computed = crc32c::crc32c(&data);
        if computed != header.data_crc {
            return Ok(Err((
                SNAPSHOT_HEADER_LEN as u64,
                Corruption::BadCrc {
                    stored: header.data_crc,
                    computed,
                },
            )));
        }
        Ok(Ok(Snapshot {
            last_index: header.last_index,
            data,
        }))
    }

    /// Deletes all but the newest `retain` snapshots.
    fn prune(&self) -> WalResult<()> {
        let all = self.list()?;
        if all.len() <= self.retain {
            return Ok(());
        }
        for old in &all[..all.len() - self.retain] {
            remove_if_exists(self.io.as_ref(), &old.path)?;
        }
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| WalError::io("fsync directory", &self.dir, e))
    }
}
