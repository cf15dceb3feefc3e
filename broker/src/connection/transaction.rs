//! Transactions (`tx.select`, `commit`, `rollback`): publishes and settlements held
//! per channel until commit, and a commit's `commit-ok` held until its publishes are
//! durable.

use std::collections::VecDeque;

use amq_protocol::protocol::{tx, AMQPClass};

use crate::error::AmqpError;

use super::methods::server_only;
use super::*;

impl Connection {
    pub(super) fn on_tx(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<(), AmqpError> {
        use tx::AMQPMethod as M;
        let chan = self.channel(ch);
        match m {
            M::Select(_) => {
                if chan.confirm.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                chan.tx.get_or_insert_with(Vec::new);
                self.send(ch, AMQPClass::Tx(M::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            M::Commit(_) => {
                let Some(ops) = chan.tx.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                let vhost = self.vhost().clone();
                let mut v = vhost.lock();
                let mut settles = Vec::new();
                let mut lsn = 0;
                for op in ops {
                    match op {
                        TxOp::Publish {
                            targets,
                            mandatory,
                            msg,
                        } => {
                            let published = v.publish(self.id, ch, &targets, mandatory, *msg, true);
                            lsn = lsn.max(published.lsn.unwrap_or(0));
                        }
                        settle => settles.push(settle),
                    }
                }
                drop(v);
                let durable = self.shared.store.as_ref().map_or(0, |s| s.durable_lsn());
                if lsn > durable {
                    self.channel(ch).committing = Some(Committing {
                        lsn,
                        settles,
                        held: VecDeque::new(),
                    });
                    return Ok(());
                }
                self.commit_ok(ch, settles)
            }
            M::Rollback(_) => {
                let Some(ops) = chan.tx.as_mut() else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                ops.clear();
                self.send(ch, AMQPClass::Tx(M::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            _ => Err(server_only()),
        }
    }

    /// Sends the commit-ok of every commit whose messages are now on disk, then
    /// applies its settles and handles the frames its channel held meanwhile.
    /// Once the store has failed, a commit it did not write closes its channel
    /// as RabbitMQ does when a queue cannot take a transaction's message.
    pub(super) fn complete_commits(&mut self) {
        let Some(store) = &self.shared.store else {
            return;
        };
        let (durable, failed) = (store.durable_lsn(), store.has_failed());
        let due: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| {
                c.committing
                    .as_ref()
                    .is_some_and(|c| c.lsn <= durable || failed)
            })
            .map(|(&ch, _)| ch)
            .collect();
        for ch in due {
            let Some(commit) = self.channels.get_mut(&ch).and_then(|c| c.committing.take()) else {
                continue;
            };
            if commit.lsn > durable {
                self.fail(
                    ch,
                    AmqpError::precondition("partial tx completion").on_method(90, 20),
                );
                continue;
            }
            if let Err(e) = self.commit_ok(ch, commit.settles) {
                self.fail(ch, e.on_method(90, 20));
                continue;
            }
            for frame in commit.held {
                if self.phase != Phase::Opened {
                    break;
                }
                // A later commit on the channel holds the rest again, in order.
                self.on_channel_frame(ch, frame);
            }
        }
    }

    /// Answers a commit and applies its settles: RabbitMQ enqueues the
    /// publishes, answers, then settles, so the redeliveries a nack causes
    /// come after commit-ok.
    pub(super) fn commit_ok(&mut self, ch: u16, settles: Vec<TxOp>) -> Result<(), AmqpError> {
        self.send(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
        let vhost = self.vhost().clone();
        for op in settles {
            if let TxOp::Settle {
                tag,
                multiple,
                requeue,
                failed,
            } = op
            {
                vhost
                    .lock()
                    .settle(self.id, ch, tag, multiple, requeue, failed)?;
            }
        }
        Ok(())
    }
}
