//! The event stream: [`NatsEvents`] reads `<PREFIX>_EVENTS`, and
//! [`run_relay`] moves the metadata store's outbox into it.

use super::*;

pub(super) struct EventsInner {
    pub(super) url: String,
    pub(super) client: Client,
    pub(super) js: jetstream::Context,
    pub(super) stream: String,
    /// `<prefix>.events`; an event goes to `<prefix>.events.<type>`.
    pub(super) subject: String,
}

/// Reads (and, for the relay, writes) the `<prefix>_EVENTS` stream.
#[derive(Clone)]
pub struct NatsEvents {
    pub(super) inner: Arc<EventsInner>,
}

impl NatsEvents {
    /// Events with stream sequence `> after`, ascending, at most `limit`.
    ///
    /// Each read is a short-lived consumer starting at `after + 1` (no
    /// acks, in memory, removed afterwards, and by the server if this
    /// process dies first): it delivers a batch in one round trip, skips
    /// gaps left by retention, and holds no state between reads. A message
    /// that is not an event (published by hand to the subjects) is skipped,
    /// so it cannot stall every reader behind it.
    pub async fn read(&self, after: u64, limit: usize) -> QueueResult<Vec<LoggedEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let stream = inner
            .js
            .get_stream_no_info(&inner.stream)
            .await
            .map_err(|e| api_error(&inner.url, &format!("opening stream {}", inner.stream), e))?;
        let deliver_policy = match after {
            0 => DeliverPolicy::All,
            n => DeliverPolicy::ByStartSequence {
                start_sequence: n.saturating_add(1),
            },
        };
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                deliver_policy,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| api_error(&inner.url, &format!("reading stream {}", inner.stream), e))?;
        let name = consumer.cached_info().name.clone();
        let available = consumer.cached_info().num_pending;
        let result = if available == 0 {
            Ok(Vec::new())
        } else {
            let want = usize::try_from(available).map_or(limit, |n| n.min(limit));
            self.fetch_events(&consumer, want).await
        };
        // Best effort: the inactivity threshold removes it anyway.
        let _ = stream.delete_consumer(&name).await;
        result
    }

    async fn fetch_events(
        &self,
        consumer: &PullConsumer,
        want: usize,
    ) -> QueueResult<Vec<LoggedEvent>> {
        let inner = &self.inner;
        let mut batch = consumer
            .fetch()
            .max_messages(want)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| {
                QueueError::Unavailable(format!(
                    "reading stream {} on NATS at {}: {e}",
                    inner.stream, inner.url
                ))
            })?;
        let mut events = Vec::with_capacity(want);
        while let Some(item) = batch.next().await {
            let message = item.map_err(|e| {
                QueueError::Backend(format!(
                    "reading stream {} on NATS at {}: {e}",
                    inner.stream, inner.url
                ))
            })?;
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                continue;
            };
            match serde_json::from_slice::<Event>(&message.payload) {
                Ok(event) => events.push(LoggedEvent { seq, event }),
                Err(e) => eprintln!(
                    "darkroom events: message {seq} on {} is not an event ({e}); skipping it",
                    message.subject
                ),
            }
        }
        Ok(events)
    }

    /// Publishes the events, each to `<prefix>.events.<type>` with
    /// `Nats-Msg-Id` = the event id, and waits for every ack. Publishing the
    /// same events again (a relay that died before deleting its rows, two
    /// relays at once) stores nothing new within the duplicate window.
    pub async fn publish(&self, events: &[LoggedEvent]) -> QueueResult<()> {
        match self.publish_prefix(events).await {
            (_, Some(e)) => Err(e),
            (_, None) => Ok(()),
        }
    }

    /// Publishes all (pipelined: every publish is sent before the first ack
    /// is awaited) and answers how many from the start were acked, with the
    /// first error. Only that prefix may be deleted from the outbox: what
    /// follows a failure is published again, in order, next time.
    async fn publish_prefix(&self, events: &[LoggedEvent]) -> (usize, Option<QueueError>) {
        let inner = &self.inner;
        let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(events.len());
        let mut error = None;
        for logged in events {
            let event = &logged.event;
            let payload = match serde_json::to_vec(event) {
                Ok(p) => p,
                Err(e) => {
                    error = Some(QueueError::Backend(format!(
                        "encoding event {}: {e}",
                        event.id
                    )));
                    break;
                }
            };
            let subject = format!("{}.{}", inner.subject, event.kind.name());
            match inner
                .js
                .send_publish(
                    subject,
                    PublishMessage::build()
                        .payload(payload.into())
                        .message_id(&event.id),
                )
                .await
            {
                Ok(ack) => pending.push(ack),
                Err(e) => {
                    error = Some(publish_error(
                        &inner.url,
                        &format!("publishing event {}", event.id),
                        e,
                    ));
                    break;
                }
            }
        }
        let mut acked = 0;
        let mut failed = false;
        for (i, ack) in pending.into_iter().enumerate() {
            match ack.await {
                Ok(_) if !failed => acked += 1,
                Ok(_) => {}
                Err(e) => {
                    if !failed {
                        failed = true;
                        let e = publish_error(
                            &inner.url,
                            &format!("publishing event {}", events[i].event.id),
                            e,
                        );
                        error = Some(e);
                    }
                }
            }
        }
        (acked, error)
    }

    /// The stream's last sequence number (0: empty).
    pub async fn head(&self) -> QueueResult<u64> {
        let inner = &self.inner;
        let mut stream =
            inner.js.get_stream(&inner.stream).await.map_err(|e| {
                api_error(&inner.url, &format!("opening stream {}", inner.stream), e)
            })?;
        let info = stream
            .info()
            .await
            .map_err(|e| api_error(&inner.url, &format!("reading stream {}", inner.stream), e))?;
        Ok(info.state.last_sequence)
    }

    /// The stream's name, `<PREFIX>_EVENTS`.
    pub fn stream_name(&self) -> &str {
        &self.inner.stream
    }

    /// Whether the connection is up (for the relay's messages).
    fn connected(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }
}

