//! The embedded mode's storage: every board's items, values, `seq`, epoch and replay log in one
//! SQLite database, `boardcast.db` in `DATA_DIR`.
//!
//! One thread owns the connection. Jobs (load a board, write a change, a barrier) reach it in
//! the order the broker made them; it runs every job that is waiting in one transaction (a
//! commit group) and only then reports the group done, so that an operation is acked after the
//! transaction holding it committed, and throughput comes from batching rather than from weaker
//! guarantees. A group that fails is rolled back, and every job made before the broker heard of
//! it fails too: they were made on a state that will never be stored. A second thread copies
//! the WAL into the database beside the writer (see [`start_checkpointer`]).
//!
//! One file for the store (opening and locking, the schema, the writer thread, loading,
//! backup): each part is short and they share the connection's rules.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use rusqlite::{params, Connection, OpenFlags};

use crate::backend::ops::OpKey;
use crate::event::BoardKey;

/// The schema this build writes; a database of a newer one is refused.
const SCHEMA_VERSION: i64 = 1;
/// Jobs run in one transaction at most.
const MAX_GROUP: usize = 4096;
/// The replay log is trimmed once this many events are past its bounds: one delete of many
/// rows touches far fewer pages than a delete per commit.
const TRIM_BATCH: u64 = 1000;
/// The database file's name in `DATA_DIR`.
pub const DB_FILE: &str = "boardcast.db";
/// The lock file that keeps a second process off the same `DATA_DIR`.
const LOCK_FILE: &str = "boardcast.lock";

/// When a committed transaction is on disk (`SYNC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Survives a crash of the process; the last commits may be lost on power loss.
    Normal,
    /// Survives power loss: the log is flushed to disk at every commit group.
    Full,
}

/// Why the store could not be opened or backed up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `DATA_DIR` cannot be created, or is not a directory we can write in.
    #[error("DATA_DIR {0}: {1}")]
    Dir(String, std::io::Error),
    /// Another process holds `DATA_DIR`.
    #[error(
        "DATA_DIR {0} is in use by another boardcast process (it holds {0}/{LOCK_FILE}); \
         give each instance a DATA_DIR of its own"
    )]
    Locked(String),
    /// The database was written by a newer boardcast.
    #[error(
        "{0} has schema version {1}, newer than this boardcast knows ({SCHEMA_VERSION}); \
         run a newer boardcast, or restore a backup"
    )]
    Newer(String, i64),
    /// SQLite refused.
    #[error("{0}: {1}")]
    Sqlite(String, rusqlite::Error),
    /// A backup's target exists already.
    #[error("{0} exists; give a new file name")]
    Exists(String),
}

/// A change one durable event made, as the writer stores it.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) board: BoardKey,
    /// The event's seq, now the board's.
    pub(crate) seq: u64,
    /// The event frame, for the replay log.
    pub(crate) frame: ByteString,
    /// The operation's idempotency key, so that a retry after a restart is still answered.
    pub(crate) op: Option<OpKey>,
    /// The version its ack carried.
    pub(crate) version: Option<u64>,
    /// What it did to the board's items and values.
    pub(crate) edit: Edit,
    /// The oldest seq the replay log keeps after it.
    pub(crate) oldest: u64,
}

/// What an event did to the stored state.
#[derive(Debug)]
pub(crate) enum Edit {
    /// Nothing (an event of the backend's own type).
    Nothing,
    /// The item's new text; `None`: it is gone, with its values.
    Item(String, Option<String>),
    /// A cell's new text: item, column, `{"value","version"}`.
    Cell(String, String, String),
}

/// One event of a board's replay log, as loaded.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) seq: u64,
    pub(crate) frame: String,
    /// The idempotency key of the operation it came from.
    pub(crate) op: Option<OpKey>,
    /// The version its ack carried.
    pub(crate) version: Option<u64>,
    /// When it was written, in milliseconds since the Unix epoch.
    pub(crate) at_ms: i64,
}

