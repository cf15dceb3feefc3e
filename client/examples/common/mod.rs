//! Where the examples connect: `AMQP_URL` when set, else an embedded Warren that the
//! example starts itself (and stops when it is done).

use warren_broker::Broker;

/// The broker an example talks to. Keep it alive for as long as the example runs.
pub struct Target {
    pub url: String,
    embedded: Option<Broker>,
}

impl Target {
    /// `AMQP_URL`, or a fresh in-memory Warren on a free port.
    pub async fn get() -> Target {
        match std::env::var("AMQP_URL") {
            Ok(url) => Target {
                url,
                embedded: None,
            },
            Err(_) => {
                let broker = Broker::start().await.expect("start an embedded Warren");
                eprintln!(
                    "AMQP_URL not set: using an embedded Warren at {}",
                    broker.url()
                );
                Target {
                    url: broker.url(),
                    embedded: Some(broker),
                }
            }
        }
    }

    /// True when the example runs its own broker, so every role must run in this process.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// Stop the embedded broker, if any.
    pub async fn stop(self) {
        if let Some(broker) = self.embedded {
            broker.shutdown().await;
        }
    }
}
