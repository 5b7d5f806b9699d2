//! [`Store`] on redb, in `<data>/status.redb`: the controller's store
//! since the measurements in `docs/architecture.md` (sled, the first
//! backend, used 12× the logical size on disk for 30 days of history, redb
//! a small multiple).
//!
//! Durability: every write goes through one writer thread that gathers the
//! writes waiting at that moment into a single redb transaction, committed
//! with fsync (`Durability::Immediate`), before any of their callers
//! returns: an HTTP 2xx means the data survives `kill -9` and a power cut,
//! and concurrent reports share one fsync (group commit). If one write of a
//! group fails, the group is rolled back and each write is retried alone,
//! so one bad write never takes others down with it.
//!
//! A failed read or write of the file (the disk filled up, an I/O error)
//! leaves redb refusing every later operation until the database is
//! reopened. The writer then reopens it and retries a small probe write
//! every [`RETRY_EVERY`] until one lands: the store recovers by itself
//! once space returns, without a restart. Meanwhile
//! [`Store::write_failure`] says why (`/healthz` answers 503 with it) and
//! the failures are [`StoreError::Io`], not corruption.

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use touchline_schemas::SiteId;
use touchline_schemas::report::Report;

use crate::point::HistoryPoint;
use crate::store::{
    AuditEntry, CommitRecord, CommitState, Downsample, Event, IngestOutcome, Published, SiteState,
    Store, StoreError, controller_event_key, dec, decode_point, downsample_mark, enc, fold_reports,
    site_key, ts_key,
};
use crate::tokens::TokenHash;

type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;
const TOKENS: Bytes = TableDefinition::new("tokens");
const STATUS: Bytes = TableDefinition::new("status");
const HISTORY: Bytes = TableDefinition::new("history");
const EVENTS: Bytes = TableDefinition::new("events");
const BUNDLES: Bytes = TableDefinition::new("bundles");
const COMMITS: Bytes = TableDefinition::new("commits");
const META: Bytes = TableDefinition::new("meta");
const AUDIT: Bytes = TableDefinition::new("audit");
const ALL: [Bytes; 8] = [
    TOKENS, STATUS, HISTORY, EVENTS, BUNDLES, COMMITS, META, AUDIT,
];

/// Writes waiting at once, at most, in one transaction.
const GROUP_MAX: usize = 256;

/// redb's page cache.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// While the file cannot be written: how often the writer reopens it and
/// tries a probe write.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

/// How long a reopen waits for the reads in flight on the old handle.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// Runs `f`, turning a panic into its message (the default hook, which
/// would print a backtrace hint as if the controller had crashed, is
/// silenced meanwhile).
fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r.map_err(|p| {
        Panicked(
            p.downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned()),
        )
    })
}

/// A panic caught by [`catch_quietly`], with its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Panicked(String);

/// redb's answer to every use of a file after one of its reads or writes
/// failed (the cause itself is kept by [`Shared::cause`]).
const PREVIOUS_IO: &str =
    "an earlier read or write of the file failed; the store is being reopened";

/// A redb error as a [`StoreError`]: a failed read or write of the file
/// (and redb's refusal after one) is [`StoreError::Io`].
fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    match e.into() {
        redb::Error::Io(io) => StoreError::Io(io.to_string()),
        redb::Error::PreviousIo => StoreError::Io(PREVIOUS_IO.into()),
        other => StoreError::Redb(Box::new(other)),
    }
}

/// The open database, replaced when the writer reopens it after an I/O
/// failure, and why writes fail while they do.
struct Shared {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
    failing: Mutex<Option<String>>,
}

