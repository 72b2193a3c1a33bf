//! Admission by cost and by expected wait.
//!
//! Counting photos says little about how long they take: a camera photo's
//! cost varies tenfold with its size and encoding, and 256 queued photos
//! were 9 to 18 s of work on 2 cores. So every photo gets a [`Cost`] from
//! its header before it is decoded (the engine's `estimate`): the
//! core-microseconds its decode, preprocessing and inference should take,
//! and the bytes it holds while in flight (its encoded body and its model
//! inputs; decoded pixels are bounded by the decodes in flight, one per
//! CPU-pool thread).
//!
//! The [`Gate`] admits work while
//! - the work in flight, divided by the measured service rate, is an
//!   expected queue wait of at most [`Budget::max_queue_wait`] (or the
//!   request's own deadline, if sooner);
//! - the work and the memory in flight stay within their budgets;
//! - the photos in flight stay within `max_photos` (every batcher queue
//!   holds that many).
//!
//! An empty gate admits anything, so that one photo larger than a budget
//! is still served when nothing else runs. A refusal carries the expected
//! time until the request would fit, for `Retry-After`.
//!
//! The service rate is learnt while serving: cost completed per second of
//! wall time, sampled only while the engine is saturated (at least twice
//! as many photos in flight as it runs at once; bodies still being read
//! are not photos yet), so that a quiet period does not read as a slow
//! machine. Until the first sample it is one core-second per second per
//! pool thread. (Counting a body being read as a photo, and one photo per
//! thread as saturation, let half-idle windows into the samples: the rate
//! sank, and in one `bench/overload.py` run the gate refused 61-96 % of
//! every load from 1× up while the engine answered in 0.3 s.)
//!
//! A [`Ticket`] holds what was admitted; dropping it gives the room back,
//! and [`Ticket::completed`] also counts its work towards the rate.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a photo (or a request) is expected to take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Core-microseconds of decode, preprocessing and inference.
    pub work_us: u64,
    /// Bytes held while in flight.
    pub memory: u64,
    /// Photos.
    pub photos: u32,
}

impl Cost {
    pub fn new(work_us: u64, memory: u64, photos: u32) -> Cost {
        Cost {
            work_us,
            memory,
            photos,
        }
    }

    fn saturating_sub(self, other: Cost) -> Cost {
        Cost {
            work_us: self.work_us.saturating_sub(other.work_us),
            memory: self.memory.saturating_sub(other.memory),
            photos: self.photos.saturating_sub(other.photos),
        }
    }

    fn min(self, other: Cost) -> Cost {
        Cost {
            work_us: self.work_us.min(other.work_us),
            memory: self.memory.min(other.memory),
            photos: self.photos.min(other.photos),
        }
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost {
            work_us: self.work_us.saturating_add(other.work_us),
            memory: self.memory.saturating_add(other.memory),
            photos: self.photos.saturating_add(other.photos),
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

/// The limits the gate admits within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Work admitted and not yet answered, in core-microseconds.
    pub max_work_us: u64,
    /// Bytes held by admitted photos.
    pub max_memory: u64,
    /// Photos admitted and not yet answered.
    pub max_photos: u32,
    /// The longest expected queue wait a request is admitted with.
    pub max_queue_wait: Duration,
}

/// Why the gate said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No room now; room is expected after `retry_after`.
    Busy { retry_after: Duration },
    /// The request's deadline would pass before its turn comes.
    PastDeadline,
}

/// Keeps the work, memory and photos in flight within a [`Budget`].
pub struct Gate {
    budget: Budget,
    /// Photos the engine works on at once (its CPU-pool threads): at or
    /// above [`SATURATION`] times it, the engine is saturated and its rate
    /// is measurable.
    parallelism: u32,
    /// The rate before any is measured: a core-second a second per thread.
    prior: f64,
    state: Mutex<State>,
    /// Woken whenever room is given back, for [`Gate::admit_waiting`].
    freed: Notify,
}

struct State {
    in_flight: Cost,
    /// Core-microseconds completed per second while saturated.
    rate: f64,
    /// The current measuring window: when it began and the work completed
    /// in it; `None` while not saturated.
    window: Option<(Instant, u64)>,
}

/// How long a rate sample measures; shorter ones are too noisy.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// How much a new sample moves the rate.
const RATE_WEIGHT: f64 = 0.2;
/// The rate never falls below the prior divided by this.
const RATE_FLOOR_DIVISOR: f64 = 4.0;
/// Photos in flight per pool thread that make the engine saturated: with
/// one queued behind each running one, no thread waits for work.
const SATURATION: u32 = 2;

/// What is admitted: dropping it gives the room back.
pub struct Ticket {
    gate: Arc<Gate>,
    cost: Cost,
}

impl Gate {
    pub fn new(budget: Budget, parallelism: usize) -> Arc<Gate> {
        let parallelism = u32::try_from(parallelism.max(1)).unwrap_or(u32::MAX);
        let prior = f64::from(parallelism) * 1e6;
        Arc::new(Gate {
            budget,
            parallelism,
            prior,
            state: Mutex::new(State {
                in_flight: Cost::default(),
                rate: prior,
                window: None,
            }),
            freed: Notify::new(),
        })
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is in flight now.
    pub fn in_flight(&self) -> Cost {
        self.lock().in_flight
    }

    /// The measured service rate, in core-microseconds per second.
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }

