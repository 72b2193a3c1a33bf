//! The scale-out work queue and event stream: NATS JetStream.
//!
//! Three streams per prefix (`my-app` names streams `MY_APP_*`, subjects
//! `my-app.*`):
//!
//! - `<PREFIX>_JOBS`, subjects `<prefix>.jobs.<kind>`: a work-queue stream
//!   (a message leaves it when acked or terminated) with one durable pull
//!   consumer, `workers`, shared by every worker process. Explicit acks,
//!   `ack_wait` = the lease, `max_deliver` from the settings. Jobs are
//!   published with `Nats-Msg-Id` = the job id, so the same job pushed twice
//!   within the two-minute duplicate window is stored once.
//! - `<PREFIX>_DEAD`, subjects `<prefix>.dead.<kind>`: every dead-lettered
//!   job, for operators and alerting (the metadata store's list is the one
//!   the API serves and retries from).
//! - `<PREFIX>_EVENTS`, subjects `<prefix>.events.<type>`: the event log.
//!   The metadata store writes events to its outbox in the same transaction
//!   as the change; [`run_relay`] moves them here, deduplicated by event id.
//!
//! The client reconnects by itself after the server restarts (streams are
//! file-backed, so jobs survive); while it is disconnected, `pull` answers
//! `Unavailable` rather than queueing a pull request that would deliver to
//! nobody once the connection is back.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{
    CreateStreamErrorKind, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::{Acker, PublishMessage};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, ConnectOptions};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Delivery, Handle, QueueError, QueueResult, QueueSettings};
use crate::event::{Event, LoggedEvent};
use crate::job::{DeadJob, Job};
use crate::store::MetaStore;

mod events;

use events::EventsInner;
pub use events::{run_relay, NatsEvents};

/// The durable consumer every worker pulls from.
const CONSUMER: &str = "workers";

/// Jobs (and events) with the same id published within this window are
/// stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Deliveries outstanding (leased, or waiting out a retry delay) before the
/// server stops handing out more. Far above what a fleet of workers holds,
/// but bounded, so a bug that never settles cannot pin the whole stream.
const MAX_ACK_PENDING: i64 = 10_000;

/// Rows the relay moves per round.
const RELAY_BATCH: usize = 256;

/// Subject and stream names for one prefix.
#[derive(Debug, Clone)]
struct Names {
    /// `<prefix>` as configured: the subjects' first token.
    subject: String,
    /// `<PREFIX>`: upper case, `-` as `_` (stream names allow neither `.`
    /// nor, by convention, lower case).
    stream: String,
}

impl Names {
    fn new(prefix: &str) -> QueueResult<Names> {
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(QueueError::Config(format!(
                "queue.prefix {prefix:?}: use letters, digits, '_' or '-' (it names streams and subjects)"
            )));
        }
        Ok(Names {
            subject: prefix.to_string(),
            stream: prefix.to_ascii_uppercase().replace('-', "_"),
        })
    }

    fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.stream)
    }

    fn dead_stream(&self) -> String {
        format!("{}_DEAD", self.stream)
    }

    fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream)
    }
}

/// What settles one delivery: its ack subject. Boxed: the acker carries a
/// JetStream context, and `Handle` should stay the size of its SQLite twin.
pub struct NatsHandle {
    acker: Box<Acker>,
    stream_sequence: u64,
    /// JetStream's delivery count for this delivery.
    delivered: u32,
}

impl fmt::Debug for NatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsHandle")
            .field("stream_sequence", &self.stream_sequence)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// The newest delivery of each job this process has pulled, so that a
/// stale delivery is not settled.
///
/// JetStream (2.9) settles by stream sequence alone: a worker whose lease
/// ran out, acking after the job was redelivered, would remove the job from
/// under the worker now running it (and a late NAK would reschedule it).
/// The server offers no conditional ack, so this process remembers the
/// highest delivery count it has seen per message and drops settlements
/// of older ones. It cannot see deliveries to other processes; there a
/// stale ack still removes the job, which is harmless in practice (the
/// stale worker did finish the job, and stages are idempotent).
#[derive(Default)]
struct Newest {
    by_sequence: HashMap<u64, (u32, Instant)>,
}

