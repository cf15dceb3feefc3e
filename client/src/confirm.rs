//! What the broker answers to a publish: its confirm (the future a publish returns,
//! resolving to the broker's ack or nack) and, for a `mandatory` message that no queue
//! took, its return.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use amq_protocol::protocol::BasicProperties;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Resolves when the broker confirms (acks or nacks) one publish.
///
/// On a channel not in confirm mode it resolves at once to
/// [`Confirmation::NotRequested`]. If the channel or connection closes first it
/// resolves to that error: an unconfirmed message may or may not have been taken.
#[derive(Debug)]
pub struct PublisherConfirm {
    rx: Option<oneshot::Receiver<Result<Confirmation>>>,
}

impl PublisherConfirm {
    pub(crate) fn waiting(rx: oneshot::Receiver<Result<Confirmation>>) -> Self {
        PublisherConfirm { rx: Some(rx) }
    }

    pub(crate) fn not_requested() -> Self {
        PublisherConfirm { rx: None }
    }
}

impl Future for PublisherConfirm {
    type Output = Result<Confirmation>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.rx.as_mut() {
            None => Poll::Ready(Ok(Confirmation::NotRequested)),
            Some(rx) => Pin::new(rx).poll(cx).map(|r| match r {
                Ok(outcome) => outcome,
                // The channel state was dropped without failing us: the connection ended.
                Err(_) => Err(Error::ConnectionClosedByClient),
            }),
        }
    }
}

/// A `mandatory` message that no queue took, sent back by the broker.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReturnedMessage {
    /// Why it came back, e.g. 312.
    pub reply_code: u16,
    /// e.g. `NO_ROUTE`.
    pub reply_text: String,
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Bytes,
}

/// How the broker answered a publish on a channel in confirm mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Confirmation {
    /// The broker took responsibility for the message (`basic.ack`).
    Ack,
    /// The broker could not take it (`basic.nack`).
    Nack,
    /// The channel is not in confirm mode: nothing was asked.
    NotRequested,
}

impl Confirmation {
    /// True for [`Confirmation::Ack`].
    pub fn is_ack(self) -> bool {
        self == Confirmation::Ack
    }
}
