//! Group commit: many writers, one flush + fsync per group.
//!
//! A writer first applies its write to sled (in memory and in sled's log
//! buffer), then calls [`GroupCommit::wait_durable`]. The first waiter to find
//! no sync in flight becomes the leader and syncs; writers that arrive while a
//! sync runs wait for the next one, which the first of them leads. Every write
//! applied before a sync *starts* is durable when that sync *ends*, so one
//! fsync serves every writer that queued behind the previous one.

use std::sync::{Condvar, Mutex};

#[derive(Default)]
struct State {
    /// Syncs started so far; sync number `n` covers every write applied before
    /// it started.
    started: u64,
    /// Highest sync number that completed successfully.
    completed: u64,
    /// Whether a sync is running now.
    running: bool,
}

/// Coordinates durable acknowledgements among concurrent writers.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupCommit {
    /// Returns once every write this thread applied before the call is
    /// durable, running `sync` itself when no sync is in flight.
    pub(crate) fn wait_durable<E>(&self, sync: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
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
            state.running = true;
            state.started += 1;
            let this_sync = state.started;
            drop(state);
            let result = sync();
            state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.running = false;
            if result.is_ok() {
                state.completed = state.completed.max(this_sync);
            }
            self.done.notify_all();
            // On failure the waiters wake, find their sync incomplete, and one
            // of them tries again; this caller reports the error.
            result?;
        }
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
                            Ok::<(), ()>(())
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
    fn a_failed_sync_is_reported_and_retried() {
        let gc = GroupCommit::default();
        assert_eq!(gc.wait_durable(|| Err("disk full")), Err("disk full"));
        assert_eq!(gc.wait_durable(|| Ok::<(), &str>(())), Ok(()));
    }
}
