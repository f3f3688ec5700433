//! Worker threads that stay hot across a train step's products (feature `parallel`). A leaf:
//! imports nothing of the crate.
//!
//! A product split over rayon's threads from a thread outside its pool costs 35-70 us a call
//! (the injection wakes a sleeping worker and waits for it), more than the mnist shape's
//! products save by splitting. Here the calling thread publishes a job of `parts` numbered
//! parts in one atomic word; workers that ran a job in the last [`SPIN`] are still spinning
//! on that word and claim parts within a fraction of a microsecond; the caller claims parts
//! too, so a worker that is asleep, descheduled or late costs nothing but its share: the
//! caller runs whatever nobody claimed. A worker idle for [`SPIN`] parks (no CPU time until
//! the next job wakes it), so nothing spins while no model is stepping, and a program's own
//! rayon pool (or any other thread) has the cores to itself between steps.
//!
//! Which thread runs a part never changes what it computes: callers give each part a fixed
//! range of the output (see `crate::gemm`), so results are the same bits for any thread
//! count.
//!
//! One job runs at a time: a caller that finds the workers taken (another thread's step, or
//! a call from inside a part) runs all its parts itself.
//!
//! The number of threads, the caller included, is `TENSORBRIDGE_THREADS` (read once; `1`
//! turns the workers off), else the machine's available parallelism.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins, waiting for the next job, before it parks. A train step's
/// products follow each other within microseconds, and so do the steps of a training loop;
/// a parked worker takes tens of microseconds to wake (measured: see the README's
/// benchmarks), and meanwhile the caller runs the parts itself.
pub const SPIN: Duration = Duration::from_micros(100);

/// Looks at the job word (about 10 ns each) before a waiting thread starts yielding its core
/// between looks.
const YIELD_AFTER: u32 = 256;

/// Most threads the pool starts, the caller included.
const MAX_THREADS: usize = 64;

/// The job word: generation (bits 24..64), parts (12..24) and the next unclaimed part (0..12).
const PART_BITS: u32 = 12;
/// Most parts a job has.
pub const MAX_PARTS: usize = (1 << PART_BITS) - 1;
const PART_MASK: u64 = (1 << PART_BITS) - 1;

/// One job, on the caller's stack: it outlives every use by a worker, because the caller
/// returns only once `done` counts every part, and a worker touches the job only between
/// claiming a part and counting it done.
struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
    /// Parts finished, by anyone.
    done: AtomicUsize,
    /// The first panic of a part, raised again in the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// Runs part `p`, keeping a panic for the caller, and counts it done; the last access to
    /// the job.
    fn execute(&self, p: usize) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (self.run)(p))) {
            let mut first = self.panic.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert(payload);
        }
        self.done.fetch_add(1, Ordering::Release);
    }
}

struct Pool {
    /// Generation, parts and next part (see [`PART_BITS`]).
    state: AtomicU64,
    /// The current generation's job (valid while one of its parts is claimed and not done).
    job: AtomicPtr<Job<'static>>,
    /// Held by the thread whose job is running.
    busy: AtomicBool,
    /// Workers parked or about to park.
    sleeping: AtomicUsize,
    /// The workers, to wake them.
    workers: OnceLock<Vec<Thread>>,
}

impl Pool {
    /// Claims the next part of generation `gen`, if any is left.
    #[inline]
    fn claim(&self, gen: u64) -> Option<usize> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let (parts, next) = ((s >> PART_BITS) & PART_MASK, s & PART_MASK);
            if s >> (2 * PART_BITS) != gen || next >= parts {
                return None;
            }
            match self.state.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(next as usize),
                Err(now) => s = now,
            }
        }
    }

    /// Claims and runs parts of generation `gen` until none is left.
    fn help(&self, gen: u64) {
        while let Some(p) = self.claim(gen) {
            // SAFETY: the claim succeeded for generation `gen`, whose job the caller stored
            // before publishing `gen` (release/acquire through `state`); it stays alive and
            // `job` keeps pointing at it until this part is counted done (see `Job`).
            let job = unsafe { &*self.job.load(Ordering::Acquire) };
            job.execute(p);
        }
    }

    /// A worker's life: wait for a new generation (spinning, then parked), help, repeat.
    fn work(&self) {
        // Generation 0 is the state the pool starts in, before any job (a worker may first
        // run after the first job is published: it must not take that job's generation for
        // an old one).
        let mut seen = 0;
        loop {
            let mut idle = Instant::now();
            let mut spins = 0u32;
            let gen = loop {
                let gen = self.state.load(Ordering::Acquire) >> (2 * PART_BITS);
                if gen != seen {
                    break gen;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && idle.elapsed() >= SPIN {
                    // Announce the sleep, then look once more: a caller publishes before it
                    // reads `sleeping`, so either it sees this worker asleep and wakes it, or
                    // this load sees its job (both sequentially consistent).
                    self.sleeping.fetch_add(1, Ordering::SeqCst);
                    if self.state.load(Ordering::SeqCst) >> (2 * PART_BITS) == seen {
                        thread::park();
                    }
                    self.sleeping.fetch_sub(1, Ordering::SeqCst);
                    idle = Instant::now();
                    continue;
                }
                if spins < YIELD_AFTER {
                    std::hint::spin_loop();
                } else {
                    // Past the first microseconds, give the core to any other thread that
                    // wants it (on a busy machine, often the caller itself) between looks.
                    thread::yield_now();
                }
            };
            seen = gen;
            self.help(gen);
        }
    }
}

