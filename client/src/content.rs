//! Reassembly of content (a method, a header frame, then body frames) with no I/O.
//!
//! The broker sends a delivery, a `get-ok` or a `return` as one method frame followed
//! by a content header and zero or more body frames on the same channel. This module
//! checks that sequence and yields the finished message; the connection task only
//! routes the result.

use amq_protocol::protocol::basic;
use bytes::{Bytes, BytesMut};

use crate::{
    codec::{Deliver, DeliverArgs, Header},
    error::Error,
};

/// The method that announced the content. A `Content` is moved several times on its
/// way to a consumer, so the rare large variant is boxed to keep it small.
#[derive(Debug)]
pub(crate) enum ContentMethod {
    Deliver(DeliverArgs),
    GetOk(basic::GetOk),
    Return(Box<basic::Return>),
}

/// A fully received message.
#[derive(Debug)]
pub(crate) struct Content {
    pub(crate) method: ContentMethod,
    /// `None`: no properties (see [`Header`]).
    pub(crate) properties: Option<Box<basic::AMQPProperties>>,
    pub(crate) body: Bytes,
}

impl Content {
    /// The properties, unboxed for the message handed to the application.
    pub(crate) fn take_properties(
        properties: Option<Box<basic::AMQPProperties>>,
    ) -> basic::AMQPProperties {
        properties.map(|p| *p).unwrap_or_default()
    }
}

/// One message being received on one channel.
#[derive(Debug)]
pub(crate) struct Assembly {
    method: ContentMethod,
    /// A delivery's consumer tag (else empty): kept here, not in the `Content`
    /// handed to the consumer, as only the connection task needs it.
    consumer_tag: Bytes,
    header: Option<(u64, Option<Box<basic::AMQPProperties>>)>,
    // A body that arrives in one frame is kept as that frame's bytes (no copy);
    // only multi-frame bodies are concatenated.
    first: Option<Bytes>,
    rest: BytesMut,
    received: u64,
}

fn unexpected(msg: &str) -> Error {
    Error::Protocol {
        code: 505,
        message: msg.into(),
    }
}

impl Assembly {
    pub(crate) fn new(method: ContentMethod) -> Self {
        Self::with_tag(method, Bytes::new())
    }

    pub(crate) fn deliver(deliver: Deliver) -> Self {
        Self::with_tag(ContentMethod::Deliver(deliver.args), deliver.consumer_tag)
    }

    fn with_tag(method: ContentMethod, consumer_tag: Bytes) -> Self {
        Assembly {
            method,
            consumer_tag,
            header: None,
            first: None,
            rest: BytesMut::new(),
            received: 0,
        }
    }

    // Header and body frames update the assembly in place (it is large: the
    // method and the properties), and say whether the message is complete.

    /// Feeds the content header; true when the message is complete (empty body).
    pub(crate) fn header(&mut self, header: Header) -> Result<bool, Error> {
        if self.header.is_some() {
            return Err(unexpected("second content header for one message"));
        }
        if header.class_id != 60 {
            return Err(unexpected("content header for a class other than basic"));
        }
        self.header = Some((header.body_size, header.properties));
        Ok(self.is_complete())
    }

    /// Feeds a body frame; true when the message is complete.
    pub(crate) fn body(&mut self, chunk: Bytes) -> Result<bool, Error> {
        let Some((size, _)) = &self.header else {
            return Err(unexpected("body frame before content header"));
        };
        self.received += chunk.len() as u64;
        if self.received > *size {
            return Err(unexpected("body longer than its content header said"));
        }
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(chunk),
            first => {
                if let Some(first) = first {
                    self.rest.reserve(*size as usize);
                    self.rest.extend_from_slice(&first);
                }
                self.rest.extend_from_slice(&chunk);
            }
        }
        Ok(self.is_complete())
    }

    fn is_complete(&self) -> bool {
        matches!(&self.header, Some((size, _)) if self.received == *size)
    }

    /// The finished message (call once `header` or `body` said it is complete), and
    /// the consumer tag of a delivery.
    pub(crate) fn finish(self) -> (Content, Bytes) {
        let (_, properties) = self.header.unwrap_or_default();
        let body = match self.first {
            Some(first) => first,
            None => self.rest.freeze(),
        };
        let content = Content {
            method: self.method,
            properties,
            body,
        };
        (content, self.consumer_tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64) -> Header {
        Header {
            class_id: 60,
            body_size: size,
            properties: None,
        }
    }

    fn deliver() -> Assembly {
        Assembly::deliver(Deliver {
            consumer_tag: Bytes::from_static(b"c"),
            args: DeliverArgs {
                delivery_tag: 1,
                redelivered: false,
                exchange: String::new(),
                routing_key: String::new(),
            },
        })
    }

    #[test]
    fn empty_body_completes_on_header() {
        let mut a = deliver();
        assert!(a.header(header(0)).unwrap());
        assert!(a.finish().0.body.is_empty());
    }

    #[test]
    fn multi_frame_body() {
        let mut a = deliver();
        assert!(!a.header(header(5)).unwrap());
        assert!(!a.body(Bytes::from_static(b"ab")).unwrap());
        assert!(a.body(Bytes::from_static(b"cde")).unwrap());
        assert_eq!(&a.finish().0.body[..], b"abcde");
    }

    #[test]
    fn violations() {
        assert!(deliver().body(Bytes::from_static(b"x")).is_err());
        let mut a = deliver();
        assert!(!a.header(header(1)).unwrap());
        assert!(a.body(Bytes::from_static(b"xy")).is_err());
    }
}