    /// How long the work in flight now should take to drain.
    pub fn expected_wait(&self) -> Duration {
        let state = self.lock();
        drain_time(state.in_flight.work_us, state.rate)
    }

    /// Admits `cost` now or refuses. `wait_limit` lowers the expected-wait
    /// limit (a request's deadline, a worker's share).
    pub fn try_admit(
        self: &Arc<Self>,
        cost: Cost,
        wait_limit: Option<Duration>,
    ) -> Result<Ticket, Refusal> {
        let mut state = self.lock();
        self.check(&state, cost, Some(WaitLimit(wait_limit)))?;
        state.in_flight = state.in_flight + cost;
        Ok(Ticket {
            gate: self.clone(),
            cost,
        })
    }

    /// Admits `cost`, waiting for room (and for the expected wait to fall
    /// within `wait_limit`): for callers whose own concurrency bounds what
    /// they hold (the pipeline's workers, the command line).
    pub async fn admit_waiting(
        self: &Arc<Self>,
        cost: Cost,
        wait_limit: Option<Duration>,
    ) -> Ticket {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before trying, so a release in between still wakes us.
            freed.as_mut().enable();
            match self.try_admit(cost, wait_limit) {
                Ok(ticket) => return ticket,
                Err(_) => {
                    // A release wakes us; the timeout covers the rate changing
                    // without one (the wait limit is on an estimate).
                    let _ = tokio::time::timeout(Duration::from_millis(50), freed).await;
                }
            }
        }
    }

    /// Waits until the expected wait is within `limit`.
    pub async fn wait_within(&self, limit: Duration) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.expected_wait() <= limit {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), freed).await;
        }
    }

    /// Whether `cost` fits beside what is held: the budgets always, the
    /// expected wait unless `wait` is `None`.
    fn check(&self, state: &State, cost: Cost, wait: Option<WaitLimit>) -> Result<(), Refusal> {
        let held = state.in_flight;
        if held == Cost::default() {
            // Nothing runs: anything is served, however large.
            return Ok(());
        }
        let budget = &self.budget;
        let expected = drain_time(held.work_us, state.rate);
        let limit = match wait {
            Some(WaitLimit(Some(l))) => l.min(budget.max_queue_wait),
            _ => budget.max_queue_wait,
        };
        if let Some(WaitLimit(Some(deadline))) = wait {
            if expected > deadline && deadline < budget.max_queue_wait {
                return Err(Refusal::PastDeadline);
            }
        }
        let after = held + cost;
        let fits = (wait.is_none() || expected <= limit)
            && after.work_us <= budget.max_work_us
            && after.memory <= budget.max_memory
            && after.photos <= budget.max_photos;
        if fits {
            return Ok(());
        }
        // Room comes as work drains: enough of it for the wait to fall
        // within the limit and for this cost to fit the work budget. Memory
        // and photos drain with the work.
        let allowed = (limit.as_secs_f64() * state.rate) as u64;
        let excess = held
            .work_us
            .saturating_sub(allowed)
            .max(after.work_us.saturating_sub(budget.max_work_us))
            .max(cost.work_us.min(held.work_us));
        Err(Refusal::Busy {
            retry_after: drain_time(excess, state.rate),
        })
    }

    fn release(&self, cost: Cost, completed: bool) {
        let mut state = self.lock();
        let saturated = state.in_flight.photos >= SATURATION * self.parallelism;
        state.in_flight = state.in_flight.saturating_sub(cost);
        if completed {
            let now = Instant::now();
            match (saturated, state.window) {
                (false, _) => state.window = None,
                (true, None) => state.window = Some((now, 0)),
                (true, Some((began, done))) => {
                    let done = done + cost.work_us;
                    let elapsed = now.duration_since(began);
                    if elapsed >= RATE_WINDOW {
                        let sample = done as f64 / elapsed.as_secs_f64();
                        let rate = (1.0 - RATE_WEIGHT) * state.rate + RATE_WEIGHT * sample;
                        // A floor, so that a run of mispriced photos cannot
                        // talk the gate into refusing nearly everything.
                        state.rate = rate.max(self.prior / RATE_FLOOR_DIVISOR);
                        state.window = Some((now, 0));
                    } else {
                        state.window = Some((began, done));
                    }
                }
            }
        }
        drop(state);
        self.freed.notify_waiters();
    }
}

