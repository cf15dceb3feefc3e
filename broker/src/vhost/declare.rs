//! The entities a client declares: exchanges, queues and the bindings between
//! them — declare, compare on redeclaration, bind, unbind, purge, delete, and
//! the auto-deletes that follow.

use super::*;

pub(super) fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

pub(super) fn locked_error(queue: &str, vhost: &str) -> AmqpError {
    AmqpError::locked(format!(
        "cannot obtain exclusive access to locked queue '{queue}' in vhost '{vhost}'. \
         It could be originally declared on another connection or the exclusive property \
         value does not match that of the original declaration."
    ))
}

pub(super) fn check_exclusive(q: &Queue, conn: ConnId, vhost: &str) -> Result<(), AmqpError> {
    match q.exclusive_owner {
        Some(owner) if owner != conn => Err(locked_error(&q.name, vhost)),
        _ => Ok(()),
    }
}

/// The default exchange has no other name: RabbitMQ 3.10 knows no
/// "amq.default" on the wire.
pub(super) fn is_default_exchange(name: &str) -> bool {
    name.is_empty()
}

pub(super) fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

pub(super) fn queue_binding(queue: &str, routing_key: &str, arguments: &FieldTable) -> Binding {
    Binding {
        destination: Destination::Queue(queue.to_owned()),
        routing_key: routing_key.to_owned(),
        arguments: arguments.clone(),
    }
}