/// A board as loaded from the database.
#[derive(Debug)]
pub(crate) struct LoadedBoard {
    /// The board's epoch (made when it was first stored).
    pub(crate) epoch: String,
    /// Its last seq.
    pub(crate) seq: u64,
    /// Items, as JSON text.
    pub(crate) items: Vec<String>,
    /// Cells: item, column, JSON text.
    pub(crate) cells: Vec<(String, String, String)>,
    /// The replay log, oldest first.
    pub(crate) events: Vec<StoredEvent>,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Job {
    /// Read a board, storing it first with this epoch when it is new.
    Load(BoardKey, String),
    /// Store a change.
    Write(Change),
    /// Nothing: answered once every job before it has committed.
    Barrier,
}

/// A job's outcome, in the order the jobs were sent.
#[derive(Debug)]
pub(crate) enum Done {
    /// Committed; a load's board with it.
    Ok(Option<Box<LoadedBoard>>),
    /// Not stored: the message says why.
    Failed(String),
}

/// A commit group is over: the outcome of each of its jobs, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Flushed(pub(crate) Vec<Done>);

/// The open database, before its writer thread starts.
pub struct Store {
    /// The connection the writer will own.
    conn: Connection,
    /// Held for the life of the process: a second process on the same `DATA_DIR` is refused.
    lock: Option<File>,
    /// The database file and its `synchronous` level, for the checkpointer's connection; none
    /// in memory.
    file: Option<(PathBuf, &'static str)>,
}

impl Store {
    /// Opens (creating when missing) the database in `dir`, or in memory for `:memory:`, and
    /// brings its schema up to date.
    pub fn open(dir: &str, sync: SyncMode) -> Result<Store, StoreError> {
        if dir == ":memory:" {
            let conn = Connection::open_in_memory()
                .map_err(|e| StoreError::Sqlite(":memory:".into(), e))?;
            migrate(&conn, ":memory:")?;
            return Ok(Store {
                conn,
                lock: None,
                file: None,
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.into(), e))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Path::new(dir).join(LOCK_FILE))
            .map_err(|e| StoreError::Dir(dir.into(), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.into())),
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::Dir(dir.into(), e)),
        }
        let path = db_path(dir);
        let name = path.display().to_string();
        let sqlite = |e| StoreError::Sqlite(name.clone(), e);
        let conn = Connection::open(&path).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        let level = match sync {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", level)
            .map_err(sqlite)?;
        migrate(&conn, &name)?;
        Ok(Store {
            conn,
            lock: Some(lock),
            file: Some((path, level)),
        })
    }

    /// Starts the writer thread, and the checkpointer beside it for a file; outcomes go to
    /// `done`.
    pub(crate) fn start(self, done: Recipient<Flushed>) -> Writer {
        let (tx, rx) = mpsc::channel();
        let Store { conn, lock, file } = self;
        let nudge = file.and_then(|(path, level)| start_checkpointer(&path, level));
        let spawned = std::thread::Builder::new()
            .name("boardcast-store".into())
            .spawn(move || {
                let _lock = lock;
                run(conn, rx, done, nudge);
            });
        if let Err(e) = spawned {
            log::error!("cannot start the storage thread: {e}");
        }
        Writer { tx }
    }
}

/// Starts a thread that copies the WAL's frames into the database while the writer goes on,
/// woken after each commit group; `None` (the writer checkpoints alone) when it cannot.
///
/// A checkpoint syncs the WAL and the database and, run by the writer, holds every commit
/// behind it (20 to 70 ms a time under load). Run from another connection it does not, but the
/// WAL starts over only after a checkpoint that found nothing newer behind it, which a
/// checkpointer racing a busy writer never does: so the writer keeps SQLite's own checkpoint
/// at 1,000 frames, which then finds most frames copied and synced already and only finishes
/// the rest. The nudge channel holds one wake-up: nudges during a pass are one more pass.
fn start_checkpointer(path: &Path, level: &'static str) -> Option<mpsc::SyncSender<()>> {
    let open = || -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", level)?;
        Ok(conn)
    };
    let conn = match open() {
        Ok(conn) => conn,
        Err(e) => {
            log::warn!("storage: no checkpointer ({e}); the writer checkpoints alone");
            return None;
        }
    };
    let (nudge, woken) = mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("boardcast-checkpoint".into())
        .spawn(move || {
            let mut failing = false;
            while woken.recv().is_ok() {
                // Said once, not at every commit, while it keeps failing; the writer's own
                // checkpoint still bounds the WAL meanwhile.
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Err(e) if !failing => {
                        failing = true;
                        log::warn!("storage: the checkpointer failed: {e}");
                    }
                    Ok(()) if failing => {
                        failing = false;
                        log::info!("storage: the checkpointer works again");
                    }
                    _ => {}
                }
                // The writer's next commit runs its own checkpoint before it nudges again:
                // waiting for that nudge leaves it the window to finish and restart the WAL.
                while woken.try_recv().is_ok() {}
            }
        });
    match spawned {
        Ok(_) => Some(nudge),
        Err(e) => {
            log::warn!("storage: no checkpointer ({e}); the writer checkpoints alone");
            None
        }
    }
}

