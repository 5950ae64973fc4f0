//! Group commit: many writers, one flush + fsync per group; and many
//! groups, one sled batch.
//!
//! A writer first applies its write to sled (in memory and in sled's log
//! buffer), then calls [`GroupCommit::wait_durable`]. The first waiter to find
//! no sync in flight becomes the leader and syncs; writers that arrive while a
//! sync runs wait for the next one, which the first of them leads. Every write
//! applied before a sync *starts* is durable when that sync *ends*, so one
//! fsync serves every writer that queued behind the previous one.
//!
//! A writer that need not hold its thread through a sync calls
//! [`GroupCommit::durable_then`] instead: with no sync in flight it leads one
//! at once, as above; otherwise it leaves a callback for the next sync and
//! returns. Whoever ends a sync (a leading writer, or the store's sync
//! thread, [`GroupCommit::serve`], which starts one whenever callbacks wait
//! and no sync runs) calls back every writer that sync covered.

use std::sync::{Arc, Condvar, Mutex};

/// Told whether the sync that covers a write succeeded (or why not).
pub(crate) type Callback = Box<dyn FnOnce(Result<(), String>) + Send>;

#[derive(Default)]
struct State {
    /// Syncs started so far; sync number `n` covers every write applied before
    /// it started.
    started: u64,
    /// Highest sync number that completed successfully.
    completed: u64,
    /// Whether a sync is running now.
    running: bool,
    /// Writers to call back, each with the sync number that covers it.
    waiting: Vec<(u64, Callback)>,
    /// Set when the store goes: [`GroupCommit::serve`] returns.
    stopping: bool,
}

/// Coordinates durable acknowledgements among concurrent writers.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
}

type Guard<'a> = std::sync::MutexGuard<'a, State>;

impl GroupCommit {
    fn lock(&self) -> Guard<'_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one sync, starting now, and answers the writers it covered:
    /// called with no sync running; returns the lock again, and `sync`'s
    /// result.
    fn run<'a, E: std::fmt::Display>(
        &'a self,
        mut state: Guard<'a>,
        sync: &impl Fn() -> Result<(), E>,
    ) -> (Guard<'a>, Result<(), E>) {
        state.running = true;
        state.started += 1;
        let this_sync = state.started;
        drop(state);
        let result = sync();
        let mut state = self.lock();
        state.running = false;
        if result.is_ok() {
            state.completed = state.completed.max(this_sync);
        }
        // On failure the writers waiting for this sync are told; those
        // waiting in `wait_durable` wake, find it incomplete, and one of
        // them tries again.
        let (due, later) = std::mem::take(&mut state.waiting)
            .into_iter()
            .partition(|(needed, _)| *needed <= this_sync);
        state.waiting = later;
        self.done.notify_all();
        drop(state);
        let answer = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        for (_, callback) in due {
            // One callback that panics (a listener's bug) must not take the
            // sync thread, and every writer waiting on it, down with it.
            let answer = answer.clone();
            let called =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(answer)));
            if called.is_err() {
                tracing::error!("a durability callback panicked");
            }
        }
        (self.lock(), result)
    }

    /// Returns once every write this thread applied before the call is
    /// durable, running `sync` itself when no sync is in flight.
    pub(crate) fn wait_durable<E: std::fmt::Display>(
        &self,
        sync: impl Fn() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut state = self.lock();
        // A sync already running may have started before our write was
        // applied, so only the next one to start is sure to cover it.
        let needed = state.started + 1;
        loop {
            if state.completed >= needed {
                return Ok(());
            }
            if state.running {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let result;
            (state, result) = self.run(state, &sync);
            // This caller reports a failure of its own sync.
            result?;
        }
    }

    /// Calls `then` once every write this thread applied before the call is
    /// durable (or the sync that should have made them so failed): at once,
    /// after running `sync` itself, when no sync is in flight; otherwise,
    /// from whoever ends the next sync. Returns without waiting in that
    /// case, so a sync thread ([`GroupCommit::serve`]) must be running.
    pub(crate) fn durable_then<E: std::fmt::Display>(
        &self,
        sync: impl Fn() -> Result<(), E>,
        then: Callback,
    ) {
        let mut state = self.lock();
        let needed = state.started + 1;
        state.waiting.push((needed, then));
        if !state.running {
            let _ = self.run(state, &sync);
        }
    }

    /// The sync thread: runs a sync whenever writers wait for one and
    /// none is running, until [`GroupCommit::stop`].
    pub(crate) fn serve<E: std::fmt::Display>(&self, sync: impl Fn() -> Result<(), E>) {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            if state.running || state.waiting.is_empty() {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            (state, _) = self.run(state, &sync);
        }
    }

    /// Ends [`GroupCommit::serve`]; writers still waiting are told the
    /// store went.
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopping = true;
        let waiting = std::mem::take(&mut state.waiting);
        self.done.notify_all();
        drop(state);
        for (_, callback) in waiting {
            callback(Err(
                "the store was closed before the write was durable".into()
            ));
        }
    }
}

