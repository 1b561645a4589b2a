//! Group commit: concurrent commits share one directory fsync (or one
//! `syncfs`) instead of each doing their own; no commit returns before a
//! flush that started after its renames has completed.
//!
//! Also used by Maildir delivery (`delivery/maildir.rs`): deliveries
//! that run at the same time share one `syncfs`.
//!
//! May touch: nothing itself; runs the flush it is given.

use std::io;
use std::path::PathBuf;

use super::SpoolError;

/// Group commit for directory fsyncs: concurrent commits that renamed
/// their files before a directory fsync started share that fsync instead of
/// each doing their own (the fsync still happens before any of them says 250).
#[derive(Debug, Default)]
pub(crate) struct GroupSync {
    pub(super) state: std::sync::Mutex<SyncState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// Renames announced so far (a ticket per commit).
    pub(super) requested: u64,
    /// All tickets up to this one are durable.
    pub(super) completed: u64,
    /// A leader is running the fsyncs.
    running: bool,
    /// The last fsync error, reported to the tickets it covered.
    failed_up_to: u64,
    error: Option<String>,
    /// Flushes that failed so far. A caller reads it before it writes
    /// ([`GroupSync::generation`]) and fails if it changed by the end: a
    /// flush that failed on its data may have been run by a leader that did
    /// not cover its ticket (the data was written before that flush started,
    /// the ticket taken after), and the kernel reports a write-back error
    /// only once per file handle.
    errors: u64,
}

impl GroupSync {
    /// The number of failed flushes so far: read it before writing what a
    /// later [`GroupSync::sync`] must cover, and pass it there.
    pub(crate) fn generation(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).errors
    }

    /// Makes a commit durable once its writes are done: the first caller
    /// to find no flush running becomes the leader and runs `flush` for
    /// every commit announced so far; the others wait for it. Fails if
    /// the flush that covered it failed, or any flush failed since `since`
    /// ([`GroupSync::generation`] read before the caller wrote).
    pub(crate) fn sync(&self, since: u64, flush: &dyn Fn() -> Result<(), SpoolError>) -> Result<(), SpoolError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.requested += 1;
        let ticket = st.requested;
        loop {
            if st.completed >= ticket {
                return match (&st.error, st.failed_up_to >= ticket || st.errors != since) {
                    (Some(e), true) => Err(SpoolError::Io { what: "sync", path: PathBuf::new(), source: io::Error::other(e.clone()) }),
                    _ => Ok(()),
                };
            }
            if !st.running {
                // Become the leader for everything requested so far.
                st.running = true;
                let covers = st.requested;
                drop(st);
                let result = flush();
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.running = false;
                st.completed = covers;
                match result {
                    Ok(()) => {}
                    Err(e) => {
                        st.failed_up_to = covers;
                        st.error = Some(e.to_string());
                        st.errors += 1;
                    }
                }
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}
