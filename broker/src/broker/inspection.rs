//! The inspection API: what a test can look at inside the broker, and wait for.

use crate::broker::Broker;
use crate::error::AmqpError;
use crate::inspect::*;

/// A condition [`Broker::wait_for`] waited for that did not come true in time.
#[derive(Debug)]
pub struct WaitTimeout {
    /// The state when the wait gave up, to show what was there instead.
    pub last: BrokerSnapshot,
}

impl std::fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "condition not met in time; the queues were:")?;
        for q in &self.last.queues {
            write!(f, "{q}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WaitTimeout {}

/// Inspection: what a test can look at inside the broker.
impl Broker {
    /// Everything at this moment: queues, exchanges, bindings, connections.
    pub fn snapshot(&self) -> BrokerSnapshot {
        self.shared.snapshot()
    }

    /// The queue of that name in vhost `/`, if it exists.
    pub fn try_queue(&self, name: &str) -> Option<QueueSnapshot> {
        self.queue_in("/", name)
    }

    pub fn queue_in(&self, vhost: &str, name: &str) -> Option<QueueSnapshot> {
        self.shared.vhosts.get(vhost)?.lock().queue_snapshot(name)
    }

    /// The queue of that name in vhost `/`; panics, naming the queues there are,
    /// when it does not exist — meant for assertions such as
    /// `broker.queue("orders").assert_empty()`.
    #[track_caller]
    pub fn queue(&self, name: &str) -> QueueSnapshot {
        match self.try_queue(name) {
            Some(q) => q,
            None => {
                let names: Vec<String> = self.queues().into_iter().map(|q| q.name).collect();
                panic!("no queue '{name}' in vhost '/'; the queues are {names:?}")
            }
        }
    }

    pub fn queues(&self) -> Vec<QueueSnapshot> {
        self.snapshot().queues
    }

    pub fn exchanges(&self) -> Vec<ExchangeSnapshot> {
        self.snapshot().exchanges
    }

    pub fn bindings(&self) -> Vec<BindingSnapshot> {
        self.snapshot().bindings
    }

    pub fn connections(&self) -> Vec<ConnectionSnapshot> {
        self.snapshot().connections
    }

    /// Waits until `condition` holds for the broker's state, or `timeout`
    /// passes: a test awaits what it expects instead of sleeping.
    pub async fn wait_for(
        &self,
        timeout: std::time::Duration,
        condition: impl Fn(&BrokerSnapshot) -> bool,
    ) -> Result<BrokerSnapshot, WaitTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let snap = self.snapshot();
            if condition(&snap) {
                return Ok(snap);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WaitTimeout { last: snap });
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Waits until the broker has nothing in flight: every byte it owes a client
    /// has been written to that client's socket. (Input is handled as it is
    /// read, so what was received is routed and delivered by then.)
    pub async fn wait_until_idle(&self) {
        self.shared.wait_until_idle().await
    }

    /// Puts a message straight into a queue of vhost `/`, as if published to the
    /// default exchange: to seed a queue before the code under test starts.
    pub fn seed(
        &self,
        queue: &str,
        body: impl Into<bytes::Bytes>,
        properties: amq_protocol::protocol::BasicProperties,
    ) -> Result<(), AmqpError> {
        self.shared
            .vhosts
            .get("/")
            .expect("vhost / always exists")
            .lock()
            .seed(queue, body.into(), properties)
    }
}
