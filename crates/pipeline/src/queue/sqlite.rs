//! The embedded work queue: a `jobs` table in the metadata SQLite file.
//!
//! A row is one queued job. `pull` leases rows in one `BEGIN IMMEDIATE`
//! transaction — a random lease token, `attempts + 1`, and
//! `available_at_ms = leased_until_ms = now + lease` — so two pullers (in
//! this process or another) never lease the same row, and a row whose
//! holder died becomes deliverable again when its lease runs out, with no
//! sweeper: "deliverable" is just `available_at_ms <= now`, one range of
//! the `jobs_available` index, whether the row is new, waiting out a retry
//! delay, or was leased by a worker that is gone.
//!
//! Settling a delivery (`ack`, `retry`, `release`, `dead`) matches the row
//! on its id *and* the lease token: a worker whose lease ran out and whose
//! job went to another worker settles nothing (its `ack` is a no-op), so
//! the new holder's delivery is not lost under it.
//!
//! Waiting pullers wake on a [`Notify`] when this process pushes or hands
//! a job back, and poll every [`POLL`] for jobs pushed by other processes
//! (the API pushes, the workers pull) or coming out of a retry delay. The
//! poll is a read on the store's reader connection; the write lock is only
//! taken when something is deliverable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::{oneshot, Notify};

use super::{Delivery, Handle, QueueError, QueueResult, QueueSettings};
use crate::job::{DeadJob, Job};
use crate::photo::now_ms;
use crate::store::sqlite::{db_err, SqliteStore};
use crate::store::{StoreError, StoreResult};

/// How often a waiting `pull` looks for jobs it was not told about.
const POLL: Duration = Duration::from_millis(40);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    available_at_ms INTEGER NOT NULL,
    leased_until_ms INTEGER,
    lease           TEXT,
    created_ms      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_available ON jobs (available_at_ms);
";

/// What settling a delivery needs: the row and the lease it was delivered
/// under.
#[derive(Debug)]
pub struct SqliteHandle {
    id: String,
    lease: String,
}

/// The job table. Cheap to clone: the clones share the store's connections
/// and the wake-up for waiting pullers.
///
/// `settings.max_deliver` is not enforced here: a job past it is still
/// delivered, with its true `attempt`, and the worker dead-letters it
/// without running it. Withholding it instead would leave it in the table
/// for ever, counted in `depth` and never dead-lettered, if the worker that
/// got its last delivery died before settling it.
#[derive(Clone)]
pub struct SqliteQueue {
    store: SqliteStore,
    settings: QueueSettings,
    pushed: Arc<Notify>,
}

