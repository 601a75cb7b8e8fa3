//! File-system access behind a small trait (STYLE habit 13), so crash and I/O-error
//! tests run the real WAL logic over a fault-injecting file system instead of mocking it.
//!
//! [`FsIo`] is the real thing: `std::fs`, `fdatasync` per file, `fsync` of the directory
//! after a file is created, renamed or removed (on Linux a new or unlinked name is not
//! durable until its directory is synced). [`FaultIo`] keeps files in memory, remembers
//! which bytes and which names have been synced, and can fail the Nth write, fail
//! fsyncs, write short, run out of space, and "crash" (forget all that was not synced).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// The errno of "no space left on device" on Linux, macOS and the BSDs. Named here
/// because `io::ErrorKind::StorageFull` is newer than the crate's minimum Rust version.
pub const ENOSPC: i32 = 28;

/// Whether `err` means the disk is full.
pub fn is_disk_full(err: &io::Error) -> bool {
    err.raw_os_error() == Some(ENOSPC)
}

/// An open file of the WAL. All methods take `&self` so one handle can be read by
/// readers while the writer thread appends to it.
pub trait WalFile: Send + Sync + fmt::Debug {
    /// Appends bytes at the end of the file. May write fewer than given, like
    /// `write(2)`; [`write_all`] loops.
    fn append(&self, buf: &[u8]) -> io::Result<usize>;
    /// Reads at `offset`; may read fewer bytes than asked, like `pread(2)`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Makes the file's data and size durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Current size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Cuts the file to `len` bytes (not durable until [`WalFile::sync`]).
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// The directory operations the WAL needs. Paths are full paths.
pub trait WalIo: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new, empty file; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file for reading and appending.
    fn open(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Removes a file (not durable until [`WalIo::sync_dir`]).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file over another, atomically (not durable until [`WalIo::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Names (not paths) of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Writes all of `buf`, looping over short writes. A write of zero bytes is an error
/// (`WriteZero`) rather than a spin.
pub fn write_all(file: &dyn WalFile, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match file.append(buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fills `buf` from `offset`, looping over short reads; `UnexpectedEof` if the file ends.
pub fn read_exact_at(file: &dyn WalFile, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a whole file into memory.
pub fn read_to_end(file: &dyn WalFile) -> io::Result<Vec<u8>> {
    let size = usize::try_from(file.size()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
    let mut buf = vec![0u8; size];
    read_exact_at(file, &mut buf, 0)?;
    Ok(buf)
}

/// Counts of the I/O calls made, for metrics and for tests that check group commit
/// (many appends, few fsyncs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// `append` calls.
    pub writes: u64,
    /// Bytes appended.
    pub bytes_written: u64,
    /// File syncs.
    pub syncs: u64,
    /// Directory syncs.
    pub dir_syncs: u64,
}

#[derive(Debug, Default)]
struct Counters {
    writes: AtomicU64,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    dir_syncs: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> IoStats {
        IoStats {
            writes: self.writes.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            dir_syncs: self.dir_syncs.load(Ordering::Relaxed),
        }
    }
}

/// The real file system.
#[derive(Debug, Default, Clone)]
pub struct FsIo {
    counters: Arc<Counters>,
}

impl FsIo {
    /// A file system handle with fresh counters.
    pub fn new() -> FsIo {
        FsIo::default()
    }

    /// The calls made so far through this handle and the files it opened.
    pub fn stats(&self) -> IoStats {
        self.counters.snapshot()
    }
}

#[derive(Debug)]
struct FsFile {
    file: File,
    counters: Arc<Counters>,
}

impl WalFile for FsFile {
    fn append(&self, buf: &[u8]) -> io::Result<usize> {
        // Opened with O_APPEND: every write lands at the current end, also after a
        // truncate, without the writer tracking a position.
        let n = (&self.file).write(buf)?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = (buf, offset);
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "positional reads",
            ))
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        // fdatasync: data and the size needed to read it back; mtime is not needed.
        self.file.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl WalIo for FsIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(FsFile {
            file,
            counters: self.counters.clone(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(Box::new(FsFile {
            file,
            counters: self.counters.clone(),
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.counters.dir_syncs.fetch_add(1, Ordering::Relaxed);
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            // Windows has no directory fsync; NTFS journals the name operations.
            let _ = dir;
            Ok(())
        }
    }
}

/// A file system in memory that fails on command and can crash, for tests (here and in
/// the later raft and server tests).
///
/// The durability model is the strict POSIX one: a file's bytes survive a crash only up
/// to its last successful `sync`; a created, renamed or removed name survives only if
/// its directory was synced afterwards. [`FaultIo::crash`] applies that model and
/// returns the handle of the "rebooted" system. Every older handle (and every file
/// opened through one) fails from then on, as the crashed process would never have run
/// again: a WAL that was running sees only errors, one reopened on the returned handle
/// sees what a real disk would have kept.
#[derive(Debug, Clone, Default)]
pub struct FaultIo {
    state: Arc<Mutex<FaultState>>,
    /// The generation this handle belongs to; see [`FaultIo::crash`].
    generation: u64,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Bumped by a crash; handles from an older generation fail.
    generation: u64,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    /// The names as the running system sees them.
    names: BTreeMap<PathBuf, u64>,
    /// The names as they were at each directory's last sync.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: std::collections::BTreeSet<PathBuf>,
    faults: Faults,
    stats: IoStats,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// True while `data` is `durable` plus appended bytes (no truncate since the last
    /// sync), so a sync can copy just the new tail and a torn crash can keep part of it.
    append_only: bool,
}

#[derive(Debug, Default)]
struct Faults {
    fail_write_at: Option<u64>,
    fail_sync_at: Option<u64>,
    fail_dir_sync_at: Option<u64>,
    fail_all_syncs: bool,
    short_writes: bool,
    space_limit: Option<u64>,
    sync_delay: Duration,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

fn crashed() -> io::Error {
    io::Error::other("file handle from before a simulated crash")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl FaultState {
    fn total_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.data.len() as u64).sum()
    }

    fn parent_is_known(&self, path: &Path) -> bool {
        path.parent().is_some_and(|p| self.dirs.contains(p))
    }
}

impl FaultIo {
    /// An empty file system with no faults armed.
    pub fn new() -> FaultIo {
        FaultIo::default()
    }

    /// Fails the `n`th `append` from now (1 = the next one) with EIO, writing nothing.
    pub fn fail_nth_write(&self, n: u64) {
        let mut s = self.state.lock();
        s.faults.fail_write_at = Some(s.stats.writes + n.max(1));
    }

    /// Fails the `n`th file sync from now (1 = the next one) with EIO.
    pub fn fail_nth_sync(&self, n: u64) {
        let mut s = self.state.lock();
        s.faults.fail_sync_at = Some(s.stats.syncs + n.max(1));
    }

    /// Fails the `n`th directory sync from now with EIO.
    pub fn fail_nth_dir_sync(&self, n: u64) {
        let mut s = self.state.lock();
        s.faults.fail_dir_sync_at = Some(s.stats.dir_syncs + n.max(1));
    }

    /// Makes every file sync fail (or stop failing).
    pub fn fail_all_syncs(&self, on: bool) {
        self.state.lock().faults.fail_all_syncs = on;
    }

    /// Makes each `append` write at most half of what it is given (at least one byte),
    /// as `write(2)` may; a correct writer loops and sees no difference.
    pub fn short_writes(&self, on: bool) {
        self.state.lock().faults.short_writes = on;
    }

    /// Caps the bytes all files may hold together; a write past it is cut short and the
    /// next one fails with ENOSPC, like a full disk.
    pub fn space_limit(&self, limit: Option<u64>) {
        self.state.lock().faults.space_limit = limit;
    }

    /// Makes each file sync sleep, standing in for a slow disk so group commit has a
    /// queue to drain.
    pub fn sync_delay(&self, delay: Duration) {
        self.state.lock().faults.sync_delay = delay;
    }

    /// Removes every armed fault.
    pub fn clear_faults(&self) {
        self.state.lock().faults = Faults::default();
    }

    /// The calls made so far.
    pub fn stats(&self) -> IoStats {
        self.state.lock().stats
    }

    /// Simulates power loss: names go back to their directories' last sync, every
    /// file's bytes to its last sync, armed faults are cleared, and every handle from
    /// before starts failing. Returns the handle to reopen with.
    #[must_use = "the old handle fails after a crash; reopen with the returned one"]
    pub fn crash(&self) -> FaultIo {
        self.crash_inner(None)
    }

    /// Like [`FaultIo::crash`], but each file that was only appended to since its last
    /// sync keeps a pseudo-random prefix of the unsynced bytes, as a disk that wrote
    /// some sectors before losing power would: a torn tail.
    #[must_use = "the old handle fails after a crash; reopen with the returned one"]
    pub fn crash_torn(&self, seed: u64) -> FaultIo {
        self.crash_inner(Some(seed))
    }

    fn crash_inner(&self, seed: Option<u64>) -> FaultIo {
        let mut s = self.state.lock();
        s.generation += 1;
        let generation = s.generation;
        s.names = s.durable_names.clone();
        let live: std::collections::HashSet<u64> = s.names.values().copied().collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        let mut rng = seed.unwrap_or(0) | 1;
        for inode in s.inodes.values_mut() {
            let mut kept = inode.durable.clone();
            if seed.is_some() && inode.append_only && inode.data.len() > kept.len() {
                // xorshift64: deterministic per seed, no dependency.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let extra = inode.data.len() - kept.len();
                let keep = (rng % (extra as u64 + 1)) as usize;
                kept.extend_from_slice(
                    &inode.data[inode.durable.len()..inode.durable.len() + keep],
                );
            }
            inode.data = kept.clone();
            inode.durable = kept;
            inode.append_only = true;
        }
        s.faults = Faults::default();
        FaultIo {
            state: self.state.clone(),
            generation,
        }
    }

    /// Locks the state for a directory operation, failing if this handle is from
    /// before a crash.
    fn live(&self) -> io::Result<parking_lot::MutexGuard<'_, FaultState>> {
        let s = self.state.lock();
        if s.generation != self.generation {
            return Err(crashed());
        }
        Ok(s)
    }

    /// Names of the files in `dir` right now.
    pub fn file_names(&self, dir: &Path) -> Vec<String> {
        let s = self.state.lock();
        s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect()
    }

    /// The current bytes of `path`, for tests that inspect or damage files.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.names.get(path)?;
        s.inodes.get(ino).map(|i| i.data.clone())
    }

    /// Flips bits in `path` at `offset`, durably (bit rot, not a torn write).
    pub fn corrupt(&self, path: &Path, offset: usize, xor: u8) {
        let mut s = self.state.lock();
        let ino = *s.names.get(path).expect("corrupt: file exists");
        let inode = s.inodes.get_mut(&ino).expect("named inode exists");
        inode.data[offset] ^= xor;
        if offset < inode.durable.len() {
            inode.durable[offset] ^= xor;
        }
    }

    /// Cuts `path` to `len` bytes, durably.
    pub fn cut(&self, path: &Path, len: usize) {
        let mut s = self.state.lock();
        let ino = *s.names.get(path).expect("cut: file exists");
        let inode = s.inodes.get_mut(&ino).expect("named inode exists");
        inode.data.truncate(len);
        inode.durable.truncate(len);
    }

    fn handle(&self, ino: u64, generation: u64) -> Box<dyn WalFile> {
        Box::new(FaultFile {
            state: self.state.clone(),
            ino,
            generation,
        })
    }
}

impl WalIo for FaultIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        for ancestor in dir.ancestors() {
            s.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let mut s = self.live()?;
        if !s.parent_is_known(path) {
            return Err(not_found(path));
        }
        if s.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let ino = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(
            ino,
            Inode {
                append_only: true,
                ..Inode::default()
            },
        );
        s.names.insert(path.to_path_buf(), ino);
        drop(s);
        Ok(self.handle(ino, self.generation))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let s = self.live()?;
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        drop(s);
        Ok(self.handle(ino, self.generation))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        if !s.parent_is_known(to) {
            return Err(not_found(to));
        }
        let ino = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        if !self.live()?.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(self.file_names(dir))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        s.stats.dir_syncs += 1;
        if s.faults.fail_dir_sync_at == Some(s.stats.dir_syncs) {
            return Err(injected("directory sync"));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable_names.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.extend(current);
        Ok(())
    }
}

#[derive(Debug)]
struct FaultFile {
    state: Arc<Mutex<FaultState>>,
    ino: u64,
    generation: u64,
}

impl FaultFile {
    fn with_inode<T>(&self, f: impl FnOnce(&mut FaultState) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.state.lock();
        if s.generation != self.generation {
            return Err(crashed());
        }
        f(&mut s)
    }
}

impl WalFile for FaultFile {
    fn append(&self, buf: &[u8]) -> io::Result<usize> {
        let ino = self.ino;
        self.with_inode(|s| {
            s.stats.writes += 1;
            if s.faults.fail_write_at == Some(s.stats.writes) {
                return Err(injected("write"));
            }
            let mut n = buf.len();
            if s.faults.short_writes && n > 1 {
                n /= 2;
            }
            if let Some(limit) = s.faults.space_limit {
                let room = limit.saturating_sub(s.total_bytes());
                if room == 0 && n > 0 {
                    return Err(io::Error::from_raw_os_error(ENOSPC));
                }
                n = n.min(usize::try_from(room).unwrap_or(usize::MAX));
            }
            s.stats.bytes_written += n as u64;
            let inode = s.inodes.get_mut(&ino).expect("open handle has an inode");
            inode.data.extend_from_slice(&buf[..n]);
            Ok(n)
        })
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let ino = self.ino;
        self.with_inode(|s| {
            let inode = s.inodes.get(&ino).expect("open handle has an inode");
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(inode.data.len());
            let n = buf.len().min(inode.data.len() - start);
            buf[..n].copy_from_slice(&inode.data[start..start + n]);
            Ok(n)
        })
    }

    fn sync(&self) -> io::Result<()> {
        let delay = self.with_inode(|s| Ok(s.faults.sync_delay))?;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let ino = self.ino;
        self.with_inode(|s| {
            s.stats.syncs += 1;
            if s.faults.fail_all_syncs || s.faults.fail_sync_at == Some(s.stats.syncs) {
                return Err(injected("sync"));
            }
            let inode = s.inodes.get_mut(&ino).expect("open handle has an inode");
            if inode.append_only {
                let start = inode.durable.len();
                let tail = inode.data[start..].to_vec();
                inode.durable.extend_from_slice(&tail);
            } else {
                inode.durable = inode.data.clone();
                inode.append_only = true;
            }
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        let ino = self.ino;
        self.with_inode(|s| Ok(s.inodes.get(&ino).map_or(0, |i| i.data.len() as u64)))
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let ino = self.ino;
        self.with_inode(|s| {
            let inode = s.inodes.get_mut(&ino).expect("open handle has an inode");
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            inode.data.resize(len, 0);
            inode.append_only = false;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/d")
    }

    #[test]
    fn unsynced_bytes_and_names_are_lost_in_a_crash() {
        let io = FaultIo::new();
        io.create_dir_all(&dir()).expect("mkdir");
        let a = io.create(&dir().join("a")).expect("create");
        write_all(a.as_ref(), b"hello").expect("write");
        a.sync().expect("sync");
        io.sync_dir(&dir()).expect("sync dir");
        write_all(a.as_ref(), b" world").expect("write");
        let b = io.create(&dir().join("b")).expect("create");
        b.sync().expect("sync");
        let old = io.clone();
        let io = io.crash();
        assert!(a.size().is_err(), "old handles fail after a crash");
        assert!(
            old.list(&dir()).is_err(),
            "and so does the old file system handle"
        );
        assert_eq!(io.file_names(&dir()), vec!["a".to_owned()]);
        assert_eq!(io.contents(&dir().join("a")).expect("a"), b"hello");
    }

    #[test]
    fn removal_without_dir_sync_is_undone_by_a_crash() {
        let io = FaultIo::new();
        io.create_dir_all(&dir()).expect("mkdir");
        let a = io.create(&dir().join("a")).expect("create");
        write_all(a.as_ref(), b"x").expect("write");
        a.sync().expect("sync");
        io.sync_dir(&dir()).expect("sync dir");
        io.remove(&dir().join("a")).expect("remove");
        let io = io.crash();
        assert_eq!(io.contents(&dir().join("a")).expect("back"), b"x");
    }

    #[test]
    fn short_writes_and_enospc() {
        let io = FaultIo::new();
        io.create_dir_all(&dir()).expect("mkdir");
        let a = io.create(&dir().join("a")).expect("create");
        io.short_writes(true);
        assert_eq!(a.append(b"abcd").expect("short"), 2);
        write_all(a.as_ref(), b"efgh").expect("loops");
        io.short_writes(false);
        io.space_limit(Some(8));
        assert_eq!(a.append(b"ijkl").expect("partial"), 2);
        let err = a.append(b"kl").expect_err("full");
        assert!(is_disk_full(&err));
    }

    #[test]
    fn nth_write_and_sync_fail() {
        let io = FaultIo::new();
        io.create_dir_all(&dir()).expect("mkdir");
        let a = io.create(&dir().join("a")).expect("create");
        io.fail_nth_write(2);
        a.append(b"1").expect("first");
        a.append(b"2").expect_err("second");
        a.append(b"3").expect("third");
        io.fail_nth_sync(1);
        a.sync().expect_err("sync");
        a.sync().expect("next sync");
    }

    #[test]
    fn real_files_count_syncs() {
        let tmp = std::env::temp_dir().join(format!("wal-io-test-{}", std::process::id()));
        let io = FsIo::new();
        io.create_dir_all(&tmp).expect("mkdir");
        let path = tmp.join("f");
        let _ = std::fs::remove_file(&path);
        let f = io.create(&path).expect("create");
        write_all(f.as_ref(), b"abc").expect("write");
        f.sync().expect("sync");
        io.sync_dir(&tmp).expect("sync dir");
        let mut buf = [0u8; 2];
        read_exact_at(f.as_ref(), &mut buf, 1).expect("read");
        assert_eq!(&buf, b"bc");
        f.truncate(1).expect("truncate");
        write_all(f.as_ref(), b"z").expect("append after truncate");
        assert_eq!(read_to_end(f.as_ref()).expect("read"), b"az");
        let stats = io.stats();
        assert_eq!((stats.writes, stats.syncs, stats.dir_syncs), (2, 1, 1));
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }
}
