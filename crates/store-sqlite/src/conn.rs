//! Connections: one writer thread with group commit, and a pool of readers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use secureflows_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::error::{SqlResult, map};
use crate::migrate::{self, Migration, MigrationMode};

/// Most writes one commit covers.
const MAX_BATCH: usize = 512;
/// Most idle reader connections kept open.
const MAX_IDLE_READERS: usize = 4;

trait Job: Send {
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Completion>;
    fn fail(self: Box<Self>, error: Error);
}

trait Completion: Send {
    fn succeeded(&self) -> bool;
    fn complete(self: Box<Self>, committed: bool);
}

struct TypedJob<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T>>,
}

struct TypedCompletion<T> {
    result: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Completion> {
        let result = (self.f)(conn);
        Box::new(TypedCompletion {
            result,
            reply: self.reply,
        })
    }

    fn fail(self: Box<Self>, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send> Completion for TypedCompletion<T> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn complete(self: Box<Self>, committed: bool) {
        let result = if committed || self.result.is_err() {
            self.result
        } else {
            Err(Error::Unavailable("database write failed"))
        };
        let _ = self.reply.send(result);
    }
}

/// Tuning of the SQLite databases.
#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// The write-ahead log's bound: it starts over before it grows past this (see `LogBound`).
    pub wal_limit_bytes: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            wal_limit_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One SQLite database file: a writer thread and a reader pool.
pub struct Database {
    path: PathBuf,
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<Checkpointer>,
    readers: Mutex<Vec<Connection>>,
}

impl Drop for Database {
    /// Stops the writer after the batches already queued and waits until its connection is closed, so
    /// that once the store is dropped the files are no longer in use (e.g. by a restore).
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.checkpointer.take() {
            if let Ok(mut stopped) = stop.0.lock() {
                *stopped = true;
            }
            stop.1.notify_all();
            let _ = handle.join();
        }
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Ok(mut readers) = self.readers.lock() {
            readers.clear();
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How long a connection keeps retrying a lock another holds, in steps of `BUSY_STEP`.
const BUSY_STEP: Duration = Duration::from_micros(200);
const BUSY_ATTEMPTS: i32 = 25_000; // about 5 s
const CHECKPOINT_BUSY_ATTEMPTS: i32 = 5_000; // about 1 s

/// Retries every `BUSY_STEP` for about five seconds. Locks here are held for micro- to milliseconds
/// (a read, a group commit, a checkpoint's last step); SQLite's own handler backs off to sleeps of
/// 25–100 ms, so a writer or checkpointer that lost one race slept long after the lock was free, and
/// every request waiting on the writer waited with it.
fn retry_for_a_while(attempts: i32) -> bool {
    retry(attempts, BUSY_ATTEMPTS)
}

/// The same for the checkpointer, which gives up sooner: its next tick tries again.
fn retry_briefly(attempts: i32) -> bool {
    retry(attempts, CHECKPOINT_BUSY_ATTEMPTS)
}

fn retry(attempts: i32, most: i32) -> bool {
    if attempts >= most {
        return false;
    }
    std::thread::sleep(BUSY_STEP);
    true
}

fn configure(conn: &Connection, writer: bool) -> Result<()> {
    conn.busy_handler(Some(retry_for_a_while)).db()?;
    conn.pragma_update(None, "foreign_keys", "ON").db()?;
    if writer {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Unavailable("the database cannot use write-ahead logging"));
        }
        // SECURITY: acknowledged writes survive power loss; deleted content is overwritten on disk.
        conn.pragma_update(None, "synchronous", "FULL").db()?;
        conn.pragma_update(None, "secure_delete", "ON").db()?;
        // Checkpoints run on a thread of their own (see `spawn_checkpointer`), not in the writer's
        // commits; `LogBound` sets `journal_size_limit`.
        conn.pragma_update(None, "wal_autocheckpoint", 0).db()?;
    } else {
        conn.pragma_update(None, "query_only", "ON").db()?;
        // 8 MiB of page cache per reader; readers are few (one per executor thread in practice).
        conn.pragma_update(None, "cache_size", -8_192).db()?;
    }
    Ok(())
}

impl Database {
    /// Opens the file (creating it with mode 0600 when missing), applies or checks `migrations`, and
    /// starts the writer thread.
    pub fn open(
        path: &Path,
        migrations: &[Migration],
        mode: MigrationMode,
        options: SqliteOptions,
    ) -> Result<Database> {
        if !path.exists() && mode == MigrationMode::Check {
            return Err(Error::Unavailable(
                "the database does not exist; run `secureflows migrate`",
            ));
        }
        create_private_file(path)?;
        let mut writer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map)?;
        configure(&writer, true)?;
        migrate::run(&mut writer, migrations, mode)?;
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>(4096);
        let name = format!(
            "sqlite-writer-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("db")
        );
        let log = LogBound {
            wal: wal_path(path),
            limit: options.wal_limit_bytes,
            wanted: Arc::new(AtomicBool::new(false)),
        };
        log.configure(&writer)?;
        let checkpointer = spawn_checkpointer(path, log.clone())?;
        let writer = std::thread::Builder::new()
            .name(name)
            .spawn(move || writer_loop(writer, rx, log))
            .map_err(Error::internal)?;
        Ok(Database {
            path: path.to_owned(),
            jobs: Some(jobs),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` inside the next write batch. The result is returned only after the batch committed
    /// durably; if `f` fails, its changes are rolled back and the others in the batch are unaffected.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or(Error::Unavailable("database writer stopped"))?;
        jobs.send(Box::new(TypedJob { f, reply }))
            .await
            .map_err(|_| Error::Unavailable("database writer stopped"))?;
        rx.await
            .map_err(|_| Error::Unavailable("database writer stopped"))?
    }

    /// Runs `f` on a reader connection, on this thread. Reads are short index look-ups.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.readers.lock().ok().and_then(|mut pool| pool.pop()) {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(map)?;
                configure(&c, false)?;
                c
            }
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < MAX_IDLE_READERS
        {
            pool.push(conn);
        }
        result
    }

    /// Checkpoints the write-ahead log into the main file and truncates it (on a connection of its own,
    /// outside any transaction).
    pub fn checkpoint(&self) -> Result<()> {
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(map)?;
        c.busy_handler(Some(retry_for_a_while)).db()?;
        let busy: i64 = c
            .query_row("pragma wal_checkpoint(truncate)", [], |r| r.get(0))
            .db()?;
        if busy != 0 {
            tracing::warn!(path = %self.path.display(), "write-ahead log checkpoint could not complete");
        }
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn create_private_file(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot create database file");
            Err(Error::Unavailable("cannot create the database file"))
        }
    }
}

/// The checkpointer thread and its stop signal.
type Checkpointer = (Arc<(Mutex<bool>, Condvar)>, std::thread::JoinHandle<()>);

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// The write-ahead log beside `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Every `CHECKPOINT_INTERVAL`, copies the write-ahead log back into the database file with a PASSIVE
/// checkpoint, which blocks neither the writer nor readers, and asks the writer to start the log over
/// (`LogBound`) once it holds more than half its limit.
fn spawn_checkpointer(path: &Path, log: LogBound) -> Result<Checkpointer> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map)?;
    conn.busy_handler(Some(retry_briefly)).db()?;
    // A frame is a page and its 24-byte header.
    let frame_bytes = conn
        .query_row("pragma page_size", [], |r| r.get::<_, u64>(0))
        .db()?
        + 24;
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let signal = stop.clone();
    let name = format!(
        "sqlite-ckpt-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("db")
    );
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let (lock, cvar) = &*signal;
            let Ok(mut stopped) = lock.lock() else { return };
            while !*stopped {
                match cvar.wait_timeout(stopped, CHECKPOINT_INTERVAL) {
                    Ok((guard, _)) => stopped = guard,
                    Err(_) => return,
                }
                if *stopped {
                    break;
                }
                // (busy, frames in the log, frames copied); -1 frames when it could not run.
                match conn.query_row("pragma wal_checkpoint(passive)", [], |r| r.get::<_, i64>(1)) {
                    Ok(frames)
                        if u64::try_from(frames).unwrap_or(0).saturating_mul(frame_bytes) > log.limit / 2 =>
                    {
                        log.wanted.store(true, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %map(e), "write-ahead log checkpoint failed"),
                }
            }
        })
        .map_err(Error::internal)?;
    Ok((stop, handle))
}

/// Keeps the write-ahead log under `limit` bytes under any load. Readers that always hold a snapshot
/// keep the log from ever starting over by itself, so the writer makes it with a RESTART checkpoint
/// between two batches: it waits for the readers still in the old log (reads take microseconds),
/// copies what the PASSIVE checkpoints have not, and lets the next batch start at the beginning of the
/// file; the writes queued meanwhile wait for it. The writer does it when the checkpointer has just
/// found the log past half the limit (little is left to copy then), and on its own when the file has
/// grown past the limit, so the bound holds however the threads are scheduled: the file exceeds it by
/// one batch at most, and `journal_size_limit` cuts it back to the limit whenever the log starts over.
/// (A RESTART from the checkpointer's connection would wait for the writer's lock, which the writer
/// takes again microseconds after each commit.)
#[derive(Clone)]
struct LogBound {
    wal: PathBuf,
    limit: u64,
    wanted: Arc<AtomicBool>,
}

impl LogBound {
    fn configure(&self, writer: &Connection) -> Result<()> {
        let limit = i64::try_from(self.limit).unwrap_or(i64::MAX);
        writer.pragma_update(None, "journal_size_limit", limit).db()
    }

