//! Who holds a connection slot, as on the wire side: a connection that
//! has not yet made an authenticated request holds only a pending place
//! (twice `http.max_connections`, at least 128) and is closed after the
//! login time limit; its first authenticated request trades that place
//! for one of the `http.max_connections` slots. Clients without a login
//! therefore cannot crowd analysts out, however long they keep
//! connections open.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, TOO_MANY_CONNECTIONS};

/// One connection's place.
#[derive(Debug)]
pub struct Admission {
    pending: Mutex<Option<OwnedSemaphorePermit>>,
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    slots: Arc<Semaphore>,
    /// When the connection was accepted.
    pub opened: Instant,
}

impl Admission {
    /// A connection holding a pending place.
    pub fn new(pending: OwnedSemaphorePermit, slots: Arc<Semaphore>) -> Admission {
        Admission {
            pending: Mutex::new(Some(pending)),
            slot: Mutex::new(None),
            slots,
            opened: Instant::now(),
        }
    }

    /// Whether an authenticated request took a slot for this connection.
    pub fn admitted(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Takes a slot for an authenticated request (once per connection),
    /// freeing the pending place; 503 when all slots are taken.
    pub fn admit(&self) -> Result<(), ApiError> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                *slot = Some(permit);
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                Ok(())
            }
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                TOO_MANY_CONNECTIONS,
                "too many HTTP connections are open",
                "retry in a moment, or ask the data owner to raise http.max_connections",
            )),
        }
    }
}