/// Threads to use, the caller included: `TENSORBRIDGE_THREADS` if set to a positive
/// integer (read once), else the machine's available parallelism; at most 64.
pub fn threads() -> usize {
    static VALUE: OnceLock<usize> = OnceLock::new();
    *VALUE.get_or_init(|| {
        let asked = std::env::var("TENSORBRIDGE_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok());
        let n = match asked {
            Some(n) if n >= 1 => n,
            _ => thread::available_parallelism().map_or(1, |n| n.get()),
        };
        n.min(MAX_THREADS)
    })
}

/// The pool, its workers started at the first call; `None` with one thread, or if no
/// worker could be started.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        if threads() < 2 {
            return None;
        }
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            busy: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            workers: OnceLock::new(),
        }));
        let workers: Vec<Thread> = (1..threads())
            .map_while(|k| {
                let spawned = thread::Builder::new().name(format!("tensorbridge-{k}")).spawn(move || pool.work());
                spawned.ok().map(|handle| handle.thread().clone())
            })
            .collect();
        if workers.is_empty() {
            return None;
        }
        let _ = pool.workers.set(workers);
        Some(pool)
    })
}

/// Runs `f(0)`, ..., `f(parts - 1)`, each exactly once, on the calling thread and the
/// workers, and returns when all have returned. A panic in a part is raised again here,
/// after every part has finished.
pub fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = match pool() {
        Some(pool) if parts > 1 && parts <= MAX_PARTS => pool,
        _ => return serial(parts, f),
    };
    if pool.busy.swap(true, Ordering::Acquire) {
        return serial(parts, f);
    }
    let job = Job { run: f, done: AtomicUsize::new(0), panic: Mutex::new(None) };
    // Only the holder of `busy` writes `job` and the generation.
    pool.job.store((&job as *const Job<'_>).cast_mut().cast(), Ordering::Relaxed);
    let gen = ((pool.state.load(Ordering::Relaxed) >> (2 * PART_BITS)) + 1) & (u64::MAX >> (2 * PART_BITS));
    pool.state.store(gen << (2 * PART_BITS) | (parts as u64) << PART_BITS, Ordering::SeqCst);
    if pool.sleeping.load(Ordering::SeqCst) > 0 {
        pool.workers.get().into_iter().flatten().for_each(Thread::unpark);
    }
    pool.help(gen);
    // Every part is claimed; wait for the workers' to finish.
    let mut spins = 0u32;
    while job.done.load(Ordering::Acquire) < parts {
        spins = spins.saturating_add(1);
        if spins < YIELD_AFTER {
            std::hint::spin_loop();
        } else {
            // A worker descheduled mid-part (a loaded machine): let it run.
            thread::yield_now();
        }
    }
    pool.busy.store(false, Ordering::Release);
    let panic = job.panic.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
}

/// [`run`] on the calling thread alone: every part, then the first panic again.
fn serial(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let mut first = None;
    for p in 0..parts {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(p))) {
            first.get_or_insert(payload);
        }
    }
    if let Some(payload) = first {
        resume_unwind(payload);
    }
}

/// Splits `data` into chunks of `size` (the last one shorter) and runs `f(k, chunk k)` for
/// each, as [`run`] does.
pub fn chunks_mut<T: Send>(data: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let size = size.max(1);
    let (len, parts) = (data.len(), data.len().div_ceil(size));
    let base = SendPtr(data.as_mut_ptr());
    run(parts, &|k| {
        let start = k * size;
        let n = size.min(len - start);
        // SAFETY: `k < parts`, so `start < len` and `start + n <= len`: the chunk lies inside
        // `data`, which is borrowed mutably for the whole call. `run` calls each `k` exactly
        // once, so the chunks handed out are disjoint.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(k, chunk);
    });
}

/// A pointer shared with the parts of one [`run`], which hand out disjoint pieces.
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    /// The pointer (a method, so that a closure captures the whole `SendPtr`).
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: the pointer is only used for disjoint chunks, one per part (see `chunks_mut`), of a
// slice of `Send` values.
unsafe impl<T: Send> Sync for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_exactly_once() {
        for parts in [0, 1, 2, 3, 7, 64, 1000] {
            let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..50 {
                run(parts, &|p| {
                    counts[p].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 50), "{parts} parts");
        }
    }

    #[test]
    fn chunks_cover_the_slice_once() {
        let mut v = vec![0u32; 1001];
        for _ in 0..20 {
            chunks_mut(&mut v, 64, |k, chunk| {
                assert!(chunk.len() == 64 || (k == 15 && chunk.len() == 41));
                chunk.iter_mut().for_each(|x| *x += k as u32 + 1);
            });
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == 20 * (i as u32 / 64 + 1)));
    }

    #[test]
    fn callers_from_many_threads_and_from_inside_a_part() {
        let total = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        run(4, &|_| {
                            // Nested: the workers are taken, so this runs here.
                            run(3, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 4 * 3);
    }

    #[test]
    fn a_panic_in_a_part_reaches_the_caller_after_every_part() {
        let finished = AtomicUsize::new(0);
        let got = catch_unwind(AssertUnwindSafe(|| {
            run(8, &|p| {
                if p == 5 {
                    panic!("part five");
                }
                finished.fetch_add(1, Ordering::Relaxed);
            })
        }));
        let payload = got.expect_err("the panic is raised again");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"part five"));
        assert_eq!(finished.load(Ordering::Relaxed), 7);
        // The pool still works afterwards.
        let n = AtomicUsize::new(0);
        run(4, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 4);
    }
}
