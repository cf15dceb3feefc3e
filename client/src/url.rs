//! AMQP URLs (`amqp://user:pass@host:port/vhost?heartbeat=10`) and the settings they carry.
//!
//! Follows RabbitMQ's URI spec: user, password and vhost are percent-decoded (so the
//! default vhost `/` is written `%2f`), and the query may set `heartbeat`, `frame_max`,
//! `channel_max` and `connection_timeout` (milliseconds). An unknown query key is an
//! error rather than silently ignored: a setting that does nothing makes tests lie.

use std::{fmt, str::FromStr, time::Duration};

use crate::error::Error;

/// Everything needed to open a connection: where, as whom, and what to propose in tune.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port (5672 unless given).
    pub port: u16,
    /// User name for PLAIN authentication (`guest` unless given).
    pub username: String,
    /// Password for PLAIN authentication (`guest` unless given).
    pub password: String,
    /// Virtual host (`/` unless given).
    pub vhost: String,
    /// Heartbeat interval in seconds to ask for; `None` accepts the broker's proposal,
    /// `Some(0)` disables heartbeats.
    pub heartbeat: Option<u16>,
    /// Largest frame to ask for; `None` accepts the broker's proposal.
    pub frame_max: Option<u32>,
    /// Most channels to ask for; `None` accepts the broker's proposal.
    pub channel_max: Option<u16>,
    /// How long TCP connect plus handshake may take.
    pub connection_timeout: Option<Duration>,
    /// Shown by the broker's management tools as the connection's name.
    pub connection_name: Option<String>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            host: "localhost".into(),
            port: 5672,
            username: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
            heartbeat: None,
            frame_max: None,
            channel_max: None,
            connection_timeout: None,
            connection_name: None,
        }
    }
}

impl ConnectionConfig {
    /// Parse an `amqp://` URL.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        url.parse()
    }

    /// Render as an `amqp://` URL that parses back to an equal config
    /// (except `connection_name`, which URLs do not carry).
    pub fn to_url(&self) -> String {
        self.to_string()
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidUrl(msg.into())
}

/// Decode `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(format!("bad percent escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("{s:?} is not UTF-8 once decoded")))
}

/// Escape everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_num<T: FromStr>(key: &str, value: &str) -> Result<T, Error> {
    value.parse().map_err(|_| {
        bad(format!(
            "query option {key}={value:?} is not a valid number"
        ))
    })
}

impl FromStr for ConnectionConfig {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        let rest = if let Some(rest) = url.strip_prefix("amqp://") {
            rest
        } else if url.starts_with("amqps://") {
            return Err(bad("amqps (TLS) is not supported by warren-client"));
        } else {
            return Err(bad(format!("{url:?} does not start with amqp://")));
        };
        let mut config = ConnectionConfig::default();

        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (before_query, None),
        };

        let hostport = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                config.username = percent_decode(user)?;
                if let Some(pass) = pass {
                    config.password = percent_decode(pass)?;
                }
                hostport
            }
            None => authority,
        };

        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unterminated IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad(format!("unexpected {p:?} after IPv6 address")))?,
                ),
            };
            (host.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?, Some(p)),
                None => (percent_decode(hostport)?, None),
            }
        };
        if !host.is_empty() {
            config.host = host;
        }
        if let Some(port) = port {
            if !port.is_empty() {
                config.port = port
                    .parse()
                    .map_err(|_| bad(format!("invalid port {port:?}")))?;
            }
        }

        if let Some(path) = path {
            if path.contains('/') {
                return Err(bad(
                    "the vhost must be a single path segment (write / as %2f)",
                ));
            }
            // An empty segment (`amqp://host/`) means the default vhost, as most clients read it.
            if !path.is_empty() {
                config.vhost = percent_decode(path)?;
            }
        }

        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("query option {pair:?} has no value")))?;
            let value = percent_decode(value)?;
            match key {
                "heartbeat" => config.heartbeat = Some(parse_num(key, &value)?),
                "frame_max" => config.frame_max = Some(parse_num(key, &value)?),
                "channel_max" => config.channel_max = Some(parse_num(key, &value)?),
                "connection_timeout" => {
                    config.connection_timeout = Some(Duration::from_millis(parse_num(key, &value)?))
                }
                other => return Err(bad(format!("unsupported query option {other:?}"))),
            }
        }
        Ok(config)
    }
}

impl fmt::Display for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            percent_encode(&self.host)
        };
        write!(
            f,
            "amqp://{}:{}@{}:{}/{}",
            percent_encode(&self.username),
            percent_encode(&self.password),
            host,
            self.port,
            percent_encode(&self.vhost)
        )?;
        let mut sep = '?';
        let mut opt = |f: &mut fmt::Formatter<'_>, k: &str, v: Option<String>| {
            if let Some(v) = v {
                let r = write!(f, "{sep}{k}={v}");
                sep = '&';
                r
            } else {
                Ok(())
            }
        };
        opt(f, "heartbeat", self.heartbeat.map(|v| v.to_string()))?;
        opt(f, "frame_max", self.frame_max.map(|v| v.to_string()))?;
        opt(f, "channel_max", self.channel_max.map(|v| v.to_string()))?;
        opt(
            f,
            "connection_timeout",
            self.connection_timeout.map(|v| v.as_millis().to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_default_url() {
        let c: ConnectionConfig = "amqp://guest:guest@127.0.0.1:5672/%2f".parse().unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 5672);
        assert_eq!(c.vhost, "/");
        assert_eq!(c.username, "guest");
    }

    #[test]
    fn defaults_and_options() {
        let c: ConnectionConfig = "amqp://".parse().unwrap();
        assert_eq!(c, ConnectionConfig::default());
        let c: ConnectionConfig =
            "amqp://u%40x:p%3Aw@[::1]:1234/my%2Fvhost?heartbeat=5&frame_max=4096&channel_max=7&connection_timeout=250"
                .parse()
                .unwrap();
        assert_eq!(c.username, "u@x");
        assert_eq!(c.password, "p:w");
        assert_eq!(c.host, "::1");
        assert_eq!(c.port, 1234);
        assert_eq!(c.vhost, "my/vhost");
        assert_eq!(c.heartbeat, Some(5));
        assert_eq!(c.frame_max, Some(4096));
        assert_eq!(c.channel_max, Some(7));
        assert_eq!(c.connection_timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn rejects() {
        for url in [
            "http://x",
            "amqps://x",
            "amqp://h:notaport",
            "amqp://h:70000",
            "amqp://h/a/b",
            "amqp://h/%zz",
            "amqp://h?heartbeat=x",
            "amqp://h?bogus=1",
            "amqp://[::1",
        ] {
            assert!(url.parse::<ConnectionConfig>().is_err(), "{url} accepted");
        }
    }
}