impl SqliteQueue {
    /// Creates the job table in `store`'s file if missing.
    pub async fn open(store: &SqliteStore, settings: QueueSettings) -> QueueResult<SqliteQueue> {
        store
            .write(|conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db_err)?;
                tx.execute_batch(SCHEMA).map_err(db_err)?;
                tx.commit().map_err(db_err)
            })
            .await
            .map_err(queue_err)?;
        Ok(SqliteQueue {
            store: store.clone(),
            settings,
            pushed: Arc::new(Notify::new()),
        })
    }

    pub async fn push(&self, job: &Job) -> QueueResult<()> {
        let id = job.id.clone();
        let body = serde_json::to_string(job)
            .map_err(|e| QueueError::Backend(format!("serialising job {}: {e}", job.id)))?;
        self.store
            .write(move |conn| {
                let now = now_ms();
                // OR IGNORE: a job id already queued (waiting, leased or
                // backing off) stays as it is, attempts and all.
                conn.execute(
                    "INSERT OR IGNORE INTO jobs \
                     (id, body, attempts, available_at_ms, leased_until_ms, lease, created_ms) \
                     VALUES (?1, ?2, 0, ?3, NULL, NULL, ?3)",
                    params![id, body, now],
                )
                .map_err(db_err)
            })
            .await
            .map_err(queue_err)?;
        self.pushed.notify_waiters();
        Ok(())
    }

    /// Cancel-safe: a `pull` dropped while it waits loses nothing, and one
    /// dropped after its rows were leased hands them back (see [`Leasing`]).
    pub async fn pull(&self, max: usize, wait: Duration) -> QueueResult<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so a push between the look and the
            // wait still wakes us.
            let pushed = self.pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            let got = self.lease(max).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout(left.min(POLL), pushed).await;
        }
    }

    pub async fn ack(&self, delivery: Delivery) -> QueueResult<()> {
        let h = handle(delivery)?;
        self.settle(h, "DELETE FROM jobs WHERE id = ?1 AND lease = ?2", None)
            .await
    }

    pub async fn retry(&self, delivery: Delivery, after: Duration) -> QueueResult<()> {
        let h = handle(delivery)?;
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let at = now_ms().saturating_add(after_ms);
        self.settle(
            h,
            "UPDATE jobs SET lease = NULL, leased_until_ms = NULL, available_at_ms = ?3 \
             WHERE id = ?1 AND lease = ?2",
            Some(at),
        )
        .await?;
        if after.is_zero() {
            self.pushed.notify_waiters();
        }
        Ok(())
    }

    /// The delivery does not count: the worker never ran the job.
    pub async fn release(&self, delivery: Delivery) -> QueueResult<()> {
        let h = handle(delivery)?;
        self.settle(h, RELEASE, Some(now_ms())).await?;
        self.pushed.notify_waiters();
        Ok(())
    }

    /// The job leaves the queue; the caller has recorded it as dead in the
    /// metadata store (the same file), which is the dead-letter list.
    pub async fn dead(&self, delivery: Delivery, _dead: &DeadJob) -> QueueResult<()> {
        let h = handle(delivery)?;
        self.settle(h, "DELETE FROM jobs WHERE id = ?1 AND lease = ?2", None)
            .await
    }

    pub async fn depth(&self) -> QueueResult<u64> {
        self.store
            .read(|conn| {
                conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get::<_, i64>(0))
                    .map_err(db_err)
            })
            .await
            .map(|n| n as u64)
            .map_err(queue_err)
    }

    /// Runs one settling statement (`?1` the id, `?2` the lease, `?3` the
    /// time if given). No row matching is not an error: the lease ran out
    /// and the job is someone else's now.
    async fn settle(&self, h: SqliteHandle, sql: &'static str, at: Option<i64>) -> QueueResult<()> {
        self.store
            .write(move |conn| {
                let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
                match at {
                    Some(at) => stmt.execute(params![h.id, h.lease, at]),
                    None => stmt.execute(params![h.id, h.lease]),
                }
                .map_err(db_err)?;
                Ok(())
            })
            .await
            .map_err(queue_err)
    }

    /// One look: leases up to `max` deliverable rows, or none.
    async fn lease(&self, max: usize) -> QueueResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // A read first: an idle worker polling an empty queue must not take
        // the write lock every POLL, which the API's uploads are waiting on.
        let now = now_ms();
        let any = self
            .store
            .read(move |conn| {
                conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE available_at_ms <= ?1)",
                    params![now],
                    |r| r.get::<_, bool>(0),
                )
                .map_err(db_err)
            })
            .await
            .map_err(queue_err)?;
        if !any {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        let mut leasing = Leasing {
            rx,
            store: self.store.clone(),
        };
        let lease = self.settings.lease;
        self.store
            .write(move |conn| lease_to(conn, max, lease, tx))
            .await
            .map_err(queue_err)?;
        let leased = leasing.rx.try_recv().unwrap_or_default();
        Ok(leased
            .into_iter()
            .map(|l| Delivery {
                job: l.job,
                attempt: l.attempt,
                handle: Handle::Sqlite(SqliteHandle {
                    id: l.id,
                    lease: l.lease,
                }),
            })
            .collect())
    }
}

/// Clears the lease, makes the row deliverable at `?3`, and takes back the
/// attempt the delivery counted.
const RELEASE: &str =
    "UPDATE jobs SET lease = NULL, leased_until_ms = NULL, available_at_ms = ?3, \
     attempts = MAX(attempts - 1, 0) WHERE id = ?1 AND lease = ?2";

/// A row leased by one `pull`, not yet handed to its caller.
struct Leased {
    id: String,
    lease: String,
    attempt: u32,
    job: Job,
}

/// The receiving end of one lease transaction. `pull` can be dropped at
/// any await (a worker's `select!` on shutdown), including after the rows
/// were leased and before they were returned; they would then sit leased,
/// with an attempt counted, until the lease ran out. Whichever side sees
/// the drop hands them back: the blocking task if the receiver is gone
/// when it sends, or this guard if the rows arrived and were never taken.
struct Leasing {
    rx: oneshot::Receiver<Vec<Leased>>,
    store: SqliteStore,
}

impl Drop for Leasing {
    fn drop(&mut self) {
        // After close() a send fails, so the rows are either here now or
        // handed back by the sender: never both, never neither.
        self.rx.close();
        let Ok(leased) = self.rx.try_recv() else {
            return;
        };
        if leased.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            rt.spawn(async move {
                // Best effort: if this fails the leases run out as usual.
                let _ = store.write(move |conn| hand_back(conn, &leased)).await;
            });
        }
    }
}