impl Newest {
    /// Entries kept before old ones are pruned.
    const PRUNE_ABOVE: usize = 4096;

    fn saw(&mut self, sequence: u64, delivered: u32, keep: Duration) {
        let now = Instant::now();
        let entry = self.by_sequence.entry(sequence).or_insert((delivered, now));
        if delivered >= entry.0 {
            *entry = (delivered, now);
        }
        if self.by_sequence.len() > Self::PRUNE_ABOVE {
            // Jobs settled elsewhere, or dropped and never seen again.
            self.by_sequence
                .retain(|_, (_, at)| now.duration_since(*at) < keep);
        }
    }

    fn is_stale(&self, sequence: u64, delivered: u32) -> bool {
        self.by_sequence
            .get(&sequence)
            .is_some_and(|(newest, _)| *newest > delivered)
    }

    /// The job is done with (acked, terminated) by its newest delivery.
    fn settled(&mut self, sequence: u64, delivered: u32) {
        if self
            .by_sequence
            .get(&sequence)
            .is_some_and(|(newest, _)| *newest <= delivered)
        {
            self.by_sequence.remove(&sequence);
        }
    }
}

struct QueueInner {
    /// For messages (the URL as configured; NATS URLs carry credentials
    /// rarely, and the point is to say which server).
    url: String,
    client: Client,
    js: jetstream::Context,
    names: Names,
    consumer: PullConsumer,
    events: NatsEvents,
    newest: Mutex<Newest>,
    /// How long [`Newest`] remembers a delivery: past every redelivery the
    /// lease and `max_deliver` allow, and at least an hour for long retry
    /// delays.
    remember: Duration,
}

/// The JetStream queue. Clones share the connection.
#[derive(Clone)]
pub struct NatsQueue {
    inner: Arc<QueueInner>,
}