/// The expected-wait check's limit: the budget's, or a tighter one.
#[derive(Clone, Copy)]
struct WaitLimit(Option<Duration>);

fn drain_time(work_us: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(work_us as f64 / rate.max(1.0))
}

impl Ticket {
    /// What this ticket holds.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// Moves `cost` (at most what this holds) into a ticket of its own: a
    /// request's ticket split into its photos', each released as that
    /// photo is answered.
    pub fn split(&mut self, cost: Cost) -> Ticket {
        let cost = cost.min(self.cost);
        self.cost = self.cost.saturating_sub(cost);
        Ticket {
            gate: self.gate.clone(),
            cost,
        }
    }

    /// Replaces the estimate (a body's, once its photos' headers are read).
    /// Less is given back at once; more must fit the budgets of work,
    /// memory and photos. The expected wait is not checked again: it was
    /// when the ticket was admitted, and refusing work already read would
    /// waste the reading and parsing done since.
    pub fn reestimate(&mut self, cost: Cost) -> Result<(), Refusal> {
        let gate = self.gate.clone();
        let mut state = gate.lock();
        // As if this ticket had not been admitted: then admitted again.
        state.in_flight = state.in_flight.saturating_sub(self.cost);
        let check = gate.check(&state, cost, None);
        match check {
            Ok(()) => {
                state.in_flight = state.in_flight + cost;
                let shrank = cost.work_us < self.cost.work_us;
                self.cost = cost;
                drop(state);
                if shrank {
                    gate.freed.notify_waiters();
                }
                Ok(())
            }
            Err(refusal) => {
                state.in_flight = state.in_flight + self.cost;
                Err(refusal)
            }
        }
    }

    /// The work was done: its cost counts towards the measured rate.
    pub fn completed(mut self) {
        let cost = std::mem::take(&mut self.cost);
        self.gate.release(cost, true);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.cost != Cost::default() {
            self.gate.release(self.cost, false);
        }
    }
}

/// What a photo is priced at, in core-nanoseconds, from the stage bench
/// (`cargo bench -p darkroom --bench stages`, one core, exact decode; the
/// README's Performance table): the 12 camera JPEGs (3.1 MP, 573 KB mean)
/// decode in 9.8 ms in full and 7.8 ms shrunk on load, so entropy decoding
/// is about 12 ns a byte and the rest 0.9 ns a decoded pixel; the 18 MP
/// progressive Elephants (16.4 MB) decodes in 492 ms, about 29 ns a byte.
/// The Pillow-exact resample is 2.7 ns a decoded pixel, BRISQUE's downscale
/// about 1; inference (10.6 ms), BRISQUE's features and the face letterbox
/// are per photo. PNG and WebP are priced per pixel (inflate and VP8 are
/// not benchmarked here): about a baseline JPEG's full decode.
mod price {
    pub const PER_PHOTO_NS: u64 = 14_000_000;
    pub const PER_DECODED_PIXEL_NS: u64 = 5;
    pub const PER_JPEG_BYTE_NS: u64 = 12;
    pub const PER_PROGRESSIVE_BYTE_NS: u64 = 29;
    pub const PER_LOSSLESS_PIXEL_NS: u64 = 4;
    /// The model inputs a prepared photo holds until it is answered: an
    /// EfficientNet and a BlazeFace tensor, BRISQUE's grey image.
    pub const INPUT_BYTES: u64 = 2 << 20;
    /// What a body's byte is priced at before its photos' headers are read,
    /// beside one photo's fixed cost: the dearest byte, a progressive
    /// JPEG's. A lower bound for small photos (whose fixed costs dominate)
    /// that their headers correct; refusing a body on a guess above its
    /// real price would refuse work there was room for.
    pub const PER_BODY_BYTE_NS: u64 = PER_PROGRESSIVE_BYTE_NS;
}

