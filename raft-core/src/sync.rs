//! Small concurrency helpers the cairn crates share, so that each policy
//! is written once: a mutex lock that survives a panicked holder, and a
//! task that ends with its owner.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::task::Context;
use std::task::Poll;

use tokio::task::JoinError;
use tokio::task::JoinHandle;

/// Locks `m`, whether or not a holder panicked. cairn holds its
/// `std::sync::Mutex`es only around short updates that cannot leave the
/// data half-changed, so a poisoned lock is still consistent; refusing it
/// would turn one panic into a cascade.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A spawned task that is aborted when this handle is dropped, so a
/// background task never outlives the value that owns it. Awaiting it
/// awaits the task, as its [`JoinHandle`] would.
#[derive(Debug)]
pub struct AbortOnDrop<T = ()>(JoinHandle<T>);

impl<T: Send + 'static> AbortOnDrop<T> {
    /// Spawns `task` on the current tokio runtime.
    pub fn spawn(task: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl<T> AbortOnDrop<T> {
    /// Takes charge of a task already spawned.
    pub fn new(handle: JoinHandle<T>) -> Self {
        Self(handle)
    }

    /// Aborts the task now (dropping the handle does the same).
    pub fn abort(&self) {
        self.0.abort();
    }

    /// Whether the task has ended (finished, panicked or aborted).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}