impl NatsQueue {
    /// Connects, then creates the three streams and the `workers` consumer,
    /// or updates them to this configuration (a changed lease or
    /// `max_deliver` takes effect on the next start).
    ///
    /// The first connection is not retried in the background: a server that
    /// cannot be reached is an error naming the URL, at start-up, rather
    /// than a worker that waits silently. Later disconnections are retried
    /// for ever by the client.
    pub async fn open(url: &str, prefix: &str, settings: QueueSettings) -> QueueResult<NatsQueue> {
        let names = Names::new(prefix)?;
        let client = ConnectOptions::new()
            .name("darkroom pipeline")
            .connect(url)
            .await
            .map_err(|e| QueueError::Unavailable(format!("connecting to NATS at {url}: {e}")))?;
        let js = jetstream::new(client.clone());
        let create = |config: stream::Config| {
            let js = js.clone();
            async move {
                let name = config.name.clone();
                js.create_or_update_stream(config)
                    .await
                    .map_err(|e| stream_error(url, &name, e))
            }
        };
        // Jobs are a work queue (a message leaves when acked); dead letters
        // and events are kept (limits retention).
        for (name, kind, retention) in [
            (names.jobs_stream(), "jobs", RetentionPolicy::WorkQueue),
            (names.dead_stream(), "dead", RetentionPolicy::Limits),
            (names.events_stream(), "events", RetentionPolicy::Limits),
        ] {
            create(stream::Config {
                name,
                subjects: vec![format!("{}.{kind}.>", names.subject)],
                retention,
                storage: StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await?;
        }
        let consumer: PullConsumer = js
            .create_consumer_on_stream(
                pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    description: Some("darkroom pipeline workers".to_string()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: settings.lease,
                    max_deliver: i64::from(settings.max_deliver.max(1)),
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
                names.jobs_stream(),
            )
            .await
            .map_err(|e| {
                api_error(
                    url,
                    &format!("creating consumer {CONSUMER} on {}", names.jobs_stream()),
                    e,
                )
            })?;
        let events = NatsEvents {
            inner: Arc::new(EventsInner {
                url: url.to_string(),
                client: client.clone(),
                js: js.clone(),
                stream: names.events_stream(),
                subject: format!("{}.events", names.subject),
            }),
        };
        Ok(NatsQueue {
            inner: Arc::new(QueueInner {
                url: url.to_string(),
                client,
                js,
                names,
                consumer,
                events,
                newest: Mutex::new(Newest::default()),
                remember: (settings.lease * settings.max_deliver.saturating_add(1))
                    .max(Duration::from_secs(3600)),
            }),
        })
    }

    /// The `<prefix>_EVENTS` stream, where the event log is read (and the
    /// relay publishes).
    pub fn events(&self) -> NatsEvents {
        self.inner.events.clone()
    }

    /// Publishes the job and waits for JetStream's ack: once this returns
    /// the job is on disk on the server. A duplicate (same id within the
    /// window) is acked too, and not stored again.
    pub async fn push(&self, job: &Job) -> QueueResult<()> {
        let payload = serde_json::to_vec(job)
            .map_err(|e| QueueError::Backend(format!("encoding job {}: {e}", job.id)))?;
        let subject = format!("{}.jobs.{}", self.inner.names.subject, job.kind.token());
        let what = format!("queueing job {}", job.id);
        self.publish_acked(subject, payload, job.id.clone(), &what)
            .await
    }

    /// Publishes with `Nats-Msg-Id: id` and waits for JetStream's ack.
    async fn publish_acked(
        &self,
        subject: String,
        payload: Vec<u8>,
        id: String,
        what: &str,
    ) -> QueueResult<()> {
        let ack = self
            .inner
            .js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id(id),
            )
            .await
            .map_err(|e| publish_error(&self.inner.url, what, e))?;
        ack.await
            .map_err(|e| publish_error(&self.inner.url, what, e))?;
        Ok(())
    }

    /// One fetch from the `workers` consumer: the server answers as soon as
    /// it has any jobs (up to `max`), or after `wait` with none. A message
    /// that is not a job (published by hand, or by an incompatible version)
    /// is terminated so it is not redelivered for ever, and skipped.
    pub async fn pull(&self, max: usize, wait: Duration) -> QueueResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.check_connected()?;
        let mut fetch = self.inner.consumer.fetch().max_messages(max);
        // Without `expires` the fetch answers at once; with it, the server
        // holds the request until the first message or the deadline.
        if wait >= Duration::from_millis(1) {
            fetch = fetch.expires(wait);
        }
        let mut batch = fetch.messages().await.map_err(|e| {
            QueueError::Unavailable(format!("pulling jobs from NATS at {}: {e}", self.inner.url))
        })?;
        let mut deliveries = Vec::new();
        while let Some(item) = batch.next().await {
            let message = match item {
                Ok(m) => m,
                // A status error ends the batch (e.g. the consumer is at
                // max_ack_pending); keep what arrived before it.
                Err(e) if !deliveries.is_empty() => {
                    eprintln!("darkroom queue: fetch ended early: {e}");
                    break;
                }
                Err(e) => {
                    return Err(QueueError::Backend(format!(
                        "pulling jobs from NATS at {}: {e}",
                        self.inner.url
                    )))
                }
            };
            let (attempt, stream_sequence) = match message.info() {
                Ok(info) => (
                    u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX),
                    info.stream_sequence,
                ),
                Err(e) => {
                    eprintln!("darkroom queue: a delivery without JetStream metadata: {e}");
                    continue;
                }
            };
            let (message, acker) = message.split();
            match serde_json::from_slice::<Job>(&message.payload) {
                Ok(job) => {
                    self.newest()
                        .saw(stream_sequence, attempt, self.inner.remember);
                    deliveries.push(Delivery {
                        job,
                        attempt,
                        handle: Handle::Nats(NatsHandle {
                            acker: Box::new(acker),
                            stream_sequence,
                            delivered: attempt,
                        }),
                    })
                }
                Err(e) => {
                    eprintln!(
                        "darkroom queue: message {stream_sequence} on {} is not a job ({e}); dropping it",
                        message.subject
                    );
                    if let Err(e) = acker.ack_with(AckKind::Term).await {
                        eprintln!("darkroom queue: terminating message {stream_sequence}: {e}");
                    }
                }
            }
        }
        Ok(deliveries)
    }

