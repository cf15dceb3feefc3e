//! The handshake: protocol header, `connection.start` with the server's properties,
//! SASL (PLAIN, AMQPLAIN) checked against the users, tune and `connection.open`.

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::AMQPValue;
use bytes::BytesMut;

use crate::codec::PROTOCOL_HEADER;
use crate::error::{code, AmqpError};

use super::*;

pub(super) fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, pass))
}

pub(super) fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    // The response is a field table without its length prefix.
    let mut framed = (response.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
    let text = |k: &str| match table.inner().get(k)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

impl Connection {
    /// Returns true once a valid header was consumed.
    pub(super) fn handle_header(&mut self, buf: &mut BytesMut) -> bool {
        let n = buf.len().min(8);
        // RabbitMQ still accepts the 0-9 header of old clients, and speaks 0-9-1.
        const OLD_0_9: &[u8; 8] = b"AMQP\x01\x01\x00\x09";
        if buf[..n] != PROTOCOL_HEADER[..n] && buf[..n] != OLD_0_9[..n] {
            // The spec: answer with the header we support, then close.
            self.outbox
                .push(|out| out.extend_from_slice(PROTOCOL_HEADER));
            self.phase = Phase::Closed;
            return false;
        }
        if n < 8 {
            return false;
        }
        let _ = buf.split_to(8);
        self.send_start();
        self.phase = Phase::StartOk;
        true
    }

    pub(super) fn send_start(&self) {
        let props = self.shared.config.profile.server_properties();
        self.outbox.push(method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            })),
        ));
    }

    pub(super) fn handshake(&mut self, m: connection::AMQPMethod) -> Result<(), AmqpError> {
        use connection::AMQPMethod as M;
        match (self.phase, m) {
            (Phase::StartOk, M::StartOk(s)) => {
                if let Some(AMQPValue::FieldTable(caps)) =
                    s.client_properties.inner().get("capabilities")
                {
                    let on =
                        |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
                    self.cancel_notify = on("consumer_cancel_notify");
                    self.auth_failure_close = on("authentication_failure_close");
                    self.blocked_notify = on("connection.blocked");
                }
                let mechanism = s.mechanism.as_str();
                let creds = match mechanism {
                    "PLAIN" => parse_plain(s.response.as_bytes()),
                    "AMQPLAIN" => parse_amqplain(s.response.as_bytes()),
                    other => {
                        return Err(AmqpError::socket(format!(
                            "unknown authentication mechanism '{other}'"
                        )))
                    }
                };
                let Some((user, password)) = creds else {
                    return Err(AmqpError::socket("malformed authentication response"));
                };
                let peer = self.info.peer.parse::<std::net::SocketAddr>().ok();
                let login = self
                    .shared
                    .users
                    .login(&user, &password, peer.map(|p| p.ip()));
                match login {
                    Ok(user) => self.user = Some(user),
                    Err(why) => {
                        // RabbitMQ's log line (rabbit_reader.erl:1458-1464); the
                        // client is told only that the login was refused.
                        tracing::warn!(conn = self.id, "{mechanism} login refused: {why}");
                        if !self.auth_failure_close {
                            self.phase = Phase::Closed;
                            return Ok(());
                        }
                        return Err(AmqpError::connection(
                            code::ACCESS_REFUSED,
                            format!(
                                "Login was refused using authentication mechanism {mechanism}. \
                                 For details see the broker logfile."
                            ),
                        ));
                    }
                }
                let cfg = &self.shared.config;
                let _ = self.info.client.set(crate::commands::ClientInfo {
                    user: self
                        .user
                        .as_ref()
                        .map_or_else(String::new, |u| u.name.clone()),
                    properties: s.client_properties.clone(),
                    connected_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                });
                self.send_connection(M::Tune(connection::Tune {
                    channel_max: cfg.channel_max,
                    frame_max: cfg.frame_max,
                    heartbeat: cfg.heartbeat,
                }));
                self.phase = Phase::TuneOk;
                Ok(())
            }
            (Phase::TuneOk, M::TuneOk(t)) => {
                let cfg = &self.shared.config;
                if t.channel_max == 0 || t.channel_max > cfg.channel_max {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!(
                            "negotiated channel_max = {} is higher than the maximum allowed value ({})",
                            t.channel_max, cfg.channel_max
                        ),
                    ));
                }
                if t.frame_max > cfg.frame_max {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("frame_max={} > {} max size", t.frame_max, cfg.frame_max),
                    ));
                }
                let min = cfg.profile.frame_min_size();
                if t.frame_max < min {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("frame_max={} < {min} min size", t.frame_max),
                    ));
                }
                self.channel_max = t.channel_max;
                self.frame_max = t.frame_max;
                self.heartbeat = t.heartbeat;
                self.phase = Phase::Open;
                Ok(())
            }
            (Phase::Open, M::Open(o)) => {
                let name = o.virtual_host.as_str();
                let Some(vhost) = self.shared.vhosts.get(name) else {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("vhost {name} not found"),
                    )
                    .on_method(10, 40));
                };
                // rabbit_access_control:check_vhost_access: any permission entry
                // for the vhost lets the user in (rabbit_auth_backend_internal.erl:121).
                let user = self.user_name().to_owned();
                self.grant_generation = self.shared.users.generation();
                self.grant = self.shared.users.grant(&user, name);
                if self.grant.is_none() {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("access to vhost '{name}' refused for user '{user}'"),
                    )
                    .on_method(10, 40));
                }
                self.vhost_name = name.to_owned();
                vhost.lock().register_connection(
                    self.id,
                    self.outbox.clone(),
                    self.frame_max,
                    self.cancel_notify,
                );
                *self.info.vhost.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.to_owned());
                self.vhost = Some(vhost);
                self.send_connection(M::OpenOk(connection::OpenOk {}));
                self.phase = Phase::Opened;
                Ok(())
            }
            (phase, m) => {
                let m = AMQPClass::Connection(m);
                // RabbitMQ's names for its connection states.
                let state = match phase {
                    Phase::StartOk => "starting",
                    Phase::TuneOk => "tuning",
                    _ => "opening",
                };
                Err(AmqpError::connection(
                    code::CHANNEL_ERROR,
                    format!("unexpected method in connection state {state}"),
                )
                .on_method(m.get_amqp_class_id(), m.get_amqp_method_id()))
            }
        }
    }
}
