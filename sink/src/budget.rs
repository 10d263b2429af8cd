//! The byte budget of export request bodies held in memory
//! (`--max-buffered-bytes`), both receivers together.
//!
//! A body is charged as its bytes *arrive*, not when its request starts: a
//! client trickling a body holds only what it sent, so slow clients cannot
//! take the budget from fast ones, and no decode slot is held while waiting
//! for bytes (the slot is taken once the whole body is in memory). A chunk
//! that would exceed the budget fails the request at once with
//! [`Busy`] (HTTP 503 with `Retry-After`, gRPC `UNAVAILABLE`: both retryable
//! under the OTLP specification), rather than waiting while holding bytes.
//! The charge is kept until the request is answered ([`Held`] is dropped).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget was full.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the sink already holds {max} bytes of request bodies (--max-buffered-bytes); retry later")]
pub struct Busy {
    /// The budget.
    pub max: usize,
}

/// Bytes of request bodies held at once.
#[derive(Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    max: usize,
}

/// What one request holds of the budget; released when the last clone is dropped.
#[derive(Debug, Clone, Default)]
pub struct Held(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes currently charged.
    pub fn bytes(&self) -> usize {
        self.lock().as_ref().map_or(0, |p| p.num_permits())
    }
}

impl Budget {
    /// A budget of `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            sem: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Bytes not charged to any request now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Charges `n` more bytes to `held`, or fails at once if the budget lacks them.
    pub fn take(&self, held: &Held, n: usize) -> Result<(), Busy> {
        if n == 0 {
            return Ok(());
        }
        let busy = || Busy { max: self.max };
        let n = u32::try_from(n).map_err(|_| busy())?;
        let permit = self
            .sem
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| busy())?;
        let mut g = held.lock();
        match g.as_mut() {
            Some(p) => p.merge(permit),
            None => *g = Some(permit),
        }
        Ok(())
    }

    /// Makes `held` exactly `n` bytes: gives back the excess, or charges the
    /// difference (failing if the budget lacks it).
    pub fn resize(&self, held: &Held, n: usize) -> Result<(), Busy> {
        let have = held.bytes();
        if n > have {
            return self.take(held, n - have);
        }
        let mut g = held.lock();
        if n == 0 {
            *g = None;
        } else if let Some(p) = g.as_mut() {
            drop(p.split(have - n));
        }
        Ok(())
    }
}

/// A request body charging every data frame to a [`Budget`] as it arrives.
pub struct BudgetBody<B> {
    inner: B,
    budget: Arc<Budget>,
    held: Held,
}

impl<B> BudgetBody<B> {
    /// Wraps `inner`; charges go to `held`.
    pub fn new(inner: B, budget: Arc<Budget>, held: Held) -> Self {
        BudgetBody {
            inner,
            budget,
            held,
        }
    }
}

/// Why a [`BudgetBody`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The budget was full.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// The inner body failed (the client went away, a protocol error).
    #[error("{0}")]
    Inner(Box<dyn std::error::Error + Send + Sync>),
}

impl<B> Body for BudgetBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.budget.take(&this.held, data.len())?;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Inner(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Charges add up, fail at once past the budget, and come back when released.
    #[test]
    fn charges_and_releases() {
        let b = Budget::new(100);
        let (one, two) = (Held::default(), Held::default());
        b.take(&one, 60).unwrap();
        assert!(b.take(&two, 50).is_err(), "over the budget fails at once");
        b.take(&two, 40).unwrap();
        assert_eq!(b.available(), 0);
        b.resize(&one, 10).unwrap();
        assert_eq!((one.bytes(), b.available()), (10, 50));
        drop(one);
        assert_eq!(b.available(), 60);
        b.resize(&two, 90).unwrap();
        assert!(b.resize(&two, 200).is_err());
        drop(two);
        assert_eq!(b.available(), 100);
    }
}