    /// Acked and confirmed by the server (a plain ack is fire-and-forget:
    /// lost on a dropped connection, the job would run again).
    pub async fn ack(&self, delivery: Delivery) -> QueueResult<()> {
        self.settle(delivery, AckKind::Ack, "acknowledging").await
    }

    /// A NAK with a delay: the server redelivers after `after`, counting the
    /// delivery.
    pub async fn retry(&self, delivery: Delivery, after: Duration) -> QueueResult<()> {
        self.settle(delivery, AckKind::Nak(Some(after)), "retrying")
            .await
    }

    /// A NAK without delay: redelivered now, to any worker. (JetStream
    /// counts this delivery too; the worker's limit has a spare one.)
    pub async fn release(&self, delivery: Delivery) -> QueueResult<()> {
        self.settle(delivery, AckKind::Nak(None), "releasing").await
    }

    /// Publishes the dead job to `<prefix>.dead.<kind>` (waiting for its
    /// ack), then terminates the delivery, which removes it from the
    /// work-queue stream. If the publish fails the delivery is left alone:
    /// it is redelivered and dead-lettered again rather than lost.
    pub async fn dead(&self, delivery: Delivery, dead: &DeadJob) -> QueueResult<()> {
        if let Handle::Nats(h) = &delivery.handle {
            if self.newest().is_stale(h.stream_sequence, h.delivered) {
                // Another worker holds the job now; it decides its fate.
                return Ok(());
            }
        }
        let payload = serde_json::to_vec(dead)
            .map_err(|e| QueueError::Backend(format!("encoding dead job {}: {e}", dead.job.id)))?;
        let subject = format!(
            "{}.dead.{}",
            self.inner.names.subject,
            dead.job.kind.token()
        );
        let what = format!("dead-lettering job {}", dead.job.id);
        let id = format!("{}:{}", dead.job.id, dead.attempts);
        self.publish_acked(subject, payload, id, &what).await?;
        self.settle(delivery, AckKind::Term, "terminating").await
    }

