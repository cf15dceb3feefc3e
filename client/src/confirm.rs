//! The future a publish returns: resolves to the broker's ack or nack.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::sync::oneshot;

use crate::{
    error::{Error, Result},
    message::Confirmation,
};

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
