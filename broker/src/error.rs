//! AMQP errors as the wire needs them: a reply code, RabbitMQ's reply text, and the
//! class and method that caused them, scoped to a channel or to the whole connection.

use std::fmt;

/// Reply codes used by the broker (AMQP 0-9-1 constants, RabbitMQ's usage).
pub mod code {
    pub const CONNECTION_FORCED: u16 = 320;
    pub const NO_ROUTE: u16 = 312;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;
}

/// The symbolic name RabbitMQ puts in front of every reply text.
pub fn code_name(code: u16) -> &'static str {
    match code {
        200 => "OK",
        code::CONNECTION_FORCED => "CONNECTION_FORCED",
        code::NO_ROUTE => "NO_ROUTE",
        code::ACCESS_REFUSED => "ACCESS_REFUSED",
        code::NOT_FOUND => "NOT_FOUND",
        code::RESOURCE_LOCKED => "RESOURCE_LOCKED",
        code::PRECONDITION_FAILED => "PRECONDITION_FAILED",
        code::FRAME_ERROR => "FRAME_ERROR",
        code::SYNTAX_ERROR => "SYNTAX_ERROR",
        code::COMMAND_INVALID => "COMMAND_INVALID",
        code::CHANNEL_ERROR => "CHANNEL_ERROR",
        code::UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        code::RESOURCE_ERROR => "RESOURCE_ERROR",
        code::NOT_ALLOWED => "NOT_ALLOWED",
        code::NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        code::INTERNAL_ERROR => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

/// Whether an error closes one channel or the whole connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
    /// Closes the socket without a word, as RabbitMQ does with peers it does not
    /// trust yet or cannot parse at all.
    Socket,
}

/// A protocol error on its way to becoming a `channel.close` or `connection.close`.
///
/// The class and method ids are filled in by the connection, which knows which
/// method was being handled; code deep in the broker only says what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpError {
    pub scope: Scope,
    pub code: u16,
    /// The text after RabbitMQ's `CODE_NAME - ` prefix.
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
    /// Keeps class and method at 0: RabbitMQ's crash reports name no method.
    pub anonymous: bool,
}

impl AmqpError {
    /// A soft error: closes the channel it happened on.
    pub fn channel(code: u16, text: impl Into<String>) -> Self {
        Self {
            scope: Scope::Channel,
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
            anonymous: false,
        }
    }

    /// 541 INTERNAL_ERROR with no text and no method: what a client sees when a
    /// RabbitMQ channel process crashes on input it did not expect.
    pub fn internal() -> Self {
        Self {
            anonymous: true,
            ..Self::connection(code::INTERNAL_ERROR, "")
        }
    }

    /// A hard error: closes the connection.
    pub fn connection(code: u16, text: impl Into<String>) -> Self {
        Self {
            scope: Scope::Connection,
            ..Self::channel(code, text)
        }
    }

    pub fn not_found(text: impl Into<String>) -> Self {
        Self::channel(code::NOT_FOUND, text)
    }

    pub fn access_refused(text: impl Into<String>) -> Self {
        Self::channel(code::ACCESS_REFUSED, text)
    }

    pub fn precondition(text: impl Into<String>) -> Self {
        Self::channel(code::PRECONDITION_FAILED, text)
    }

    pub fn locked(text: impl Into<String>) -> Self {
        Self::channel(code::RESOURCE_LOCKED, text)
    }

    /// An error answered by closing the socket.
    pub fn socket(text: impl Into<String>) -> Self {
        Self {
            scope: Scope::Socket,
            ..Self::channel(0, text)
        }
    }

    /// Sets the offending method unless an inner layer already named one.
    pub fn on_method(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 && !self.anonymous {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// The reply text exactly as it goes on the wire, e.g.
    /// `NOT_FOUND - no queue 'x' in vhost '/'`. One longer than a short string's
    /// 255 bytes is cut to 252 and ends in `...`, as RabbitMQ cuts it
    /// (rabbit_binary_generator.erl:230-235, `amqp_exception_explanation`); where
    /// RabbitMQ would cut a UTF-8 character in two, Warren cuts before it.
    pub fn reply_text(&self) -> String {
        let mut text = if self.text.is_empty() {
            code_name(self.code).to_owned()
        } else {
            format!("{} - {}", code_name(self.code), self.text)
        };
        if text.len() > 255 {
            let mut end = 252;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("...");
        }
        text
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (class {}, method {})",
            self.code,
            self.reply_text(),
            self.class_id,
            self.method_id
        )
    }
}

impl std::error::Error for AmqpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reply_texts_are_cut_to_252_bytes_and_dots() {
        let short = AmqpError::not_found(format!("no queue '{}' in vhost '/'", "q".repeat(200)));
        assert_eq!(short.reply_text().len(), 236, "kept whole");
        let long = AmqpError::not_found(format!("no queue '{}' in vhost '/'", "q".repeat(240)));
        let text = long.reply_text();
        assert_eq!(text.len(), 255);
        assert!(text.starts_with("NOT_FOUND - no queue 'qqq"));
        assert!(text.ends_with("qqq..."));
        // A two-byte character across byte 252 is left out rather than split.
        let wide = AmqpError::not_found(format!("{}é{}", "a".repeat(239), "b".repeat(20)));
        let text = wide.reply_text();
        assert_eq!(text, format!("NOT_FOUND - {}...", "a".repeat(239)));
    }
}