fn db_path(dir: &str) -> PathBuf {
    Path::new(dir).join(DB_FILE)
}

/// Where jobs go: the writer thread, which answers each in order with [`Flushed`].
pub(crate) struct Writer {
    /// The writer's queue. Unbounded here; the broker bounds the jobs it has in flight.
    tx: mpsc::Sender<(u64, Job)>,
}

impl Writer {
    /// Sends `job`, made while the broker's state was of `generation`; false when the writer
    /// is gone.
    pub(crate) fn send(&self, generation: u64, job: Job) -> bool {
        self.tx.send((generation, job)).is_ok()
    }
}

/// Creates the schema, or checks that it is one this build knows.
fn migrate(conn: &Connection, name: &str) -> Result<(), StoreError> {
    let sqlite = |e| StoreError::Sqlite(name.into(), e);
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")
        .map_err(sqlite)?;
    let version: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    match version {
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::Newer(name.into(), v)),
        Some(_) => Ok(()),
        None => conn
            .execute_batch(
                "BEGIN;
                 CREATE TABLE boards (
                     id INTEGER PRIMARY KEY,
                     tenant TEXT NOT NULL,
                     name TEXT NOT NULL,
                     seq INTEGER NOT NULL,
                     epoch TEXT NOT NULL,
                     UNIQUE (tenant, name));
                 CREATE TABLE items (
                     board INTEGER NOT NULL,
                     id TEXT NOT NULL,
                     body TEXT NOT NULL,
                     PRIMARY KEY (board, id)) WITHOUT ROWID;
                 CREATE TABLE cells (
                     board INTEGER NOT NULL,
                     item TEXT NOT NULL,
                     col TEXT NOT NULL,
                     body TEXT NOT NULL,
                     PRIMARY KEY (board, item, col)) WITHOUT ROWID;
                 CREATE TABLE events (
                     board INTEGER NOT NULL,
                     seq INTEGER NOT NULL,
                     frame TEXT NOT NULL,
                     op_field TEXT,
                     op_digest TEXT,
                     version INTEGER,
                     at INTEGER NOT NULL,
                     PRIMARY KEY (board, seq)) WITHOUT ROWID;
                 INSERT INTO schema_version (version) VALUES (1);
                 COMMIT;",
            )
            .map_err(sqlite),
    }
}

/// The writer thread: a commit group per turn, until the broker is gone.
fn run(
    mut conn: Connection,
    rx: mpsc::Receiver<(u64, Job)>,
    done: Recipient<Flushed>,
    checkpointer: Option<mpsc::SyncSender<()>>,
) {
    let mut writer = WriterState::default();
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcomes = writer.turn(&mut conn, &group);
        if let Some(checkpointer) = &checkpointer {
            // Full: a pass is due already and will see this group's frames.
            let _ = checkpointer.try_send(());
        }
        if done.try_send(Flushed(outcomes)).is_err() {
            // The broker is gone; so is everything that would read the outcome.
            break;
        }
    }
}

/// What the writer remembers between commit groups.
#[derive(Default)]
struct WriterState {
    /// Row ids of the boards seen.
    ids: HashMap<BoardKey, i64>,
    /// Per board: the oldest seq the stored log was last trimmed to.
    trimmed: HashMap<i64, u64>,
    /// Jobs of this generation or older are failed unrun: they were made on a lost state.
    failed_through: u64,
}

