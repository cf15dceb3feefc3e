//! An embedded Warren to run the scenarios against.
//!
//! Until the broker library lands this reports that it is missing, so that the
//! comparison mode fails loudly rather than silently running against nothing.

use crate::driver::Url;

/// A running embedded broker.
#[derive(Debug)]
pub struct Warren {
    url: Url,
}

impl Warren {
    /// Starts Warren in this process on a free port.
    pub async fn start() -> Result<Warren, String> {
        Err("the warren-broker library is not available yet; use --target URL".into())
    }

    /// The URL it serves.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Stops it.
    pub async fn shutdown(self) {}
}
