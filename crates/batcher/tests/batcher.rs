//! The batcher above fake models: batch formation under the size and delay
//! limits, ordering, admission, cancellation, failures and shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use batcher::{BatchError, BatchModel, Batcher, BatcherConfig};

/// Doubles its inputs and records every batch it was given. While `gate` is
/// closed it blocks, so tests can hold a batch in flight.
#[derive(Default)]
struct Doubler {
    batches: Mutex<Vec<Vec<u32>>>,
    gate: Gate,
}

#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn closed() -> Gate {
        Gate::default()
    }
    fn opened() -> Gate {
        Gate {
            open: Mutex::new(true),
            changed: Default::default(),
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }
}

impl BatchModel for Doubler {
    type Input = u32;
    type Output = u32;
    fn run(&self, batch: Vec<u32>) -> Result<Vec<u32>, String> {
        self.batches.lock().unwrap().push(batch.clone());
        self.gate.wait();
        if batch.contains(&666) {
            return Err("bad input in batch".into());
        }
        if batch.contains(&999) {
            panic!("model bug");
        }
        Ok(batch.into_iter().map(|x| x * 2).collect())
    }
}

fn doubler(gate: Gate) -> Arc<Doubler> {
    Arc::new(Doubler {
        batches: Mutex::default(),
        gate,
    })
}

fn config(max_batch_size: usize, delay_ms: u64, queue_capacity: usize) -> BatcherConfig {
    BatcherConfig {
        max_batch_size,
        max_queue_delay: Duration::from_millis(delay_ms),
        queue_capacity,
        instances: 1,
    }
}

/// Waits, for at most 10 s, until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..5000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn until_batches(model: &Doubler, n: usize) {
    until("the model's batches", || {
        model.batches.lock().unwrap().len() >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_each_gets_its_own_answer() {
    let model = doubler(Gate::closed());
    let batcher = Arc::new(Batcher::spawn(model.clone(), config(8, 50, 64)));
    // The first request occupies the model; the next 24 queue up meanwhile.
    let first = tokio::spawn({
        let b = batcher.clone();
        async move { b.submit(0).await }
    });
    until_batches(&model, 1).await;
    let rest: Vec<_> = (1..=24u32)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move { (i, b.submit(i).await) })
        })
        .collect();
    until("24 queued requests", || batcher.stats().queued == 24).await;
    model.gate.open();
    assert_eq!(first.await.unwrap(), Ok(0));
    for handle in rest {
        let (i, result) = handle.await.unwrap();
        assert_eq!(result, Ok(i * 2), "request {i} gets its own output");
    }
    let sizes: Vec<usize> = model.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1, 8, 8, 8], "full batches once requests wait");
    let stats = batcher.stats();
    assert_eq!((stats.batches, stats.items, stats.queued), (4, 25, 0));
}

#[tokio::test]
async fn a_lone_request_leaves_after_the_queue_delay() {
    let model = doubler(Gate::opened());
    let batcher = Batcher::spawn(model.clone(), config(32, 20, 8));
    // Bounded by a generous timeout: this checks that the batch closes on its
    // delay rather than waiting to fill, not how fast it is.
    let result = tokio::time::timeout(Duration::from_secs(5), batcher.submit(21)).await;
    assert_eq!(result, Ok(Ok(42)));
    assert_eq!(*model.batches.lock().unwrap(), vec![vec![21]]);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_admitted_work_is_answered() {
    let model = doubler(Gate::closed());
    let batcher = Arc::new(Batcher::spawn(model.clone(), config(1, 0, 2)));
    let running = tokio::spawn({
        let b = batcher.clone();
        async move { b.submit(1).await }
    });
    until_batches(&model, 1).await;
    // Two fit in the queue, the third is refused without waiting.
    let queued: Vec<_> = [2u32, 3]
        .into_iter()
        .map(|i| batcher.admit(i).expect("admitted"))
        .collect();
    match batcher.admit(4) {
        Err(e @ BatchError::Overloaded { retry_after }) => {
            assert!(retry_after >= Duration::from_secs(1));
            assert_eq!(e.code(), "overloaded");
        }
        other => panic!("expected overload, got {:?}", other.map(|_| ())),
    }
    assert_eq!(batcher.stats().rejected, 1);
    model.gate.open();
    assert_eq!(running.await.unwrap(), Ok(2));
    for (rx, want) in queued.into_iter().zip([4, 6]) {
        assert_eq!(rx.await.unwrap(), Ok(want));
    }
}

#[tokio::test]
async fn a_cancelled_request_never_reaches_the_model() {
    let model = doubler(Gate::closed());
    let batcher = Arc::new(Batcher::spawn(model.clone(), config(4, 0, 8)));
    let running = tokio::spawn({
        let b = batcher.clone();
        async move { b.submit(1).await }
    });
    until_batches(&model, 1).await;
    let abandoned = batcher.admit(2).expect("admitted");
    let kept = batcher.admit(3).expect("admitted");
    drop(abandoned); // the client went away
    model.gate.open();
    assert_eq!(running.await.unwrap(), Ok(2));
    assert_eq!(kept.await.unwrap(), Ok(6));
    assert_eq!(*model.batches.lock().unwrap(), vec![vec![1], vec![3]]);
    assert_eq!(batcher.stats().cancelled, 1);
}

#[tokio::test]
async fn a_failing_or_panicking_batch_fails_only_its_own_requests() {
    let model = doubler(Gate::opened());
    let batcher = Batcher::spawn(model.clone(), config(1, 0, 8));
    match batcher.submit(666).await {
        Err(e @ BatchError::Model(_)) => assert_eq!(e.code(), "inference_failed"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(batcher.submit(999).await, Err(BatchError::Model(m)) if m.contains("panicked"))
    );
    assert_eq!(batcher.submit(5).await, Ok(10), "the batcher survives");
}

#[test]
fn dropping_the_batcher_answers_what_was_admitted() {
    let model = doubler(Gate::opened());
    let batcher = Batcher::spawn(model.clone(), config(2, 50, 8));
    let pending: Vec<_> = (1..=5u32)
        .map(|i| batcher.admit(i).expect("admitted"))
        .collect();
    drop(batcher); // graceful shutdown: joins the instances after they drain
    for (rx, i) in pending.into_iter().zip(1u32..) {
        assert_eq!(rx.blocking_recv().unwrap(), Ok(i * 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_sees_every_batch_with_its_queue_waits() {
    let model = doubler(Gate::closed());
    let seen: Arc<Mutex<Vec<(usize, usize, bool)>>> = Arc::default();
    let record = seen.clone();
    let batcher = Arc::new(Batcher::spawn_observed(
        model.clone(),
        config(4, 50, 64),
        Arc::new(move |r: &batcher::BatchRecord<'_>| {
            record
                .lock()
                .unwrap()
                .push((r.size, r.queue_waits.len(), r.failed));
        }),
    ));
    // One request holds the model; five more queue behind it.
    let first = tokio::spawn({
        let b = batcher.clone();
        async move { b.submit(1).await }
    });
    until_batches(&model, 1).await;
    let rest: Vec<_> = (2..=6)
        .map(|x| {
            let b = batcher.clone();
            tokio::spawn(async move { b.submit(x).await })
        })
        .collect();
    until("five queued", || batcher.stats().queued == 5).await;
    model.gate.open();
    assert_eq!(first.await.unwrap(), Ok(2));
    for (i, task) in rest.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), Ok(2 * (i as u32 + 2)));
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(1, 1, false), (4, 4, false), (1, 1, false)]);
    // A full queue's estimate is at least the one-second floor.
    assert!(batcher.retry_after() >= Duration::from_secs(1));
}
