//! Connections: one writer thread with group commit, and a pool of readers.

use std::path::{Path, PathBuf};
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
    /// A write-ahead log larger than this is checkpointed and truncated (see `spawn_checkpointer`).
    pub wal_truncate_bytes: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            wal_truncate_bytes: 64 * 1024 * 1024,
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

fn configure(conn: &Connection, writer: bool) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5)).db()?;
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
        // Checkpoints run on a thread of their own (see `spawn_checkpointer`), not in the writer's commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0).db()?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
            .db()?;
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
        let writer = std::thread::Builder::new()
            .name(name)
            .spawn(move || writer_loop(writer, rx))
            .map_err(Error::internal)?;
        let checkpointer = spawn_checkpointer(path, options.wal_truncate_bytes)?;
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
        c.busy_timeout(Duration::from_secs(5)).db()?;
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
/// What a log is cut back to when the writer starts it over (`journal_size_limit`).
const WAL_SIZE_LIMIT_BYTES: i64 = 16 * 1024 * 1024;

/// Keeps the write-ahead log bounded under any load. Every `CHECKPOINT_INTERVAL` a PASSIVE checkpoint
/// copies the log into the database file without blocking the writer or readers. Under a steady load
/// that alone never lets the log start over (some reader always holds a snapshot in it), so once the
/// log passes `truncate_bytes` a TRUNCATE checkpoint waits (up to the busy time-out) for the readers
/// of the old log to finish, copies the rest, and empties the file; writers pause for that moment.
/// `journal_size_limit` cuts the file back whenever the writer starts the log over by itself.
fn spawn_checkpointer(path: &Path, truncate_bytes: u64) -> Result<Checkpointer> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map)?;
    conn.busy_timeout(Duration::from_secs(1)).db()?;
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let signal = stop.clone();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
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
                if let Err(e) = conn.query_row("pragma wal_checkpoint(passive)", [], |r| r.get::<_, i64>(0)) {
                    tracing::warn!(error = %e, "write-ahead log checkpoint failed");
                }
                let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                if size > truncate_bytes {
                    match conn.query_row("pragma wal_checkpoint(truncate)", [], |r| r.get::<_, i64>(0)) {
                        Ok(0) => tracing::debug!(bytes = size, "write-ahead log truncated"),
                        // Readers or the writer held on past the busy time-out: the next tick tries again.
                        Ok(_) => tracing::debug!(bytes = size, "write-ahead log truncation postponed"),
                        Err(e) => tracing::warn!(error = %e, "write-ahead log truncation failed"),
                    }
                }
            }
        })
        .map_err(Error::internal)?;
    Ok((stop, handle))
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>) {
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
    }
}