    /// Jobs the consumer has yet to deliver plus those delivered and not
    /// settled (leased, or NAKed and waiting out the delay). A job past
    /// `max_deliver` that nobody terminated stays in the stream but is in
    /// neither count: the server will never deliver it again.
    pub async fn depth(&self) -> QueueResult<u64> {
        let info = self
            .inner
            .consumer
            .get_info()
            .await
            .map_err(|e| api_error(&self.inner.url, "reading the queue depth", e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    async fn settle(&self, delivery: Delivery, kind: AckKind, what: &str) -> QueueResult<()> {
        let Handle::Nats(handle) = delivery.handle else {
            return Err(QueueError::Backend(format!(
                "{what} job {}: the delivery is not from the NATS queue",
                delivery.job.id
            )));
        };
        let (sequence, delivered) = (handle.stream_sequence, handle.delivered);
        if self.newest().is_stale(sequence, delivered) {
            // Redelivered since (the lease ran out): the newer delivery
            // settles the job, not this one.
            return Ok(());
        }
        handle.acker.double_ack_with(kind).await.map_err(|e| {
            QueueError::Unavailable(format!(
                "{what} job {} (message {sequence}) on NATS at {}: {e}",
                delivery.job.id, self.inner.url
            ))
        })?;
        if matches!(kind, AckKind::Ack | AckKind::Term) {
            self.newest().settled(sequence, delivered);
        }
        Ok(())
    }

    fn newest(&self) -> std::sync::MutexGuard<'_, Newest> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.inner
            .newest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_connected(&self) -> QueueResult<()> {
        match self.inner.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(QueueError::Unavailable(format!(
                "NATS at {}: {}; reconnecting",
                self.inner.url,
                match state {
                    State::Pending => "connecting",
                    _ => "disconnected",
                }
            ))),
        }
    }
}

/// Deletes the jobs, dead-letter and event streams of `prefix`: for tests
/// and benchmarks that made streams of their own, and for resetting a
/// staging deployment. Streams already gone are not an error.
pub async fn delete_streams(url: &str, prefix: &str) -> QueueResult<()> {
    let names = Names::new(prefix)?;
    let client = async_nats::connect(url)
        .await
        .map_err(|e| QueueError::Unavailable(format!("connecting to {url}: {e}")))?;
    let js = jetstream::new(client);
    for stream in [
        names.jobs_stream(),
        names.dead_stream(),
        names.events_stream(),
    ] {
        if let Err(e) = js.delete_stream(&stream).await {
            if js.get_stream(&stream).await.is_ok() {
                return Err(api_error(url, &format!("deleting stream {stream}"), e));
            }
        }
    }
    Ok(())
}

/// Transport trouble (timeouts, a broken connection, no stream answering
/// while JetStream restarts, too many acks in flight) is worth retrying;
/// a rejected message is not.
fn publish_error(url: &str, what: &str, e: PublishError) -> QueueError {
    let message = format!("{what} on NATS at {url}: {e}");
    match e.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => QueueError::Unavailable(message),
        _ => QueueError::Backend(message),
    }
}

fn stream_error(
    url: &str,
    name: &str,
    e: async_nats::jetstream::context::CreateStreamError,
) -> QueueError {
    let message = format!("creating stream {name} on NATS at {url}: {e}");
    match e.kind() {
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => {
            QueueError::Unavailable(format!("{message} (is JetStream enabled on the server?)"))
        }
        _ => QueueError::Backend(message),
    }
}

/// A JetStream API request that failed: a timeout means the server (or its
/// JetStream) is not answering; anything else is the server's answer.
fn api_error(url: &str, what: &str, e: impl fmt::Display) -> QueueError {
    let text = e.to_string();
    let message = format!("{what} on NATS at {url}: {text}");
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("no responders") || lower.contains("timeout") {
        QueueError::Unavailable(message)
    } else {
        QueueError::Backend(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let n = Names::new("my-app_2").unwrap();
        assert_eq!(n.jobs_stream(), "MY_APP_2_JOBS");
        assert_eq!(n.dead_stream(), "MY_APP_2_DEAD");
        assert_eq!(n.events_stream(), "MY_APP_2_EVENTS");
        assert_eq!(n.subject, "my-app_2");
        assert!(matches!(Names::new("a.b"), Err(QueueError::Config(_))));
        assert!(matches!(Names::new(""), Err(QueueError::Config(_))));
    }

    #[test]
    fn only_the_newest_delivery_settles() {
        let keep = Duration::from_secs(60);
        let mut newest = Newest::default();
        newest.saw(7, 1, keep);
        assert!(!newest.is_stale(7, 1));
        newest.saw(7, 2, keep);
        assert!(newest.is_stale(7, 1));
        assert!(!newest.is_stale(7, 2));
        // A late report of an older delivery changes nothing.
        newest.saw(7, 1, keep);
        assert!(newest.is_stale(7, 1));
        // Settled by an old delivery: remembered still; by the newest: gone.
        newest.settled(7, 1);
        assert!(newest.is_stale(7, 1));
        newest.settled(7, 2);
        assert!(!newest.is_stale(7, 1));
        assert!(!newest.is_stale(99, 1), "unknown deliveries are not stale");
    }
}
