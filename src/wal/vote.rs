//! The vote file: raft's "who did I vote for in which term", which must be durable
//! before the vote is sent. Small, rewritten whole, separate from the log so saving it
//! never waits behind a batch of appends.

use std::io;
use std::path::Path;

use super::error::{WalError, WalResult};
use super::format::{VoteFile, MAX_VOTE_LEN, VOTE_FILE, VOTE_TMP_FILE};
use super::io::{read_to_end, write_all, WalIo};

/// Saves `vote` atomically: write `vote.tmp`, fsync it, rename it over `vote`, fsync
/// the directory. A crash at any point leaves the old vote or the new one, never a mix.
pub(super) fn save_vote(io: &dyn WalIo, dir: &Path, vote: &[u8]) -> WalResult<()> {
    if vote.len() > MAX_VOTE_LEN {
        return Err(WalError::RecordTooLarge {
            len: vote.len(),
            max: MAX_VOTE_LEN,
        });
    }
    let tmp = dir.join(VOTE_TMP_FILE);
    let path = dir.join(VOTE_FILE);
    remove_if_exists(io, &tmp)?;
    let file = io
        .create(&tmp)
        .map_err(|e| WalError::io("create", &tmp, e))?;
    write_all(file.as_ref(), &VoteFile::encode(vote))
        .map_err(|e| WalError::io("write", &tmp, e))?;
    file.sync().map_err(|e| WalError::io("fsync", &tmp, e))?;
    drop(file);
    io.rename(&tmp, &path)
        .map_err(|e| WalError::io("rename", &tmp, e))?;
    io.sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))
}

/// The saved vote, `None` if none was ever saved. A damaged vote file is an error, not
/// `None`: forgetting a vote could let this node vote twice in one term.
pub(super) fn read_vote(io: &dyn WalIo, dir: &Path) -> WalResult<Option<Vec<u8>>> {
    let path = dir.join(VOTE_FILE);
    let file = match io.open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WalError::io("open", &path, e)),
    };
    let bytes = read_to_end(file.as_ref()).map_err(|e| WalError::io("read", &path, e))?;
    match VoteFile::decode(&bytes) {
        Ok(vote) => Ok(Some(vote.to_vec())),
        Err((offset, kind)) => Err(WalError::Corrupt {
            file: path,
            offset,
            kind,
        }),
    }
}

/// Removes `path` if it is there (a temp file left by a crash).
pub(super) fn remove_if_exists(io: &dyn WalIo, path: &Path) -> WalResult<()> {
    match io.remove(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WalError::io("remove", path, e)),
    }
}