impl Shared {
    /// The database for one read or write (`Io` while a reopen failed).
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        let guard = self
            .db
            .read()
            .map_err(|_| StoreError::Corrupt("database lock poisoned".into()))?;
        guard.clone().ok_or_else(|| {
            StoreError::Io(format!(
                "the file could not be reopened after an I/O error ({})",
                self.failure().unwrap_or_default()
            ))
        })
    }

    fn failure(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    /// The reason to give for a failed write: redb's "an earlier I/O
    /// failed" is replaced by that earlier failure when it is known (a
    /// full disk stays "No space left on device" for every write refused
    /// until it recovers, whichever writer hit it first).
    fn cause(&self, why: String) -> String {
        match self.failure() {
            Some(first) if why == PREVIOUS_IO => first,
            _ => why,
        }
    }

    fn set_failure(&self, why: Option<String>) {
        if let Ok(mut f) = self.failing.lock() {
            match (&*f, &why) {
                (None, Some(w)) => {
                    tracing::error!(store = %self.path.display(), error = %w, "the status store cannot write; retrying every {}s", RETRY_EVERY.as_secs());
                }
                (Some(_), None) => {
                    tracing::info!(store = %self.path.display(), "the status store writes again");
                }
                _ => {}
            }
            *f = why;
        }
    }

    /// Closes the database and opens it again (redb refuses everything
    /// after an I/O error until then).
    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self
            .db
            .write()
            .map_err(|_| StoreError::Corrupt("database lock poisoned".into()))?;
        if let Some(mut old) = slot.take() {
            // Reads in flight hold a clone for a moment; redb's file lock
            // must be released before the file opens again.
            let start = std::time::Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) if start.elapsed() < REOPEN_WAIT => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(still) => {
                        *slot = Some(still);
                        return Err(StoreError::Io(
                            "reads kept the old handle open; reopening later".into(),
                        ));
                    }
                }
            }
        }
        let db = catch_quietly(|| open_database(&self.path))
            .map_err(|p| StoreError::Io(format!("reopening failed: {p}")))??;
        *slot = Some(Arc::new(db));
        tracing::info!(store = %self.path.display(), "the status store was reopened");
        Ok(())
    }
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(db_err)
}

/// A row as redb iterates it.
type Row<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;
/// Points of one bucket (key, point), keyed by the bucket's start.
type Buckets = Vec<(Timestamp, Vec<(Vec<u8>, HistoryPoint)>)>;

type Job = Box<dyn FnMut(&WriteTransaction) -> Result<(), StoreError> + Send>;
type Reply = mpsc::Sender<Result<(), StoreError>>;

struct Inner {
    shared: Arc<Shared>,
    /// Writes done and transactions committed (group commit when fewer).
    counters: Arc<(AtomicU64, AtomicU64)>,
    jobs: Mutex<Option<mpsc::Sender<(Job, Reply)>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer; joining it releases the file.
        if let Ok(mut j) = self.jobs.lock() {
            j.take();
        }
        if let Ok(mut w) = self.writer.lock()
            && let Some(h) = w.take()
        {
            let _ = h.join();
        }
    }
}

/// [`Store`] on redb.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

/// Runs one transaction of `jobs` on the current database.
fn run_group<'a>(
    shared: &Shared,
    jobs: impl Iterator<Item = &'a mut Job>,
) -> Result<(), StoreError> {
    let db = shared.db()?;
    let txn = db.begin_write().map_err(db_err)?;
    for job in jobs {
        job(&txn)?;
    }
    txn.commit().map_err(db_err)
}

/// The probe written while the store cannot write: a small record of the
/// same kind as the real ones.
fn probe(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut m = txn.open_table(META).map_err(db_err)?;
    m.insert(
        b"store/probe".as_slice(),
        Timestamp::now().to_string().as_bytes(),
    )
    .map_err(db_err)?;
    Ok(())
}