/// The leasing transaction.
fn lease_rows(conn: &mut Connection, max: usize, lease: Duration) -> StoreResult<Vec<Leased>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let now = now_ms();
    let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let rows = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, body, attempts FROM jobs \
                 WHERE available_at_ms <= ?1 \
                 AND (leased_until_ms IS NULL OR leased_until_ms <= ?1) \
                 ORDER BY available_at_ms, rowid LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![now, i64::try_from(max).unwrap_or(i64::MAX)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                ))
            })
            .map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?
    };
    let mut leased = Vec::with_capacity(rows.len());
    for (id, body, attempts) in rows {
        let Ok(job) = serde_json::from_str::<Job>(&body) else {
            // A job this build cannot read (written by a newer version in a
            // rolling upgrade, or edited by hand): not delivered, not
            // counted, not deleted — moved out of the way for a lease
            // period so it does not take a slot in every pull, and left for
            // a worker that can read it.
            tx.execute(
                "UPDATE jobs SET available_at_ms = ?2 WHERE id = ?1",
                params![id, until],
            )
            .map_err(db_err)?;
            continue;
        };
        let token = lease_token();
        let attempt = attempts.saturating_add(1);
        tx.execute(
            "UPDATE jobs SET lease = ?2, leased_until_ms = ?3, available_at_ms = ?3, \
             attempts = ?4 WHERE id = ?1",
            params![id, token, until, attempt],
        )
        .map_err(db_err)?;
        leased.push(Leased {
            id,
            lease: token,
            attempt,
            job,
        });
    }
    tx.commit().map_err(db_err)?;
    Ok(leased)
}

/// Leases rows and sends them to the `pull` that asked, or, if it was
/// dropped meanwhile, gives them straight back.
fn lease_to(
    conn: &mut Connection,
    max: usize,
    lease: Duration,
    to: oneshot::Sender<Vec<Leased>>,
) -> StoreResult<()> {
    let leased = lease_rows(conn, max, lease)?;
    if let Err(leased) = to.send(leased) {
        hand_back(conn, &leased)?;
    }
    Ok(())
}

/// Releases rows leased by a `pull` that was dropped.
fn hand_back(conn: &mut Connection, leased: &[Leased]) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    {
        let mut stmt = tx.prepare_cached(RELEASE).map_err(db_err)?;
        let now = now_ms();
        for l in leased {
            stmt.execute(params![l.id, l.lease, now]).map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

/// A lease token unique across the processes sharing the file: the process
/// id, the time and a counter. Not a secret — it only has to differ from
/// every other lease of the same row.
fn lease_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn handle(delivery: Delivery) -> QueueResult<SqliteHandle> {
    match delivery.handle {
        Handle::Sqlite(h) => Ok(h),
        Handle::Nats(_) => Err(QueueError::Backend(
            "a NATS delivery was settled on the SQLite queue".into(),
        )),
    }
}

fn queue_err(e: StoreError) -> QueueError {
    match e {
        StoreError::Unavailable(m) => QueueError::Unavailable(m),
        other => QueueError::Backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(name: &str) -> (SqliteQueue, std::path::PathBuf) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "darkroom-test-queue-{name}-{}-{nanos}",
            std::process::id()
        ));
        let store = SqliteStore::open(&dir.join("q.db")).await.unwrap();
        let settings = QueueSettings {
            lease: Duration::from_secs(30),
            max_deliver: 3,
        };
        (SqliteQueue::open(&store, settings).await.unwrap(), dir)
    }

    async fn attempts(q: &SqliteQueue) -> Vec<u32> {
        let got = q.pull(10, Duration::from_secs(2)).await.unwrap();
        let mut attempts: Vec<u32> = got.iter().map(|d| d.attempt).collect();
        attempts.sort_unstable();
        attempts
    }

    /// A pull dropped after its rows were leased but before they reached
    /// it: the guard gives them back, uncounted.
    #[tokio::test]
    async fn leases_a_dropped_pull_never_took_are_handed_back() {
        let (q, dir) = open("guard").await;
        q.push(&Job::process("a", 1)).await.unwrap();
        q.push(&Job::process("b", 1)).await.unwrap();
        let (tx, rx) = oneshot::channel();
        let lease = q.settings.lease;
        q.store
            .write(move |c| lease_to(c, 10, lease, tx))
            .await
            .unwrap();
        drop(Leasing {
            rx,
            store: q.store.clone(),
        });
        // The guard hands back on a spawned task; the pull waits for it.
        assert_eq!(attempts(&q).await, vec![1, 1]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A pull dropped before the lease transaction finished: the blocking
    /// side finds no one to send to and gives the rows back itself.
    #[tokio::test]
    async fn leases_for_a_pull_already_gone_are_handed_back() {
        let (q, dir) = open("sender").await;
        q.push(&Job::process("a", 1)).await.unwrap();
        let (tx, rx) = oneshot::channel();
        drop(rx);
        let lease = q.settings.lease;
        q.store
            .write(move |c| lease_to(c, 10, lease, tx))
            .await
            .unwrap();
        assert_eq!(attempts(&q).await, vec![1]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Past max_deliver a job is still delivered, with its true attempt,
    /// for the worker to dead-letter.
    #[tokio::test]
    async fn deliveries_past_max_deliver_still_come_with_their_attempt() {
        let (q, dir) = open("max").await;
        q.push(&Job::process("a", 1)).await.unwrap();
        for want in 1..=5 {
            let mut got = q.pull(1, Duration::from_secs(2)).await.unwrap();
            assert_eq!(got.len(), 1);
            let d = got.remove(0);
            assert_eq!(d.attempt, want);
            q.retry(d, Duration::ZERO).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
