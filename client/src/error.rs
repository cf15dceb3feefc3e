//! The one error type of the crate, and the reply a broker gives when it closes something.

use std::{fmt, io, sync::Arc};

use amq_protocol::protocol::connection;

/// What a broker (or this client) said when it closed a channel or a connection:
/// the four fields of `channel.close` / `connection.close`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// AMQP reply code, e.g. 404 (NOT_FOUND) or 320 (CONNECTION_FORCED).
    pub reply_code: u16,
    /// Reply text, e.g. `NOT_FOUND - no queue 'x' in vhost '/'`.
    pub reply_text: String,
    /// Class id of the method that caused the close (0 when none).
    pub class_id: u16,
    /// Method id of the method that caused the close (0 when none).
    pub method_id: u16,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.reply_code, self.reply_text)?;
        if self.class_id != 0 || self.method_id != 0 {
            write!(f, " (class {}, method {})", self.class_id, self.method_id)?;
        }
        Ok(())
    }
}

/// Every error this crate returns.
///
/// The variants split along what a caller can do next: a *soft* error closed one
/// channel (open another), a *hard* error closed the whole connection (reconnect),
/// an I/O error lost the socket (reconnect). Errors are `Clone` because one close
/// fails many waiters at once (pending calls, confirms, consumers).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker closed the channel (a channel exception such as 404, 405, 406, 403).
    #[error("channel closed by broker: {0}")]
    ChannelClosed(CloseReason),
    /// The broker closed the connection (a connection exception such as 320, 501..541).
    #[error("connection closed by broker: {0}")]
    ConnectionClosed(CloseReason),
    /// The socket failed or reached end of file without a `connection.close`.
    #[error("I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// No frame arrived from the broker for two heartbeat intervals.
    #[error("missed heartbeats from the broker")]
    MissedHeartbeats,
    /// The broker sent something this client cannot accept; the client closed the
    /// connection with the reply code given.
    #[error("protocol error ({code}): {message}")]
    Protocol {
        /// Reply code sent to the broker in `connection.close` (501, 502, 503, 505…).
        code: u16,
        /// What was wrong.
        message: String,
    },
    /// The URL could not be parsed.
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
    /// An argument cannot be put on the wire (e.g. a name longer than 255 bytes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The channel was closed by this client (or its connection was).
    #[error("channel is closed")]
    ChannelClosedByClient,
    /// The connection was closed by this client.
    #[error("connection is closed")]
    ConnectionClosedByClient,
    /// Every channel id allowed by the negotiated `channel_max` is in use.
    #[error("no free channel id (channel_max reached)")]
    ChannelsExhausted,
    /// The broker cancelled this consumer (for instance because its queue was deleted).
    #[error("consumer {0} cancelled by the broker")]
    ConsumerCancelled(String),
    /// Connecting or opening took longer than `connection_timeout`.
    #[error("timed out while connecting")]
    Timeout,
}

impl Error {
    /// True for a channel-level error: the connection and its other channels live on.
    pub fn is_soft(&self) -> bool {
        matches!(self, Error::ChannelClosed(_) | Error::ConsumerCancelled(_))
    }

    /// True for a connection-level error: every channel of the connection is gone.
    pub fn is_hard(&self) -> bool {
        matches!(
            self,
            Error::ConnectionClosed(_) | Error::Protocol { .. } | Error::MissedHeartbeats
        )
    }

    /// True when the socket itself failed.
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io(_))
    }

    /// The broker's close reason, for errors that carry one.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match self {
            Error::ChannelClosed(r) | Error::ConnectionClosed(r) => Some(r),
            _ => None,
        }
    }

    /// The AMQP reply code, for errors that carry one.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Error::Protocol { code, .. } => Some(*code),
            _ => self.close_reason().map(|r| r.reply_code),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The reason a broker gave in `connection.close`.
pub(crate) fn close_reason(close: &connection::Close) -> CloseReason {
    CloseReason {
        reply_code: close.reply_code,
        reply_text: close.reply_text.to_string(),
        class_id: close.class_id,
        method_id: close.method_id,
    }
}