/// While failing: the probe on the open file, else on the file reopened
/// (redb refuses everything after an I/O error until then).
fn recover(shared: &Shared) {
    let try_probe = || {
        let mut job: Job = Box::new(probe);
        run_group(shared, std::iter::once(&mut job))
    };
    let attempt = try_probe().or_else(|_| {
        shared.reopen()?;
        try_probe()
    });
    match attempt {
        Ok(()) => shared.set_failure(None),
        Err(StoreError::Io(why)) => shared.set_failure(Some(shared.cause(why))),
        Err(e) => shared.set_failure(Some(e.to_string())),
    }
}

fn writer_loop(
    shared: &Shared,
    rx: &mpsc::Receiver<(Job, Reply)>,
    counters: &(AtomicU64, AtomicU64),
) {
    loop {
        let first = if shared.failure().is_some() {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(j) => j,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    recover(shared);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(j) => j,
                Err(_) => break,
            }
        };
        if shared.failure().is_some() {
            // Writes are waiting: make the file usable first if it can be.
            recover(shared);
        }
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let together = run_group(shared, group.iter_mut().map(|(job, _)| job));
        counters.0.fetch_add(group.len() as u64, Ordering::Relaxed);
        counters.1.fetch_add(1, Ordering::Relaxed);
        match together {
            Ok(()) => {
                shared.set_failure(None);
                for (_, reply) in group {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(StoreError::Io(why)) => {
                // The file, not one write, is the problem: every write of
                // the group fails with it, and the writer reopens the file.
                let why = shared.cause(why);
                shared.set_failure(Some(why.clone()));
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Io(why.clone())));
                }
                recover(shared);
            }
            Err(_) if group.len() > 1 => {
                // Retry each alone so that only the failing one fails.
                for (mut job, reply) in group {
                    let alone = run_group(shared, std::iter::once(&mut job));
                    let _ = reply.send(alone);
                }
            }
            Err(e) => {
                // One write, alone: its own error.
                if let Some((_, reply)) = group.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

impl RedbStore {
    /// Opens (creating) `<data>/status.redb`.
    pub fn open(data: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data).map_err(|e| db_err(redb::Error::Io(e)))?;
        let path = data.join("status.redb");
        let unusable = |why: String| StoreError::Unusable {
            path: path.display().to_string(),
            why,
        };
        // A file truncated to nothing would open as a new, empty store: every
        // box would then get 401. Refused instead.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(unusable("is empty (0 bytes)".into()));
        }
        // redb panics on some corrupt files: caught, reported, never a crash.
        let opened = catch_quietly(|| -> Result<Database, StoreError> {
            let db = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(|e| match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => {
                        StoreError::Locked(path.display().to_string())
                    }
                    redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
                        unusable(format!("is corrupt ({why})"))
                    }
                    other => db_err(other),
                })?;
            let txn = db.begin_write().map_err(db_err)?;
            for t in ALL {
                txn.open_table(t).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
            Ok(db)
        });
        let db = match opened {
            Ok(r) => r?,
            Err(panic) => {
                return Err(unusable(format!(
                    "is corrupt (the database library failed: {panic})"
                )));
            }
        };
        let shared = Arc::new(Shared {
            path: path.clone(),
            db: RwLock::new(Some(Arc::new(db))),
            failing: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel::<(Job, Reply)>();
        let wshared = shared.clone();
        let counters: Arc<(AtomicU64, AtomicU64)> = Arc::default();
        let wcounters = counters.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&wshared, &rx, &wcounters))
            .map_err(|e| db_err(redb::Error::Io(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                counters,
                jobs: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Runs `f` in a write transaction shared with the other writes
    /// waiting now; returns once it is committed and fsynced.
    fn write<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let s2 = slot.clone();
        let job: Job = Box::new(move |txn| {
            let v = f(txn)?;
            if let Ok(mut s) = s2.lock() {
                *s = Some(v);
            }
            Ok(())
        });
        let (reply_tx, reply_rx) = mpsc::channel();
        {
            let jobs = self
                .inner
                .jobs
                .lock()
                .map_err(|_| StoreError::Corrupt("writer lock poisoned".into()))?;
            let sender = jobs
                .as_ref()
                .ok_or_else(|| StoreError::Corrupt("store closed".into()))?;
            sender
                .send((job, reply_tx))
                .map_err(|_| StoreError::Corrupt("store writer stopped".into()))?;
        }
        reply_rx
            .recv()
            .map_err(|_| StoreError::Corrupt("store writer stopped".into()))??;
        let v = slot
            .lock()
            .map_err(|_| StoreError::Corrupt("result lock poisoned".into()))?
            .take();
        v.ok_or_else(|| StoreError::Corrupt("write produced no result".into()))
    }

    fn read_range<T>(
        &self,
        table: Bytes,
        range: impl RangeBounds<&'static [u8]>,
        reverse: bool,
        limit: usize,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.inner.shared.db()?.begin_read().map_err(db_err)?;
        let t = txn.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        let it = t.range::<&[u8]>(range).map_err(db_err)?;
        let mut push = |kv: Row<'_>| -> Result<(), StoreError> {
            let (k, v) = kv.map_err(db_err)?;
            out.push(f(k.value(), v.value())?);
            Ok(())
        };
        if reverse {
            for kv in it.rev().take(limit) {
                push(kv)?;
            }
        } else {
            for kv in it.take(limit) {
                push(kv)?;
            }
        }
        Ok(out)
    }

    fn get(&self, table: Bytes, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.shared.db()?.begin_read().map_err(db_err)?;
        let t = txn.open_table(table).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Writes done and transactions committed so far.
    pub fn writes_and_commits(&self) -> (u64, u64) {
        (
            self.inner.counters.0.load(Ordering::Relaxed),
            self.inner.counters.1.load(Ordering::Relaxed),
        )
    }

    /// The sites that ever reported (those with a latest state).
    fn reported_sites(&self) -> Result<Vec<SiteId>, StoreError> {
        self.read_range(STATUS, .., false, usize::MAX, |k, _| {
            let key = String::from_utf8_lossy(k);
            SiteId::new(&key).map_err(|e| crate::store::corrupt(&key, &e))
        })
    }

    /// How the history table uses the file: bytes of keys and values,
    /// of the B-tree's metadata, and lost to fragmentation (for the
    /// benchmarks).
    pub fn history_table_bytes(&self) -> Result<(u64, u64, u64), StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.inner.shared.db()?.begin_read().map_err(db_err)?;
        let t = txn.open_table(HISTORY).map_err(db_err)?;
        let st = t.stats().map_err(db_err)?;
        Ok((
            st.stored_bytes(),
            st.metadata_bytes(),
            st.fragmented_bytes(),
        ))
    }

    /// Bytes of the database file.
    pub fn size_on_disk(&self, data: &Path) -> u64 {
        std::fs::metadata(data.join("status.redb")).map_or(0, |m| m.len())
    }
}

/// The next id of an append-only table (last key + 1).
fn next_id(t: &redb::Table<&[u8], &[u8]>) -> Result<u64, StoreError> {
    Ok(match t.last().map_err(db_err)? {
        Some((k, _)) => {
            u64::from_be_bytes(k.value().try_into().unwrap_or([0; 8])).saturating_add(1)
        }
        None => 1,
    })
}

/// Sets (`Some`) and removes (`None`) named values inside `txn`.
fn apply_meta(
    txn: &WriteTransaction,
    changes: &[(String, Option<String>)],
) -> Result<(), StoreError> {
    let mut m = txn.open_table(META).map_err(db_err)?;
    for (k, v) in changes {
        match v {
            Some(v) => {
                m.insert(k.as_bytes(), v.as_bytes()).map_err(db_err)?;
            }
            None => {
                m.remove(k.as_bytes()).map_err(db_err)?;
            }
        }
    }
    Ok(())
}

impl Store for RedbStore {
    fn write_failure(&self) -> Option<String> {
        self.inner.shared.failure()
    }

    fn site_tokens(&self) -> Result<Vec<(SiteId, TokenHash)>, StoreError> {
        self.read_range(TOKENS, .., false, usize::MAX, |k, v| {
            let key = String::from_utf8_lossy(k).into_owned();
            let site = SiteId::new(&key).map_err(|_| StoreError::Corrupt(key.clone()))?;
            let hash: [u8; 32] = v.try_into().map_err(|_| StoreError::Corrupt(key))?;
            Ok((site, TokenHash(hash)))
        })
    }

    fn set_site_token_with_meta(
        &self,
        site: &SiteId,
        hash: &TokenHash,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<(), StoreError> {
        let (site, hash) = (site.clone(), hash.0);
        self.write(move |txn| {
            let mut t = txn.open_table(TOKENS).map_err(db_err)?;
            t.insert(site.as_str().as_bytes(), &hash[..])
                .map_err(db_err)?;
            apply_meta(txn, &changes)
        })
    }

    fn ingest(
        &self,
        site: &SiteId,
        epoch: Option<&str>,
        reports: &[Report],
        received_at: Timestamp,
    ) -> Result<IngestOutcome, StoreError> {
        let site = site.clone();
        let epoch = epoch.map(str::to_owned);
        let mut sorted: Vec<Report> = reports.to_vec();
        sorted.sort_by_key(|r| r.seq);
        self.write(move |txn| {
            let mut status = txn.open_table(STATUS).map_err(db_err)?;
            let mut history = txn.open_table(HISTORY).map_err(db_err)?;
            let mut events = txn.open_table(EVENTS).map_err(db_err)?;
            let key = site.as_str().as_bytes();
            let prev: Option<SiteState> = status
                .get(key)
                .map_err(db_err)?
                .map(|v| dec(key, v.value()))
                .transpose()?;
            let folded = fold_reports(&site, prev, epoch.as_deref(), &sorted, received_at);
            for (k, v) in &folded.history {
                history.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
            }
            for (k, v) in &folded.events {
                events.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
            }
            if let Some(state) = &folded.state {
                status.insert(key, enc(state).as_slice()).map_err(db_err)?;
            }
            Ok(folded.outcome)
        })
    }

    fn latest_all(&self) -> Result<Vec<SiteState>, StoreError> {
        self.read_range(STATUS, .., false, usize::MAX, dec)
    }

    fn latest(&self, site: &SiteId) -> Result<Option<SiteState>, StoreError> {
        let key = site.as_str().as_bytes();
        self.get(STATUS, key)?.map(|v| dec(key, &v)).transpose()
    }

    fn history(
        &self,
        site: &SiteId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        let lo = site_key(site, ts_key(from), 0);
        let hi = site_key(site, ts_key(to), 0);
        let txn = self.inner.shared.db()?.begin_read().map_err(db_err)?;
        let t = txn.open_table(HISTORY).map_err(db_err)?;
        let mut out = Vec::new();
        for kv in t
            .range::<&[u8]>(lo.as_slice()..hi.as_slice())
            .map_err(db_err)?
        {
            let (k, v) = kv.map_err(db_err)?;
            out.push(decode_point(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn prune_history(&self, before: Timestamp) -> Result<usize, StoreError> {
        // Per site, only the range before the cutoff (typically the hour
        // that just expired), one small transaction each: a year of a big
        // fleet is tens of millions of points, and a scan of them all would
        // hold the writer (and the reports waiting on it) for seconds.
        let cutoff = ts_key(before);
        let mut removed = 0;
        for site in self.reported_sites()? {
            removed += self.write(move |txn| {
                let mut t = txn.open_table(HISTORY).map_err(db_err)?;
                let lo = site_key(&site, 0, 0);
                let hi = site_key(&site, cutoff, 0);
                let mut n = 0;
                t.retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| {
                    n += 1;
                    false
                })
                .map_err(db_err)?;
                Ok(n)
            })?;
        }
        Ok(removed)
    }

    fn downsample_history(
        &self,
        before: Timestamp,
        bucket: jiff::SignedDuration,
    ) -> Result<usize, StoreError> {
        let Some(win) = Downsample::window(self.meta(&downsample_mark(bucket))?, before, bucket)
        else {
            return Ok(0);
        };
        let (start, end) = (win.start, win.end);
        let align = move |t: Timestamp| win.align(t);
        let sites = self.reported_sites()?;
        let mut merged_away = 0;
        // One transaction per site keeps each commit small; a crash
        // between sites leaves whole sites done and the rest for next time.
        for site in sites {
            merged_away += self.write(move |txn| {
                let mut t = txn.open_table(HISTORY).map_err(db_err)?;
                let lo = site_key(&site, ts_key(start), 0);
                let hi = site_key(&site, ts_key(end), 0);
                let mut groups: Buckets = Vec::new();
                for kv in t
                    .range::<&[u8]>(lo.as_slice()..hi.as_slice())
                    .map_err(db_err)?
                {
                    let (k, v) = kv.map_err(db_err)?;
                    let p = decode_point(k.value(), v.value())?;
                    let b = align(p.at);
                    match groups.last_mut() {
                        Some((gb, g)) if *gb == b => g.push((k.value().to_vec(), p)),
                        _ => groups.push((b, vec![(k.value().to_vec(), p)])),
                    }
                }
                let mut n = 0;
                for (b, g) in groups {
                    let target = site_key(&site, ts_key(b), 0);
                    if g.len() == 1 && g[0].0 == target {
                        continue;
                    }
                    let points: Vec<HistoryPoint> = g.iter().map(|(_, p)| p.clone()).collect();
                    for (k, _) in &g {
                        t.remove(k.as_slice()).map_err(db_err)?;
                    }
                    t.insert(
                        target.as_slice(),
                        &HistoryPoint::merge(b, &points).encode()[..],
                    )
                    .map_err(db_err)?;
                    n += g.len() - 1;
                }
                Ok(n)
            })?;
        }
        self.set_meta(&downsample_mark(bucket), &end.to_string())?;
        Ok(merged_away)
    }

    fn events(&self, site: &SiteId, limit: usize) -> Result<Vec<Event>, StoreError> {
        let lo = site_key(site, 0, 0);
        let hi = site_key(site, u64::MAX, u64::MAX);
        let txn = self.inner.shared.db()?.begin_read().map_err(db_err)?;
        let t = txn.open_table(EVENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for kv in t
            .range::<&[u8]>(lo.as_slice()..=hi.as_slice())
            .map_err(db_err)?
            .rev()
            .take(limit)
        {
            let (k, v) = kv.map_err(db_err)?;
            out.push(dec(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn publish(
        &self,
        bundles: &[Published],
        commit: Option<&CommitRecord>,
    ) -> Result<(), StoreError> {
        let encoded: Vec<(String, Vec<u8>)> = bundles
            .iter()
            .map(|p| (p.site.as_str().to_owned(), enc(p)))
            .collect();
        let commit = commit.cloned();
        self.write(move |txn| {
            let mut b = txn.open_table(BUNDLES).map_err(db_err)?;
            for (site, body) in &encoded {
                b.insert(site.as_bytes(), body.as_slice()).map_err(db_err)?;
            }
            if let Some(rec) = &commit {
                let mut c = txn.open_table(COMMITS).map_err(db_err)?;
                let id = next_id(&c)?;
                c.insert(&id.to_be_bytes()[..], enc(rec).as_slice())
                    .map_err(db_err)?;
                let mut m = txn.open_table(META).map_err(db_err)?;
                if rec.state == CommitState::Accepted {
                    m.insert(crate::store::LAST_GOOD.as_bytes(), rec.id.as_bytes())
                        .map_err(db_err)?;
                }
                m.insert(crate::store::LAST_SEEN.as_bytes(), rec.id.as_bytes())
                    .map_err(db_err)?;
            }
            Ok(())
        })
    }

    fn published(&self) -> Result<Vec<Published>, StoreError> {
        self.read_range(BUNDLES, .., false, usize::MAX, dec)
    }

    fn record_commit(&self, commit: &CommitRecord) -> Result<(), StoreError> {
        self.publish(&[], Some(commit))
    }

    fn commits(&self, limit: usize) -> Result<Vec<CommitRecord>, StoreError> {
        self.read_range(COMMITS, .., true, limit, dec)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(META, key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |txn| {
            let mut m = txn.open_table(META).map_err(db_err)?;
            m.insert(key.as_bytes(), value.as_bytes()).map_err(db_err)?;
            Ok(())
        })
    }

    fn meta_scan(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.inner.shared.db()?.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        let mut out = Vec::new();
        for kv in t.range::<&[u8]>(prefix.as_bytes()..).map_err(db_err)? {
            let (k, v) = kv.map_err(db_err)?;
            if !k.value().starts_with(prefix.as_bytes()) {
                break;
            }
            out.push((
                String::from_utf8_lossy(k.value()).into_owned(),
                String::from_utf8_lossy(v.value()).into_owned(),
            ));
        }
        Ok(out)
    }

    fn meta_write_with_events(
        &self,
        changes: Vec<(String, Option<String>)>,
        events: Vec<(SiteId, Event)>,
    ) -> Result<(), StoreError> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = events
            .iter()
            .enumerate()
            .map(|(i, (site, e))| (controller_event_key(site, e.at, i), enc(e)))
            .collect();
        self.write(move |txn| {
            let mut ev = txn.open_table(EVENTS).map_err(db_err)?;
            for (k, v) in &rows {
                ev.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
            }
            apply_meta(txn, &changes)
        })
    }

    fn snapshot_to(&self, path: &Path) -> Result<u64, StoreError> {
        let txn = self.inner.shared.db()?.begin_read().map_err(db_err)?;
        let out = Database::create(path).map_err(db_err)?;
        let mut w = out.begin_write().map_err(db_err)?;
        w.set_durability(redb::Durability::Immediate)
            .map_err(db_err)?;
        let mut rows = 0u64;
        for def in ALL {
            let src = txn.open_table(def).map_err(db_err)?;
            let mut dst = w.open_table(def).map_err(db_err)?;
            for kv in src.iter().map_err(db_err)? {
                let (k, v) = kv.map_err(db_err)?;
                dst.insert(k.value(), v.value()).map_err(db_err)?;
                rows += 1;
            }
        }
        w.commit().map_err(db_err)?;
        Ok(rows)
    }

    fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let body = enc(entry);
        self.write(move |txn| {
            let mut t = txn.open_table(AUDIT).map_err(db_err)?;
            let id = next_id(&t)?;
            t.insert(&id.to_be_bytes()[..], body.as_slice())
                .map_err(db_err)?;
            Ok(())
        })
    }

    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read_range(AUDIT, .., true, limit, dec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_refused_after_an_io_failure_gives_that_failure() {
        let shared = Shared {
            path: PathBuf::from("/data/status.redb"),
            db: RwLock::new(None),
            failing: Mutex::new(None),
        };
        // Nothing known yet: redb's own words.
        assert_eq!(shared.cause(PREVIOUS_IO.into()), PREVIOUS_IO);
        shared.set_failure(Some("No space left on device (os error 28)".into()));
        // Whichever writer hit the full disk first, every later refusal
        // names it (the alert loop's write often comes before a report's).
        assert_eq!(
            shared.cause(PREVIOUS_IO.into()),
            "No space left on device (os error 28)"
        );
        assert_eq!(
            shared.cause("Input/output error (os error 5)".into()),
            "Input/output error (os error 5)"
        );
    }
}