    /// After a commit: starts the log over if the checkpointer asked or the log has grown past the
    /// limit. The file only grows when the log outgrows it, and is cut back to the limit when the log
    /// starts over, so its size tells.
    fn enforce(&self, conn: &Connection) {
        if self.wanted.swap(false, Ordering::Relaxed)
            || std::fs::metadata(&self.wal).is_ok_and(|m| m.len() > self.limit)
        {
            self.restart(conn);
        }
    }

    fn restart(&self, conn: &Connection) {
        match conn.query_row("pragma wal_checkpoint(restart)", [], |r| r.get::<_, i64>(0)) {
            Ok(0) => tracing::debug!("write-ahead log restarted"),
            // A reader held on past the busy time-out: a later commit tries again.
            Ok(_) => tracing::debug!("write-ahead log restart postponed"),
            Err(e) => tracing::warn!(error = %map(e), "write-ahead log restart failed"),
        }
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>, log: LogBound) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("begin immediate") {
            let error = map(e);
            tracing::error!(error = %error, "cannot begin a write transaction");
            for job in batch.drain(..) {
                job.fail(Error::Unavailable("database write failed"));
            }
            continue;
        }
        let mut completions = Vec::with_capacity(batch.len());
        let mut broken = false;
        for job in batch.drain(..) {
            if broken {
                job.fail(Error::Unavailable("database write failed"));
                continue;
            }
            if conn
                .prepare_cached("savepoint job")
                .and_then(|mut st| st.execute([]))
                .is_err()
            {
                broken = true;
                job.fail(Error::Unavailable("database write failed"));
                continue;
            }
            let completion = job.run(&conn);
            let end = if completion.succeeded() {
                conn.prepare_cached("release job")
                    .and_then(|mut st| st.execute([]))
            } else {
                conn.prepare_cached("rollback to job")
                    .and_then(|mut st| st.execute([]))
                    .and_then(|_| {
                        conn.prepare_cached("release job")
                            .and_then(|mut st| st.execute([]))
                    })
            };
            if end.is_err() {
                broken = true;
            }
            completions.push(completion);
        }
        let committed = if broken {
            let _ = conn.execute_batch("rollback");
            false
        } else {
            match conn.execute_batch("commit") {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %map(e), "commit failed");
                    let _ = conn.execute_batch("rollback");
                    false
                }
            }
        };
        for completion in completions {
            completion.complete(committed);
        }
        if committed {
            log.enforce(&conn);
        }
    }
}