/// The outbox relay: moves events from the metadata store's outbox to the
/// `<prefix>_EVENTS` stream until `stop` turns true (or its sender is
/// dropped).
///
/// Each round reads up to 256 rows, publishes them, and deletes only the
/// rows JetStream acked — a row is never deleted unpublished, so an outage
/// of either side loses nothing. A crash between publish and delete
/// publishes again; so do several relays running at once (one per API or
/// worker process is fine): the stream drops the repeats by event id. An
/// empty outbox is polled every 100 ms.
///
/// Failures are written to stderr once per kind until the relay recovers
/// (and then once more, to say so), and retried with a backoff from 100 ms
/// to 5 s. It never panics.
pub async fn run_relay(store: MetaStore, events: NatsEvents, mut stop: watch::Receiver<bool>) {
    const IDLE: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut failing: Option<RelayFailure> = None;
    let mut backoff = IDLE;
    while !*stop.borrow() {
        match relay_round(&store, &events).await {
            Ok(moved) => {
                if let Some(kind) = failing.take() {
                    eprintln!("darkroom relay: {} again", kind.recovered());
                }
                backoff = IDLE;
                if moved < RELAY_BATCH && !pause(&mut stop, IDLE).await {
                    break;
                }
            }
            Err((kind, error)) => {
                if failing != Some(kind) {
                    let hint = if kind == RelayFailure::Publish && !events.connected() {
                        " (disconnected; the client is reconnecting)"
                    } else {
                        ""
                    };
                    eprintln!("darkroom relay: {}: {error}{hint}; retrying", kind.doing());
                    failing = Some(kind);
                }
                if !pause(&mut stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayFailure {
    Read,
    Publish,
    Delete,
}

impl RelayFailure {
    fn doing(self) -> &'static str {
        match self {
            RelayFailure::Read => "reading the event outbox",
            RelayFailure::Publish => "publishing events to NATS",
            RelayFailure::Delete => "deleting published events from the outbox",
        }
    }

    fn recovered(self) -> &'static str {
        match self {
            RelayFailure::Read => "reading the event outbox",
            RelayFailure::Publish => "publishing events",
            RelayFailure::Delete => "deleting published events",
        }
    }
}

/// One round; answers the rows read (deleted or not).
async fn relay_round(
    store: &MetaStore,
    events: &NatsEvents,
) -> Result<usize, (RelayFailure, String)> {
    let rows = store
        .read_events(0, RELAY_BATCH)
        .await
        .map_err(|e| (RelayFailure::Read, e.to_string()))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let (acked, error) = events.publish_prefix(&rows).await;
    if acked > 0 {
        let seqs: Vec<u64> = rows[..acked].iter().map(|r| r.seq).collect();
        store
            .delete_events(&seqs)
            .await
            .map_err(|e| (RelayFailure::Delete, e.to_string()))?;
    }
    match error {
        Some(e) => Err((RelayFailure::Publish, e.to_string())),
        None => Ok(rows.len()),
    }
}

/// Sleeps `d` unless told to stop first; false to stop.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        changed = stop.changed() => changed.is_ok() && !*stop.borrow(),
    }
}