/// Writes handed to one applier together (flat combining): a writer queues
/// its write and takes the applier's lock; whoever holds it and finds its
/// own write still queued applies *every* queued write in one call, and the
/// writers behind it find theirs done when the lock comes to them. Each
/// write is applied once, all of one call or none.
///
/// The engine's co-ops commit their ledger groups (and the gateway its
/// event logs, which live beside them) through one of these: a
/// sled batch costs two writes of sled's log (it seals the log buffer
/// before and after its manifest), so eight co-ops committing at once make
/// one batch, not eight.
pub(crate) struct Combiner<W, E> {
    queue: Mutex<Vec<Arc<Slot<W, E>>>>,
    applying: Mutex<()>,
}

struct Slot<W, E> {
    write: Mutex<Option<W>>,
    done: Mutex<Option<Result<(), E>>>,
}

impl<W, E> Default for Combiner<W, E> {
    fn default() -> Self {
        Combiner {
            queue: Mutex::new(Vec::new()),
            applying: Mutex::new(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<W, E: Clone> Combiner<W, E> {
    /// Applies `write`, with whatever else is queued, through `apply`; the
    /// result of the call that applied it, or `lost()` if a holder that
    /// took it panicked before answering.
    pub(crate) fn apply(
        &self,
        write: W,
        apply: impl FnOnce(Vec<W>) -> Result<(), E>,
        lost: impl FnOnce() -> E,
    ) -> Result<(), E> {
        let slot = Arc::new(Slot {
            write: Mutex::new(Some(write)),
            done: Mutex::new(None),
        });
        lock(&self.queue).push(slot.clone());
        let _applying = lock(&self.applying);
        if let Some(done) = lock(&slot.done).take() {
            return done;
        }
        // Only holders of `applying` empty the queue, and each answers every
        // slot it took; one that panicked first never answered.
        let slots = std::mem::take(&mut *lock(&self.queue));
        if !slots.iter().any(|s| Arc::ptr_eq(s, &slot)) {
            return Err(lost());
        }
        let writes = slots.iter().filter_map(|s| lock(&s.write).take()).collect();
        let result = apply(writes);
        for s in &slots {
            *lock(&s.done) = Some(result.clone());
        }
        lock(&slot.done).take().unwrap_or(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_writers_share_syncs_and_each_is_covered() {
        let gc = Arc::new(GroupCommit::default());
        // `written` counts applied writes; `synced` records how many writes
        // the last sync covered. Each writer checks its own write is covered.
        let written = Arc::new(AtomicU64::new(0));
        let synced = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, written, synced, syncs) =
                    (gc.clone(), written.clone(), synced.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        gc.wait_durable(|| {
                            let covered = written.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(50));
                            synced.fetch_max(covered, Ordering::SeqCst);
                            syncs.fetch_add(1, Ordering::SeqCst);
                            Ok::<(), &str>(())
                        })
                        .expect("sync");
                        assert!(synced.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        assert!(syncs.load(Ordering::SeqCst) <= 1600);
    }

    #[test]
    fn combined_writes_are_each_applied_once_and_together_when_they_queue() {
        let combiner: Arc<Combiner<u64, ()>> = Arc::default();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let (combiner, applied) = (combiner.clone(), applied.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        combiner
                            .apply(
                                t * 1000 + i,
                                |writes| {
                                    std::thread::sleep(std::time::Duration::from_micros(20));
                                    lock(&applied).extend(writes);
                                    Ok(())
                                },
                                || (),
                            )
                            .expect("applied");
                        // Returned only once its write is applied.
                        assert!(lock(&applied).contains(&(t * 1000 + i)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        let mut applied = lock(&applied).clone();
        applied.sort();
        let expected: Vec<u64> = (0..8u64)
            .flat_map(|t| (0..200).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(applied, expected, "every write applied exactly once");
    }

    #[test]
    fn a_failed_combined_apply_is_the_answer_of_every_write_in_it() {
        let combiner: Combiner<u8, &str> = Combiner::default();
        assert_eq!(
            combiner.apply(1, |_| Err("disk full"), || "lost"),
            Err("disk full")
        );
        // The failed write is not queued again.
        let only_2 = |w: Vec<u8>| if w == [2] { Ok(()) } else { Err("other") };
        assert_eq!(combiner.apply(2, only_2, || "lost"), Ok(()));
    }

    #[test]
    fn writers_behind_a_failed_sync_are_covered_by_a_later_one() {
        let gc = Arc::new(GroupCommit::default());
        let written = Arc::new(AtomicU64::new(0));
        let synced = Arc::new(AtomicU64::new(0));
        let attempts = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, written, synced, attempts) = (
                    gc.clone(),
                    written.clone(),
                    synced.clone(),
                    attempts.clone(),
                );
                std::thread::spawn(move || {
                    let mut failed = 0;
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        let result = gc.wait_durable(|| {
                            let covered = written.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(50));
                            // Every third sync fails.
                            if attempts.fetch_add(1, Ordering::SeqCst) % 3 == 0 {
                                return Err("failed");
                            }
                            synced.fetch_max(covered, Ordering::SeqCst);
                            Ok(())
                        });
                        match result {
                            Ok(()) => assert!(synced.load(Ordering::SeqCst) >= mine),
                            Err(_) => failed += 1,
                        }
                    }
                    failed
                })
            })
            .collect();
        let failed: u64 = threads.into_iter().map(|t| t.join().expect("writer")).sum();
        // Only a sync's leader is told it failed; the writers behind it wait
        // for one that succeeds.
        let attempts = attempts.load(Ordering::SeqCst);
        assert_eq!(failed, attempts.div_ceil(3));
    }

    #[test]
    fn writers_that_leave_callbacks_are_each_called_back_once_by_a_sync_that_covers_them() {
        let gc = Arc::new(GroupCommit::default());
        let written = Arc::new(AtomicU64::new(0));
        let synced = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let sync = {
            let (written, synced, syncs) = (written.clone(), synced.clone(), syncs.clone());
            move || {
                let covered = written.load(Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros(50));
                synced.fetch_max(covered, Ordering::SeqCst);
                syncs.fetch_add(1, Ordering::SeqCst);
                Ok::<(), &str>(())
            }
        };
        let server = {
            let (gc, sync) = (gc.clone(), sync.clone());
            std::thread::spawn(move || gc.serve(sync))
        };
        let (told, answers) = std::sync::mpsc::channel();
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (gc, written, synced, sync, told) = (
                    gc.clone(),
                    written.clone(),
                    synced.clone(),
                    sync.clone(),
                    told.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        let (synced, told) = (synced.clone(), told.clone());
                        gc.durable_then(
                            sync.clone(),
                            Box::new(move |r| {
                                let covered = synced.load(Ordering::SeqCst) >= mine;
                                let _ = told.send((mine, r, covered));
                            }),
                        );
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer thread");
        }
        let mut called = Vec::new();
        for _ in 0..1600 {
            let (mine, r, covered) = answers
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("every writer is called back");
            assert_eq!(r, Ok(()));
            assert!(
                covered,
                "write {mine} was called back before a sync covered it"
            );
            called.push(mine);
        }
        called.sort();
        assert_eq!(called, (1..=1600).collect::<Vec<_>>(), "each writer once");
        assert!(syncs.load(Ordering::SeqCst) <= 1600);
        gc.stop();
        server.join().expect("sync thread ends at stop");
        assert!(answers.try_recv().is_err(), "no writer called twice");
    }

    #[test]
    fn a_failed_sync_tells_its_callers_and_stop_tells_those_still_waiting() {
        let gc = GroupCommit::default();
        let (told, answers) = std::sync::mpsc::channel();
        let tell = |told: &std::sync::mpsc::Sender<Result<(), String>>| -> Callback {
            let told = told.clone();
            Box::new(move |r| {
                let _ = told.send(r);
            })
        };
        // No sync running: the caller syncs, and is told it failed.
        gc.durable_then(|| Err("disk full"), tell(&told));
        assert_eq!(answers.try_recv(), Ok(Err("disk full".to_owned())));
        // A sync running (no server): the callback waits, and is told when
        // the store goes.
        gc.lock().running = true;
        gc.durable_then(|| Ok::<(), &str>(()), tell(&told));
        assert!(answers.try_recv().is_err());
        gc.stop();
        assert!(matches!(answers.try_recv(), Ok(Err(_))));
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_others_or_the_sync_thread() {
        let gc = GroupCommit::default();
        let (told, answers) = std::sync::mpsc::channel();
        gc.lock().running = true;
        gc.durable_then(
            || Ok::<(), &str>(()),
            Box::new(|_| panic!("a listener's bug")),
        );
        let t = told.clone();
        gc.durable_then(
            || Ok::<(), &str>(()),
            Box::new(move |r| {
                let _ = t.send(r);
            }),
        );
        gc.lock().running = false;
        // The next sync answers both: one panics, the other is still told.
        let (state, result) = gc.run(gc.lock(), &|| Ok::<(), &str>(()));
        drop(state);
        assert_eq!(result, Ok(()));
        assert_eq!(answers.try_recv(), Ok(Ok(())));
        // And the group commit goes on.
        gc.durable_then(
            || Ok::<(), &str>(()),
            Box::new(move |r| {
                let _ = told.send(r);
            }),
        );
        assert_eq!(answers.try_recv(), Ok(Ok(())));
    }

    #[test]
    fn a_failed_sync_is_reported_and_retried() {
        let gc = GroupCommit::default();
        assert_eq!(gc.wait_durable(|| Err("disk full")), Err("disk full"));
        assert_eq!(gc.wait_durable(|| Ok::<(), &str>(())), Ok(()));
    }
}