impl VhostState {
    #[allow(clippy::too_many_arguments)]
    pub fn declare_exchange(
        &mut self,
        name: &str,
        kind: &str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if is_default_exchange(name) {
            return Err(default_exchange_refused());
        }
        if passive {
            return self.exchange(name).map(|_| ());
        }
        // x-local-random is a type from RabbitMQ 4.0 on; before, the name is as
        // unknown as any other (live 3.10.8).
        // x-modulus-hash from 4.3 (a plugin's, off by default, before).
        let known = ExchangeKind::parse(kind).filter(|k| match k {
            ExchangeKind::LocalRandom => self.profile.local_random_exchange(),
            ExchangeKind::ModulusHash => self.profile.modulus_hash_exchange(),
            _ => true,
        });
        let Some(kind) = known else {
            return Err(AmqpError::connection(
                crate::error::code::COMMAND_INVALID,
                // RabbitMQ says "invalid" for type names its Erlang VM already
                // knows as atoms and "unknown" for the rest; these are the names
                // seen to be known.
                if matches!(kind, "" | "foo") {
                    format!("invalid exchange type '{kind}'")
                } else {
                    format!("unknown exchange type '{kind}'")
                },
            ));
        };
        let vhost = &self.name;
        if let Some(ex) = self.exchanges.get(name) {
            let mismatch = |arg: &str, got: &str, current: &str| {
                AmqpError::precondition(format!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': \
                     received '{got}' but current is '{current}'"
                ))
            };
            if ex.kind != kind {
                return Err(mismatch("type", kind.as_str(), ex.kind.as_str()));
            }
            if ex.durable != durable {
                return Err(mismatch("durable", bool_str(durable), bool_str(ex.durable)));
            }
            if ex.auto_delete != auto_delete {
                return Err(mismatch(
                    "auto_delete",
                    bool_str(auto_delete),
                    bool_str(ex.auto_delete),
                ));
            }
            if ex.internal != internal {
                return Err(mismatch(
                    "internal",
                    bool_str(internal),
                    bool_str(ex.internal),
                ));
            }
            return check_equivalent_args(
                &format!("exchange '{name}' in vhost '{vhost}'"),
                EXCHANGE_EQUIVALENCE_ARGS,
                &ex.arguments,
                arguments,
            );
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        self.exchanges.insert(
            name.to_owned(),
            Exchange {
                name: name.to_owned(),
                kind,
                durable,
                auto_delete,
                internal,
                arguments: arguments.clone(),
                bindings: Vec::new(),
                index: OnceLock::new(),
            },
        );
        if durable {
            self.log(Record::ExchangeDeclare {
                vhost: self.name.clone(),
                name: name.to_owned(),
                kind: kind.as_str().to_owned(),
                auto_delete,
                internal,
                arguments: arguments.clone(),
            });
        }
        Ok(())
    }

    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if is_default_exchange(name) {
            return Err(default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let Some(ex) = self.exchanges.get(name) else {
            // RabbitMQ answers delete-ok for an exchange that is not there.
            return Ok(());
        };
        if if_unused && !ex.bindings.is_empty() {
            return Err(AmqpError::precondition(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.remove_exchange(name);
        Ok(())
    }

    pub(super) fn remove_exchange(&mut self, name: &str) {
        if let Some(ex) = self.exchanges.remove(name) {
            if ex.durable {
                self.log(Record::ExchangeDelete {
                    vhost: self.name.clone(),
                    name: name.to_owned(),
                });
            }
        }
        self.remove_bindings_to(&Destination::Exchange(name.to_owned()));
    }

    /// Removes every binding leading to `dest`, then the auto-delete exchanges
    /// that this left without bindings.
    pub(super) fn remove_bindings_to(&mut self, dest: &Destination) {
        let mut emptied = Vec::new();
        for ex in self.exchanges.values_mut() {
            let before = ex.bindings.len();
            ex.bindings.retain(|b| &b.destination != dest);
            ex.bindings_changed();
            if ex.bindings.len() != before && ex.bindings.is_empty() && ex.auto_delete {
                emptied.push(ex.name.clone());
            }
        }
        for ex in emptied {
            self.auto_delete_exchange(&ex);
        }
    }

    /// `exchange.bind` (`unbind` with `bind` false): routes from `source` to
    /// `destination`.
    pub fn bind_exchange(
        &mut self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
        bind: bool,
    ) -> Result<(), AmqpError> {
        if is_default_exchange(source) || is_default_exchange(destination) {
            return Err(default_exchange_refused());
        }
        let both_exist =
            self.exchanges.contains_key(source) && self.exchanges.contains_key(destination);
        if !bind && !both_exist {
            return Ok(());
        }
        self.exchange(source)?;
        self.exchange(destination)?;
        if bind {
            check_x_match(self.exchanges[source].kind, arguments)?;
            if self.exchanges[source].kind == ExchangeKind::LocalRandom {
                // validate_binding/2 looks the destination up as a queue.
                local_random_binding(routing_key, None)?;
            }
        }
        self.change_binding(
            source,
            Binding {
                destination: Destination::Exchange(destination.to_owned()),
                routing_key: routing_key.to_owned(),
                arguments: arguments.clone(),
            },
            bind,
        );
        Ok(())
    }

    pub(super) fn change_binding(&mut self, source: &str, binding: Binding, bind: bool) {
        let durable = self.binding_is_durable(source, &binding.destination);
        let ex = self
            .exchanges
            .get_mut(source)
            .expect("checked by the caller");
        let changed = if bind {
            let new = !ex.bindings.contains(&binding);
            if new {
                ex.bindings.push(binding.clone());
                ex.bindings_changed();
            }
            new
        } else {
            let before = ex.bindings.len();
            ex.bindings.retain(|b| b != &binding);
            ex.bindings_changed();
            before != ex.bindings.len()
        };
        if changed && durable {
            self.log_binding(source, &binding, bind);
        }
        if !bind {
            self.auto_delete_exchange(source);
        }
    }

    pub(super) fn exchange(&self, name: &str) -> Result<&Exchange, AmqpError> {
        self.exchanges.get(name).ok_or_else(|| {
            AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
        })
    }

    pub fn declare_queue(
        &mut self,
        conn: ConnId,
        d: QueueDeclare,
    ) -> Result<(String, u32, u32), AmqpError> {
        if d.passive {
            self.queue_for(conn, &d.name)?;
            // A passive declare counts as use for `x-expires`, as in RabbitMQ.
            let now = self.clock.now_ms();
            let q = self.queues.get_mut(d.name.as_str()).expect("checked above");
            q.last_used = now;
            return Ok((q.name.clone(), q.message_count(), q.consumer_count()));
        }
        let vhost = self.name.clone();
        let new = !self.queues.contains_key(d.name.as_str());
        // A redeclaration is compared with the queue as it is; only a new queue
        // is checked against what its type takes.
        if new {
            check_type_args(&d.name, &vhost, &d.arguments, &self.profile)?;
        }
        validate_queue_args(&d.name, &vhost, &d.arguments, &self.profile)?;
        let limits = Limits::from_args(&d.arguments);
        if new {
            self.check_deprecated_declare(&d, &limits)?;
        }
        if new {
            match limits.kind {
                QueueType::Classic => {}
                QueueType::Quorum => check_quorum(&d, &vhost)?,
                QueueType::Stream => check_stream(&d, &vhost)?,
            }
        }
        // RabbitMQ 3.10 makes exclusive queues non-durable, whatever was asked.
        let mut d = d;
        d.durable &= !d.exclusive;
        if let Some(q) = self.queues.get(d.name.as_str()) {
            check_exclusive(q, conn, &vhost)?;
            if d.exclusive != q.exclusive_owner.is_some() {
                return Err(locked_error(&q.name, &vhost));
            }
            let mismatch = |arg: &str, got: bool, current: bool| {
                AmqpError::precondition(format!(
                    "inequivalent arg '{arg}' for queue '{}' in vhost '{vhost}': \
                     received '{}' but current is '{}'",
                    d.name,
                    bool_str(got),
                    bool_str(current)
                ))
            };
            if q.durable != d.durable {
                return Err(mismatch("durable", d.durable, q.durable));
            }
            if q.auto_delete != d.auto_delete {
                return Err(mismatch("auto_delete", d.auto_delete, q.auto_delete));
            }
            check_equivalent_args(
                &format!("queue '{}' in vhost '{vhost}'", q.name),
                QUEUE_EQUIVALENCE_ARGS,
                &q.arguments,
                &d.arguments,
            )?;
            let now = self.clock.now_ms();
            let q = self.queues.get_mut(d.name.as_str()).expect("found above");
            q.last_used = now;
            return Ok((q.name.clone(), q.message_count(), q.consumer_count()));
        }
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        let owner = d.exclusive.then_some(conn);
        let queue = Queue::new(
            id,
            d.clone(),
            owner,
            self.clock.now_ms(),
            self.profile.quorum_priorities(),
        );
        self.timed |= queue.limits.expires.is_some() || queue.limits.message_ttl.is_some();
        self.refusing |= queue.limits.may_refuse();
        self.queues.insert(d.name.as_str().into(), queue);
        if d.durable && !d.exclusive {
            self.log(Record::QueueDeclare {
                vhost: vhost.clone(),
                name: d.name.clone(),
                auto_delete: d.auto_delete,
                arguments: self.queues[d.name.as_str()].arguments.clone(),
            });
        }
        Ok((d.name, 0, 0))
    }

    /// Looks a queue up on behalf of `conn`, refusing another connection's
    /// exclusive queue.
    pub(super) fn queue_for(&self, conn: ConnId, name: &str) -> Result<&Queue, AmqpError> {
        let q = self.queues.get(name).ok_or_else(|| {
            AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
        })?;
        check_exclusive(q, conn, &self.name)?;
        Ok(q)
    }

    pub fn bind_queue(
        &mut self,
        conn: ConnId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if is_default_exchange(exchange) {
            return Err(default_exchange_refused());
        }
        self.exchange(exchange)?;
        let q = self.queue_for(conn, queue)?;
        let queue_type = q.limits.kind;
        check_x_match(self.exchanges[exchange].kind, arguments)?;
        if self.exchanges[exchange].kind == ExchangeKind::LocalRandom {
            local_random_binding(routing_key, Some(queue_type))?;
        }
        self.change_binding(exchange, queue_binding(queue, routing_key, arguments), true);
        Ok(())
    }

    /// `queue.unbind`: like RabbitMQ, succeeds when there is nothing to remove.
    pub fn unbind_queue(
        &mut self,
        conn: ConnId,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if is_default_exchange(exchange) {
            return Err(default_exchange_refused());
        }
        let binding = queue_binding(queue, routing_key, arguments);
        let exists = self
            .exchanges
            .get(exchange)
            .is_some_and(|e| e.bindings.contains(&binding));
        // RabbitMQ looks at the queue only when there is a binding to remove.
        if exists {
            self.queue_for(conn, queue)?;
            self.change_binding(exchange, binding, false);
        }
        Ok(())
    }

    pub fn purge_queue(&mut self, conn: ConnId, name: &str) -> Result<u32, AmqpError> {
        if self.queue_for(conn, name)?.stream.is_some() {
            return Err(stream::not_supported("queue.purge", name, &self.name));
        }
        let q = self.queues.get_mut(name).expect("checked above");
        let purged: Vec<Queued> = q.ready.drain();
        for item in &purged {
            if item.persisted {
                self.log_removed(name, &item.msg);
            }
        }
        Ok(purged.len() as u32)
    }

    /// Deletes a queue for the management API or the test double (no channel):
    /// returns how many messages it held.
    pub fn delete_queue(
        &mut self,
        conn: ConnId,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        self.delete_queue_on(conn, 0, name, if_unused, if_empty)
            .map(|(n, _)| n)
    }

    /// `queue.delete` on channel `ch`: returns how many messages the queue held
    /// and the tags of `ch`'s own consumers of it, whose `basic.cancel` must
    /// follow `delete-ok`. RabbitMQ's channel process learns that the queue is
    /// gone from the queue process's exit, which it reads only after the reply
    /// to its own delete call (rabbit_channel.erl:1668-1676 replies,
    /// :815-835 and :1844-1884 cancel); every other channel hears of it at once.
    pub fn delete_queue_on(
        &mut self,
        conn: ConnId,
        ch: u16,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<(u32, Vec<Arc<str>>), AmqpError> {
        let q = match self.queue_for(conn, name) {
            Ok(q) => q,
            // RabbitMQ answers delete-ok for a queue that is not there.
            Err(e) if e.code == crate::error::code::NOT_FOUND => return Ok((0, Vec::new())),
            Err(e) => return Err(e),
        };
        // For a stream both read RabbitMQ's counts, which are 0.
        if if_unused && q.consumer_count() > 0 {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && q.message_count() > 0 {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        let mut own = Vec::new();
        let n = self.delete_queue_entity(name, Some((conn, ch, &mut own)));
        Ok((n, own))
    }

    /// Removes a queue with its bindings; its consumers are told (`basic.cancel`)
    /// when their client asked for that, except those of the `deleter` channel,
    /// whose tags are collected for it to cancel after its reply. Returns how
    /// many messages it held.
    pub(super) fn delete_queue_entity(
        &mut self,
        name: &str,
        mut deleter: Option<(ConnId, u16, &mut Vec<Arc<str>>)>,
    ) -> u32 {
        let Some(q) = self.queues.remove(name) else {
            return 0;
        };
        if q.is_durable() {
            self.log(Record::QueueDelete {
                vhost: self.name.clone(),
                name: name.to_owned(),
            });
            if let Some(store) = &self.store {
                for item in q.ready.iter().filter(|i| i.persisted) {
                    store.released(item.msg.size());
                }
                for (_, e) in q.stream.iter().flat_map(stream::Log::iter) {
                    if e.msg.persist_id().is_some() {
                        store.released(e.msg.size());
                    }
                }
            }
        }
        for c in &q.consumers {
            if let Some(st) = self.channels.get_mut(&(c.conn, c.channel)) {
                st.consumers.remove(&*c.tag);
            }
            if let Some((conn, ch, own)) = &mut deleter {
                if (*conn, *ch) == (c.conn, c.channel) {
                    own.push(c.tag.clone());
                    continue;
                }
            }
            if let Some(conn) = self.conns.get(&c.conn) {
                if conn.cancel_notify {
                    let tag = c.tag.clone();
                    conn.outbox.push(|out| {
                        codec::put_method(
                            out,
                            c.channel,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                                consumer_tag: tag.to_string().into(),
                                nowait: true,
                            })),
                        )
                    });
                }
            }
        }
        self.remove_bindings_to(&Destination::Queue(name.to_owned()));
        q.message_count()
    }

    pub(super) fn auto_delete_exchange(&mut self, name: &str) {
        if let Some(ex) = self.exchanges.get(name) {
            if ex.auto_delete && ex.bindings.is_empty() {
                self.remove_exchange(name);
            }
        }
    }

    pub(super) fn auto_delete_if_unused(&mut self, name: &str) {
        if let Some(q) = self.queues.get(name) {
            if q.auto_delete && q.consumers.is_empty() && q.had_consumer {
                self.delete_queue_entity(name, None);
            }
        }
    }
}