impl WriterState {
    /// Runs one group in one transaction; the outcome of each job, in order.
    fn turn(&mut self, conn: &mut Connection, group: &[(u64, Job)]) -> Vec<Done> {
        match commit_group(conn, self, group) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                log::error!("storage: a commit failed, its operations are refused: {e}");
                self.ids.clear();
                self.trimmed.clear();
                self.failed_through = group.iter().map(|(g, _)| *g).max().unwrap_or(0);
                let message = format!("storage failed: {e}");
                group
                    .iter()
                    .map(|_| Done::Failed(message.clone()))
                    .collect()
            }
        }
    }
}

fn commit_group(
    conn: &mut Connection,
    writer: &mut WriterState,
    group: &[(u64, Job)],
) -> rusqlite::Result<Vec<Done>> {
    let WriterState {
        ids,
        trimmed,
        failed_through,
    } = writer;
    let tx = conn.transaction()?;
    let mut outcomes = Vec::with_capacity(group.len());
    // Per board: the last seq written and the oldest seq kept, applied once per group.
    let mut heads: HashMap<i64, (u64, u64)> = HashMap::new();
    for (generation, job) in group {
        if *generation <= *failed_through {
            outcomes.push(Done::Failed("storage failed earlier; retry".into()));
            continue;
        }
        match job {
            Job::Barrier => outcomes.push(Done::Ok(None)),
            Job::Load(board, epoch) => {
                let loaded = load(&tx, ids, board, epoch)?;
                outcomes.push(Done::Ok(Some(Box::new(loaded))));
            }
            Job::Write(change) => {
                let id = board_id(&tx, ids, &change.board, None)?;
                write(&tx, id, change)?;
                let head = heads.entry(id).or_insert((0, 0));
                head.0 = head.0.max(change.seq);
                head.1 = head.1.max(change.oldest);
                outcomes.push(Done::Ok(None));
            }
        }
    }
    for (id, (seq, oldest)) in heads {
        tx.prepare_cached("UPDATE boards SET seq = ?1 WHERE id = ?2 AND seq < ?1")?
            .execute(params![seq as i64, id])?;
        let done = trimmed.entry(id).or_insert(0);
        if oldest >= *done + TRIM_BATCH {
            *done = oldest;
            tx.prepare_cached("DELETE FROM events WHERE board = ?1 AND seq < ?2")?
                .execute(params![id, oldest as i64])?;
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// The board's row id, made (with `epoch`) when it is new; a write to a board never loaded
/// makes it with an empty epoch.
fn board_id(
    tx: &rusqlite::Transaction<'_>,
    ids: &mut HashMap<BoardKey, i64>,
    board: &BoardKey,
    epoch: Option<&str>,
) -> rusqlite::Result<i64> {
    if let Some(id) = ids.get(board) {
        return Ok(*id);
    }
    tx.prepare_cached(
        "INSERT INTO boards (tenant, name, seq, epoch) VALUES (?1, ?2, 0, ?3)
         ON CONFLICT (tenant, name) DO NOTHING",
    )?
    .execute(params![board.tenant, board.board, epoch.unwrap_or("")])?;
    let id: i64 = tx
        .prepare_cached("SELECT id FROM boards WHERE tenant = ?1 AND name = ?2")?
        .query_row(params![board.tenant, board.board], |r| r.get(0))?;
    ids.insert(board.clone(), id);
    Ok(id)
}

fn load(
    tx: &rusqlite::Transaction<'_>,
    ids: &mut HashMap<BoardKey, i64>,
    board: &BoardKey,
    epoch: &str,
) -> rusqlite::Result<LoadedBoard> {
    ids.remove(board);
    let id = board_id(tx, ids, board, Some(epoch))?;
    let (seq, epoch): (i64, String) = tx
        .prepare_cached("SELECT seq, epoch FROM boards WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let items = tx
        .prepare_cached("SELECT body FROM items WHERE board = ?1")?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let cells = tx
        .prepare_cached("SELECT item, col, body FROM cells WHERE board = ?1")?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
    let events = tx
        .prepare_cached(
            "SELECT seq, frame, op_field, op_digest, version, at FROM events
             WHERE board = ?1 ORDER BY seq",
        )?
        .query_map([id], |r| {
            let field: Option<String> = r.get(2)?;
            let digest: Option<String> = r.get(3)?;
            Ok(StoredEvent {
                seq: r.get::<_, i64>(0)?.max(0) as u64,
                frame: r.get(1)?,
                op: field
                    .zip(digest)
                    .map(|(field, digest)| OpKey { field, digest }),
                version: r.get::<_, Option<i64>>(4)?.map(|v| v.max(0) as u64),
                at_ms: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<StoredEvent>>>()?;
    Ok(LoadedBoard {
        epoch,
        seq: seq.max(0) as u64,
        items,
        cells,
        events,
    })
}

fn write(tx: &rusqlite::Transaction<'_>, id: i64, change: &Change) -> rusqlite::Result<()> {
    match &change.edit {
        Edit::Nothing => {}
        Edit::Item(item, Some(body)) => {
            tx.prepare_cached(
                "INSERT INTO items (board, id, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (board, id) DO UPDATE SET body = excluded.body",
            )?
            .execute(params![id, item, body])?;
        }
        Edit::Item(item, None) => {
            tx.prepare_cached("DELETE FROM items WHERE board = ?1 AND id = ?2")?
                .execute(params![id, item])?;
            tx.prepare_cached("DELETE FROM cells WHERE board = ?1 AND item = ?2")?
                .execute(params![id, item])?;
        }
        Edit::Cell(item, column, body) => {
            tx.prepare_cached(
                "INSERT INTO cells (board, item, col, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (board, item, col) DO UPDATE SET body = excluded.body",
            )?
            .execute(params![id, item, column, body])?;
        }
    }
    let (field, digest) = match &change.op {
        Some(key) => (Some(key.field.as_str()), Some(key.digest.as_str())),
        None => (None, None),
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO events (board, seq, frame, op_field, op_digest, version, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        change.seq as i64,
        &*change.frame,
        field,
        digest,
        change.version.map(|v| v as i64),
        now_ms()
    ])?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Copies a consistent snapshot of the database in `dir` to the new file `target`, while the
/// service may be writing to it (SQLite's online backup, in one step so that no write can
/// restart it).
pub fn backup(dir: &str, target: &str) -> Result<(), StoreError> {
    if Path::new(target).exists() {
        return Err(StoreError::Exists(target.into()));
    }
    let path = db_path(dir);
    let name = path.display().to_string();
    if !path.exists() {
        return Err(StoreError::Dir(
            dir.into(),
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no {DB_FILE} here")),
        ));
    }
    let source = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Sqlite(name.clone(), e))?;
    source
        .busy_timeout(Duration::from_secs(5))
        .map_err(|e| StoreError::Sqlite(name.clone(), e))?;
    let mut dest = Connection::open(target).map_err(|e| StoreError::Sqlite(target.into(), e))?;
    let copy = rusqlite::backup::Backup::new(&source, &mut dest)
        .map_err(|e| StoreError::Sqlite(target.into(), e))?;
    for _ in 0..100 {
        match copy.step(-1) {
            Ok(rusqlite::backup::StepResult::Done) => return Ok(()),
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(StoreError::Sqlite(name, e)),
        }
    }
    Err(StoreError::Sqlite(
        name,
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("the database stayed busy".into()),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> BoardKey {
        BoardKey::new("t", "b")
    }

    fn cell(seq: u64) -> Job {
        write(seq, 1)
    }

    fn write(seq: u64, oldest: u64) -> Job {
        Job::Write(Change {
            board: board(),
            seq,
            frame: ByteString::from(format!("{{\"seq\":{seq}}}")),
            op: None,
            version: Some(seq),
            edit: Edit::Cell("i".into(), "c".into(), format!("{{\"value\":{seq}}}")),
            oldest,
        })
    }

    fn loaded(outcome: &Done) -> &LoadedBoard {
        match outcome {
            Done::Ok(Some(board)) => board,
            other => panic!("expected a board, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_group_fails_what_was_made_before_it_and_stores_nothing_of_it() {
        let Store { mut conn, .. } = Store::open(":memory:", SyncMode::Normal).expect("a store");
        let mut writer = WriterState::default();
        let out = writer.turn(
            &mut conn,
            &[(1, Job::Load(board(), "e1".into())), (1, cell(1))],
        );
        assert!(matches!(out[1], Done::Ok(None)), "{out:?}");
        // The disk refuses: the group fails as a whole.
        conn.execute_batch("DROP TABLE cells").expect("dropped");
        let out = writer.turn(&mut conn, &[(1, cell(2)), (1, Job::Barrier)]);
        assert!(out.iter().all(|o| matches!(o, Done::Failed(_))), "{out:?}");
        conn.execute_batch(
            "CREATE TABLE cells (board INTEGER NOT NULL, item TEXT NOT NULL, col TEXT NOT NULL,
             body TEXT NOT NULL, PRIMARY KEY (board, item, col)) WITHOUT ROWID",
        )
        .expect("created");
        // Jobs the broker made before it heard of the failure build on a state never stored.
        let out = writer.turn(
            &mut conn,
            &[(1, cell(3)), (2, Job::Load(board(), "e2".into()))],
        );
        assert!(matches!(out[0], Done::Failed(_)), "{out:?}");
        let board = loaded(&out[1]);
        assert_eq!((board.seq, board.epoch.as_str()), (1, "e1"));
        assert_eq!(board.events.len(), 1);
        assert!(board.cells.is_empty(), "the table was made again, empty");
    }

    #[test]
    fn the_stored_log_is_trimmed_in_batches() {
        let Store { mut conn, .. } = Store::open(":memory:", SyncMode::Normal).expect("a store");
        let mut writer = WriterState::default();
        writer.turn(&mut conn, &[(1, Job::Load(board(), "e".into()))]);
        for from in (1..=1500).step_by(100) {
            let group: Vec<_> = (from..from + 100)
                .map(|seq| (1, write(seq, seq.saturating_sub(99).max(1))))
                .collect();
            writer.turn(&mut conn, &group);
        }
        let out = writer.turn(&mut conn, &[(1, Job::Load(board(), "x".into()))]);
        let board = loaded(&out[0]);
        assert_eq!(board.seq, 1500);
        // Trimmed once past 1,000 kept too many: to seq 1,001 and no further.
        assert_eq!(board.events.first().map(|e| e.seq), Some(1001));
        assert_eq!(board.events.len(), 500);
    }

    #[test]
    fn the_wal_starts_over_while_the_checkpointer_copies_beside_a_busy_writer() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let dir = dir.path().to_str().expect("a UTF-8 path").to_owned();
        let Store { mut conn, file, .. } = Store::open(&dir, SyncMode::Normal).expect("a store");
        let (path, level) = file.expect("a file");
        let nudge = start_checkpointer(&path, level).expect("a checkpointer");
        let mut writer = WriterState::default();
        writer.turn(&mut conn, &[(1, Job::Load(board(), "e".into()))]);
        // About 160 MiB of frames, commit after commit as the writer thread makes them: each
        // group a page-sized value in each of 20 cells.
        let filler = "x".repeat(4000);
        let mut seq = 0;
        for _ in 0..2000 {
            let group: Vec<_> = (0..20)
                .map(|c| {
                    seq += 1;
                    let edit = Edit::Cell("i".into(), format!("c{c}"), filler.clone());
                    let Job::Write(change) = write(seq, 1) else {
                        unreachable!()
                    };
                    (1, Job::Write(Change { edit, ..change }))
                })
                .collect();
            let out = writer.turn(&mut conn, &group);
            assert!(out.iter().all(|o| matches!(o, Done::Ok(None))), "{out:?}");
            let _ = nudge.try_send(());
        }
        let wal = std::fs::metadata(path.with_extension("db-wal")).expect("the WAL");
        // The WAL's file keeps its largest size: the writer's own checkpoint starts at 1,000
        // frames (4 MiB) and finishes what the checkpointer began (with the writer's turned
        // off, the WAL ends at 30 MiB and more).
        assert!(wal.len() < 16 << 20, "the WAL grew to {} bytes", wal.len());
    }
}