/// A photo's cost from its header: [`price`]'s figures over what the decode
/// will produce, the encoded bytes held until it is decoded.
pub fn photo_cost(estimate: &imaging::DecodeEstimate, bytes: usize) -> Cost {
    let bytes = bytes as u64;
    let decode_ns = match estimate.format {
        imaging::Format::Jpeg => {
            let per_byte = if estimate.progressive {
                price::PER_PROGRESSIVE_BYTE_NS
            } else {
                price::PER_JPEG_BYTE_NS
            };
            bytes * per_byte
        }
        imaging::Format::Png | imaging::Format::Webp => {
            estimate.stored_pixels * price::PER_LOSSLESS_PIXEL_NS
        }
    };
    let work_ns =
        price::PER_PHOTO_NS + decode_ns + estimate.decoded_pixels * price::PER_DECODED_PIXEL_NS;
    Cost::new(work_ns / 1000, bytes + price::INPUT_BYTES, 1)
}

/// A photo whose header cannot be read fails at its decode, at once.
pub fn unreadable_cost(bytes: usize) -> Cost {
    Cost::new(1, bytes as u64, 1)
}

/// A body's cost from its `Content-Length`, before it is read: its bytes
/// held (with the photos decoded from base64 beside them, for JSON), and
/// one photo's fixed cost with the rest at [`price::PER_BODY_BYTE_NS`].
/// No photos yet: nothing is being decoded. Replaced by the photos' own
/// costs once their headers are read.
pub fn body_cost(length: u64, base64: bool) -> Cost {
    let (photo_bytes, memory) = if base64 {
        (length / 4 * 3, length + length / 4 * 3)
    } else {
        (length, length)
    };
    let work_ns = price::PER_PHOTO_NS + photo_bytes * price::PER_BODY_BYTE_NS;
    Cost::new(work_ns / 1000, memory, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            max_work_us: 10_000_000,
            max_memory: 1 << 30,
            max_photos: 256,
            max_queue_wait: Duration::from_secs(1),
        }
    }

    fn photo(work_ms: u64) -> Cost {
        Cost::new(work_ms * 1000, 1 << 20, 1)
    }

    #[test]
    fn an_empty_gate_admits_anything_and_then_refuses_past_the_wait() {
        // One pool thread: 1 core-second per second before any sample.
        let gate = Gate::new(budget(), 1);
        let big = gate.try_admit(photo(5_000), None).expect("nothing runs");
        let refused = gate.try_admit(photo(10), None).err();
        match refused {
            Some(Refusal::Busy { retry_after }) => {
                // 5 s in flight, 1 s allowed: about 4 s until it fits.
                assert!(
                    (3.9..=4.1).contains(&retry_after.as_secs_f64()),
                    "retry after {retry_after:?}"
                );
            }
            other => panic!("expected a busy refusal, got {other:?}"),
        }
        drop(big);
        assert_eq!(gate.in_flight(), Cost::default());
        gate.try_admit(photo(10), None).expect("room again");
    }

    #[test]
    fn work_is_admitted_up_to_the_expected_wait() {
        let gate = Gate::new(budget(), 2); // 2 core-seconds per second
        let mut held = Vec::new();
        // 2 s of work in flight is 1 s of expected wait at 2 cores: admitted
        // while the wait *before* each is within a second.
        loop {
            match gate.try_admit(photo(100), None) {
                Ok(t) => held.push(t),
                Err(Refusal::Busy { .. }) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(
            held.len(),
            21,
            "20 photos make 1 s of wait; the 21st still came in under it"
        );
    }

    #[test]
    fn the_budgets_bound_work_memory_and_photos() {
        let gate = Gate::new(
            Budget {
                max_work_us: 300_000,
                max_memory: 10 << 20,
                max_photos: 3,
                max_queue_wait: Duration::from_secs(100),
            },
            1,
        );
        let _a = gate.try_admit(photo(100), None).unwrap();
        let _b = gate.try_admit(photo(100), None).unwrap();
        let _c = gate.try_admit(photo(100), None).unwrap();
        assert!(gate.try_admit(photo(1), None).is_err(), "work and photos");
        let gate = Gate::new(
            Budget {
                max_memory: 2 << 20,
                ..budget()
            },
            1,
        );
        let _a = gate.try_admit(Cost::new(1, 2 << 20, 1), None).unwrap();
        assert!(gate.try_admit(Cost::new(1, 1, 1), None).is_err(), "memory");
    }

    #[test]
    fn a_deadline_sooner_than_the_wait_is_refused_as_such() {
        let gate = Gate::new(budget(), 1);
        let _held = gate.try_admit(photo(500), None).unwrap();
        assert_eq!(
            gate.try_admit(photo(10), Some(Duration::from_millis(100)))
                .err(),
            Some(Refusal::PastDeadline)
        );
        gate.try_admit(photo(10), Some(Duration::from_secs(2)))
            .expect("within the deadline");
    }

    #[test]
    fn split_tickets_release_their_share_and_reestimates_keep_to_the_budgets() {
        let gate = Gate::new(
            Budget {
                max_work_us: 3_000_000,
                ..budget()
            },
            1,
        );
        let mut request = gate.try_admit(photo(400), None).unwrap();
        let first = request.split(photo(100));
        assert_eq!(request.cost(), Cost::new(300_000, 0, 0));
        drop(first);
        assert_eq!(gate.in_flight(), Cost::new(300_000, 0, 0));
        // A body of unknown length is admitted at no cost while the wait is
        // short, and re-estimated once read.
        let mut body = gate
            .try_admit(Cost::default(), None)
            .expect("0.3 s of wait");
        // Re-estimates do not check the wait again: 2 s is more than the
        // 1 s allowed, but the work was admitted already.
        request.reestimate(photo(2_000)).unwrap();
        assert!(
            gate.try_admit(Cost::default(), None).is_err(),
            "2 s of wait: not even a body of unknown length is admitted now"
        );
        body.reestimate(photo(900))
            .expect("within the 3 s work budget");
        // The work budget still binds: 2 + 1.5 s is over 3 s.
        let grown = body.reestimate(photo(1_500));
        assert!(matches!(grown, Err(Refusal::Busy { .. })), "{grown:?}");
        assert_eq!(
            body.cost(),
            photo(900),
            "a refused re-estimate keeps the old one"
        );
        drop(request);
        body.reestimate(photo(1_500))
            .expect("room once the rest is answered");
    }

    /// Completes 1 ms photos one at a time, one every 10 ms, for `for_ms`.
    fn trickle(gate: &Arc<Gate>, for_ms: u64) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(for_ms) {
            let t = gate.try_admit(photo(1), None).unwrap();
            std::thread::sleep(Duration::from_millis(10));
            t.completed();
        }
    }

    #[test]
    fn the_rate_is_learnt_only_while_saturated() {
        // Two pool threads: saturated with four photos in flight.
        let gate = Gate::new(budget(), 2);
        let prior = gate.rate();
        trickle(&gate, 700);
        assert_eq!(gate.rate(), prior, "one photo at a time is not saturated");
        // Bodies being read are not photos: still not saturated.
        let _bodies: Vec<Ticket> = (0..3)
            .map(|_| gate.try_admit(body_cost(1 << 20, true), None).unwrap())
            .collect();
        trickle(&gate, 700);
        assert_eq!(
            gate.rate(),
            prior,
            "a photo beside bodies is not saturation"
        );
        // Three photos held and one trickling: saturated.
        let _others: Vec<Ticket> = (0..3)
            .map(|_| gate.try_admit(photo(1), None).unwrap())
            .collect();
        trickle(&gate, 1500);
        // 1 ms of work per 10 ms is about 100,000 core-µs a second: the
        // rate has moved well below the prior of 2,000,000, and stops at
        // its floor, a quarter of the prior.
        let rate = gate.rate();
        assert!(rate < 0.9 * prior, "rate {rate}");
        assert!(rate >= prior / 4.0, "rate {rate}");
    }

    #[tokio::test]
    async fn waiting_admissions_come_in_as_room_is_given_back() {
        let gate = Gate::new(budget(), 1);
        let held = gate.try_admit(photo(3_000), None).unwrap();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit_waiting(photo(10), None).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "3 s in flight, 1 s allowed");
        drop(held);
        let ticket = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("admitted once room was given back")
            .unwrap();
        assert_eq!(ticket.cost(), photo(10));
    }
}
