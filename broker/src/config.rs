//! Broker settings: credentials, virtual hosts and the limits that keep hostile or
//! broken clients from taking unbounded memory. Defaults follow RabbitMQ's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::alarms::{parse_size, MemoryHighWatermark};
use crate::auth::{Permissions, User, Users};
use crate::profile::Profile;

#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on; port 0 picks a free port. Empty: in-process only.
    pub bind: Vec<SocketAddr>,
    /// The default user, tagged `administrator`, with full permissions in every
    /// vhost that `permissions` does not name for it.
    pub user: String,
    pub password: String,
    /// Further users; they have only the permissions `permissions` gives them.
    pub users: Vec<User>,
    /// (user, vhost, permissions) entries.
    pub permissions: Vec<(String, String, Permissions)>,
    /// Users who may log in only from a loopback address (RabbitMQ's
    /// `loopback_users`, `guest` by default).
    pub loopback_users: Vec<String>,
    /// Virtual hosts besides `/`, which always exists.
    pub vhosts: Vec<String>,
    /// Where durable state is kept; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Proposed in `connection.tune`; a client's smaller value wins.
    pub channel_max: u16,
    pub frame_max: u32,
    /// Heartbeat interval proposed in `connection.tune`, in seconds.
    pub heartbeat: u16,
    /// Largest message body accepted (RabbitMQ's `max_message_size`); `None`
    /// takes the profile's default (see [`Config::max_message_size`]).
    pub max_message_size: Option<u64>,
    pub max_connections: usize,
    /// How long a client may take from TCP connect to `connection.open`.
    pub handshake_timeout: Duration,
    /// How long the broker waits for `close-ok` after it sent `connection.close`.
    pub close_timeout: Duration,
    /// How long a TCP connection's task polls its socket after traffic (and all
    /// the while its client streams) before it parks, one connection at a time;
    /// zero never polls. See `busy_wait`.
    pub busy_wait: Duration,
    /// TTLs, queue expiry and consumer timeouts follow a virtual clock that only
    /// `Broker::advance` moves, instead of real time.
    pub virtual_clock: bool,
    /// Process memory above which publishers are blocked (RabbitMQ's
    /// `vm_memory_high_watermark`): 0.4 of the memory the process may use by
    /// default.
    pub memory_high_watermark: MemoryHighWatermark,
    /// With a data directory, free bytes on its file system below which
    /// publishers are blocked (RabbitMQ's `disk_free_limit`, 50 MB); 0: never.
    pub disk_free_limit: u64,
    /// A delivery left unacknowledged longer than this closes its channel with
    /// 406 PRECONDITION_FAILED (RabbitMQ's `consumer_timeout`, 30 minutes in
    /// 3.10); `None` never does.
    pub consumer_timeout: Option<Duration>,
    /// Where the management HTTP API listens; `None`: no HTTP listener.
    pub management: Option<SocketAddr>,
    /// The RabbitMQ release imitated (3.10 by default) and the deprecated
    /// features permitted or denied on top of it. `profile.release()` and
    /// `profile.product_name()` are what RabbitMQ reports as its version and
    /// product, in `connection.start` and in the management API.
    pub profile: Profile,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            user: "guest".into(),
            password: "guest".into(),
            users: Vec::new(),
            permissions: Vec::new(),
            loopback_users: vec!["guest".into()],
            vhosts: Vec::new(),
            data_dir: None,
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            max_message_size: None,
            max_connections: 65_535,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(3),
            busy_wait: crate::busy_wait::DEFAULT,
            virtual_clock: false,
            memory_high_watermark: MemoryHighWatermark::default(),
            disk_free_limit: crate::alarms::DEFAULT_DISK_FREE_LIMIT,
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            management: None,
            profile: Profile::default(),
        }
    }
}

impl Config {
    /// The largest message body accepted: the configured one, or the profile's
    /// default (128 MiB before RabbitMQ 4.0, 16 MiB from 4.0).
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size
            .unwrap_or_else(|| self.profile.max_message_size_default())
    }

    /// The users a broker starts with: the default user (tagged `administrator`,
    /// with full permissions in each of `vhosts` that `permissions` does not
    /// name for it, as RabbitMQ gives its default user on the default vhost),
    /// the further users, and the permissions listed.
    pub(crate) fn initial_users<'a>(
        &self,
        vhosts: impl Iterator<Item = &'a str>,
    ) -> std::io::Result<Users> {
        let users = Users::new(self.loopback_users.clone());
        users.put_user(User::new(&self.user, &self.password, &["administrator"]));
        for user in &self.users {
            users.put_user(user.clone());
        }
        for vhost in vhosts {
            users
                .set_permissions(&self.user, vhost, Permissions::full())
                .expect(".* compiles");
        }
        for (user, vhost, permissions) in &self.permissions {
            users
                .set_permissions(user, vhost, permissions.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        Ok(users)
    }
}
