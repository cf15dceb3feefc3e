//! Publisher confirms: acks and nacks in delivery-tag order, each sent once the store
//! has made its message durable (or at once when nothing waits for the disk).

use amq_protocol::protocol::{basic, AMQPClass};

use super::*;

impl Connection {
    /// Sends what waited for the disk and is now due: publisher confirms, and
    /// the commit-ok of transactions now durable.
    pub fn flush_confirms(&mut self) {
        self.send_due_confirms();
        self.complete_commits();
    }

    /// Acknowledges every publish that is safe — enqueued, and on disk when it
    /// had to be — with one `basic.ack` per channel (multiple when it covers
    /// several). Once the store has failed, what it did not write is nacked.
    pub(super) fn send_due_confirms(&mut self) {
        let (durable, failed) = match &self.shared.store {
            Some(store) => (store.durable_lsn(), store.has_failed()),
            None => (u64::MAX, false),
        };
        for (&ch, chan) in &mut self.channels {
            let Some(confirms) = &mut chan.confirm else {
                continue;
            };
            // Consecutive acks go out as one `multiple` ack.
            let mut run: Option<(u64, bool)> = None;
            let outbox = &self.outbox;
            let flush_run = |run: &mut Option<(u64, bool)>| {
                if let Some((tag, multiple)) = run.take() {
                    outbox.push(method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                            delivery_tag: tag,
                            multiple,
                        })),
                    ));
                }
            };
            while let Some(p) = confirms.pending.front().copied() {
                if p.lsn == WITHHELD {
                    break;
                }
                let lost = failed && p.lsn > durable;
                if p.lsn > durable && !lost {
                    break;
                }
                confirms.pending.pop_front();
                if p.nack || lost {
                    flush_run(&mut run);
                    outbox.push(method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                            delivery_tag: p.seq,
                            multiple: false,
                            requeue: false,
                        })),
                    ));
                } else {
                    run = Some((p.seq, run.is_some()));
                }
            }
            flush_run(&mut run);
        }
    }

    pub(super) fn flush_channel_confirms(&mut self, ch: u16) {
        if self
            .channels
            .get(&ch)
            .and_then(|c| c.confirm.as_ref())
            .is_some_and(|c| !c.pending.is_empty())
        {
            self.send_due_confirms();
        }
    }

    /// Where the driver learns that the store made more publishes durable.
    pub fn durability_updates(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.shared.store.as_ref().map(|s| s.subscribe())
    }
}
