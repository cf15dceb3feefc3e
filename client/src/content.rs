//! Reassembly of content (a method, a header frame, then body frames) with no I/O.
//!
//! The broker sends a delivery, a `get-ok` or a `return` as one method frame followed
//! by a content header and zero or more body frames on the same channel. This module
//! checks that sequence and yields the finished message; the connection task only
//! routes the result.

use amq_protocol::{frame::AMQPContentHeader, protocol::basic};
use bytes::{Bytes, BytesMut};

use crate::error::Error;

/// The method that announced the content.
#[derive(Debug)]
pub(crate) enum ContentMethod {
    Deliver(basic::Deliver),
    GetOk(basic::GetOk),
    Return(basic::Return),
}

/// A fully received message.
#[derive(Debug)]
pub(crate) struct Content {
    pub(crate) method: ContentMethod,
    pub(crate) properties: basic::AMQPProperties,
    pub(crate) body: Bytes,
}

/// One message being received on one channel.
#[derive(Debug)]
pub(crate) struct Assembly {
    method: ContentMethod,
    header: Option<(u64, basic::AMQPProperties)>,
    // A body that arrives in one frame is kept as that frame's bytes (no copy);
    // only multi-frame bodies are concatenated.
    first: Option<Bytes>,
    rest: BytesMut,
    received: u64,
}

/// What feeding a frame into an assembly produced.
#[derive(Debug)]
pub(crate) enum Progress {
    NeedMore(Assembly),
    Done(Content),
}

fn unexpected(msg: &str) -> Error {
    Error::Protocol {
        code: 505,
        message: msg.into(),
    }
}

impl Assembly {
    pub(crate) fn new(method: ContentMethod) -> Self {
        Assembly {
            method,
            header: None,
            first: None,
            rest: BytesMut::new(),
            received: 0,
        }
    }

    pub(crate) fn header(mut self, header: AMQPContentHeader) -> Result<Progress, Error> {
        if self.header.is_some() {
            return Err(unexpected("second content header for one message"));
        }
        if header.class_id != 60 {
            return Err(unexpected("content header for a class other than basic"));
        }
        self.header = Some((header.body_size, header.properties));
        self.check()
    }

    pub(crate) fn body(mut self, chunk: Bytes) -> Result<Progress, Error> {
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
        self.check()
    }

    fn check(self) -> Result<Progress, Error> {
        match &self.header {
            Some((size, _)) if self.received == *size => {
                let (_, properties) = self.header.unwrap_or_default();
                let body = match self.first {
                    Some(first) => first,
                    None => self.rest.freeze(),
                };
                Ok(Progress::Done(Content {
                    method: self.method,
                    properties,
                    body,
                }))
            }
            _ => Ok(Progress::NeedMore(self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64) -> AMQPContentHeader {
        AMQPContentHeader {
            class_id: 60,
            body_size: size,
            properties: Default::default(),
        }
    }

    fn deliver() -> Assembly {
        Assembly::new(ContentMethod::Deliver(Default::default()))
    }

    #[test]
    fn empty_body_completes_on_header() {
        assert!(
            matches!(deliver().header(header(0)).unwrap(), Progress::Done(c) if c.body.is_empty())
        );
    }

    #[test]
    fn multi_frame_body() {
        let Progress::NeedMore(a) = deliver().header(header(5)).unwrap() else {
            panic!()
        };
        let Progress::NeedMore(a) = a.body(Bytes::from_static(b"ab")).unwrap() else {
            panic!()
        };
        let Progress::Done(c) = a.body(Bytes::from_static(b"cde")).unwrap() else {
            panic!()
        };
        assert_eq!(&c.body[..], b"abcde");
    }

    #[test]
    fn violations() {
        assert!(deliver().body(Bytes::from_static(b"x")).is_err());
        let Progress::NeedMore(a) = deliver().header(header(1)).unwrap() else {
            panic!()
        };
        assert!(a.body(Bytes::from_static(b"xy")).is_err());
    }
}
