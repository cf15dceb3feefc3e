//! Consumers and returned messages as `Stream`s.

use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::{
    acker::Acker,
    confirm::ReturnedMessage,
    content::{Content, ContentMethod},
    error::{Error, Result},
    message::Delivery,
    state::ChannelHandle,
};

/// A consumer: a stream of deliveries.
///
/// The stream ends (`None`) after [`Consumer::cancel`] or when this client closes the
/// channel or connection. If the broker cancels the consumer (its queue was deleted) or
/// closes the channel or connection, the last item is that error. Dropping a consumer
/// cancels it, and deliveries still arriving for it are requeued.
///
/// Back-pressure: deliveries wait in a buffer sized to the channel's prefetch (set with
/// [`Channel::basic_qos`](crate::Channel::basic_qos) before consuming), else to 1024. When a buffer is full the
/// connection stops reading from the socket until the consumer catches up, so memory
/// stays bounded; other channels of the connection wait too. Set a prefetch (it is
/// what RabbitMQ recommends anyway) and this never happens.
pub struct Consumer {
    tag: String,
    /// Its channel, kept open while the consumer lives.
    channel: Arc<ChannelHandle>,
    rx: mpsc::Receiver<Content>,
    end: Arc<Mutex<Option<Error>>>,
    no_ack: bool,
    cancelled: bool,
    /// Deliveries drained from `rx` during `cancel`, yielded before the stream ends.
    stash: VecDeque<Content>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .field("channel", &self.channel.state.id)
            .finish()
    }
}

impl Consumer {
    pub(crate) fn new(
        tag: String,
        channel: Arc<ChannelHandle>,
        rx: mpsc::Receiver<Content>,
        end: Arc<Mutex<Option<Error>>>,
        no_ack: bool,
    ) -> Self {
        Consumer {
            tag,
            channel,
            rx,
            end,
            no_ack,
            cancelled: false,
            stash: VecDeque::new(),
        }
    }

    /// The consumer tag (the broker's choice when none was given).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Cancel the consumer and wait for the broker's `cancel-ok`. Deliveries already
    /// buffered (or still arriving before the `cancel-ok`) are still yielded; then the
    /// stream ends.
    pub async fn cancel(&mut self) -> Result<()> {
        self.cancelled = true;
        let channel = self.channel.clone();
        let cancel = channel.cancel(&self.tag);
        tokio::pin!(cancel);
        // Keep draining while waiting: with a full buffer the connection task cannot
        // read the cancel-ok that sits behind further deliveries.
        let mut open = true;
        loop {
            tokio::select! {
                r = &mut cancel => return r,
                item = self.rx.recv(), if open => match item {
                    Some(content) => self.stash.push_back(content),
                    None => open = false,
                },
            }
        }
    }

    /// The next delivery, like `StreamExt::next` without the import.
    pub async fn recv(&mut self) -> Option<Result<Delivery>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn delivery(&self, content: Content) -> Delivery {
        let ContentMethod::Deliver(deliver) = content.method else {
            unreachable!("only deliveries are routed to consumers")
        };
        Delivery {
            delivery_tag: deliver.delivery_tag,
            redelivered: deliver.redelivered,
            exchange: deliver.exchange,
            routing_key: deliver.routing_key,
            properties: Content::take_properties(content.properties),
            body: content.body,
            acker: Acker::new(self.channel.clone(), deliver.delivery_tag, self.no_ack),
        }
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(content) = this.stash.pop_front() {
            return Poll::Ready(Some(Ok(this.delivery(content))));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(content)) => Poll::Ready(Some(Ok(this.delivery(content)))),
            Poll::Ready(None) => {
                this.cancelled = true;
                let end = this.end.lock().unwrap_or_else(|e| e.into_inner()).take();
                Poll::Ready(end.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if !self.cancelled {
            self.channel.cancel_nowait(&self.tag);
        }
        // Buffered deliveries nobody will see go back to the queue now, rather than
        // stay unacked until the channel closes.
        self.rx.close();
        if !self.no_ack {
            let mut buffered: Vec<Content> = self.stash.drain(..).collect();
            while let Ok(content) = self.rx.try_recv() {
                buffered.push(content);
            }
            for content in buffered {
                if let ContentMethod::Deliver(deliver) = content.method {
                    self.channel.reject_nowait(deliver.delivery_tag);
                }
            }
        }
    }
}

/// Returned (`mandatory`, unroutable) messages of one channel, as a stream.
#[derive(Debug)]
pub struct Returns {
    rx: mpsc::Receiver<ReturnedMessage>,
}

impl Returns {
    pub(crate) fn new(rx: mpsc::Receiver<ReturnedMessage>) -> Self {
        Returns { rx }
    }

    /// The next returned message; `None` once the channel is closed.
    pub async fn recv(&mut self) -> Option<ReturnedMessage> {
        self.rx.recv().await
    }

    /// A returned message if one is already here.
    pub fn try_recv(&mut self) -> Option<ReturnedMessage> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Returns {
    type Item = ReturnedMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}
