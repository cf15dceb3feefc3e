//! Who may log in and what they may touch: users with passwords and tags,
//! per-vhost permissions (configure, write and read regular expressions) and
//! `loopback_users`, checked as RabbitMQ 3.10's internal auth backend does.
//!
//! References (rabbitmq-server v3.10.8):
//! - `deps/rabbit/src/rabbit_auth_backend_internal.erl:75-119`: a blank password
//!   is refused; an unknown user and a wrong password both read "user 'u' -
//!   invalid credentials".
//! - `rabbit_auth_backend_internal.erl:121-148`: vhost access is having a
//!   permission entry for the vhost; a resource is allowed when its name matches
//!   the permission's regular expression anywhere (`re:run`, unanchored), and an
//!   empty expression means `^$`.
//! - `deps/rabbit/src/rabbit_access_control.erl:131-137`: `loopback_users` may log
//!   in only from a loopback address; `:181-198`: the default exchange is
//!   checked as `amq.default`, and a refusal reads "access to exchange
//!   'amq.default' in vhost '/' refused for user 'u'".

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use regex::Regex;

use crate::error::AmqpError;

/// A user who may log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
    /// RabbitMQ's user tags (`administrator`, `management`, `impersonator`, ...).
    pub tags: Vec<String>,
}

impl User {
    pub fn new(name: &str, password: &str, tags: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            password: password.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// One user's rights in one vhost: regular expressions over resource names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl Permissions {
    pub fn new(configure: &str, write: &str, read: &str) -> Self {
        Self {
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        }
    }

    /// `.*` for all three: everything.
    pub fn full() -> Self {
        Self::new(".*", ".*", ".*")
    }
}

/// Which permission an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// The kind of resource a permission is checked on; part of the refusal text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Exchange,
    Queue,
}

/// One permission, compiled once when it is set.
#[derive(Debug)]
enum Pattern {
    /// `.*` (or another expression that matches every name): no matching needed,
    /// so a publisher with full rights pays nothing per message.
    Any,
    Regex(Regex),
}

impl Pattern {
    fn compile(expr: &str) -> Result<Pattern, String> {
        if expr == ".*" || expr == "^.*" || expr == "^.*$" || expr == ".*$" {
            return Ok(Pattern::Any);
        }
        // RabbitMQ reads an empty expression as `^$`: nothing but the empty name.
        let expr = if expr.is_empty() { "^$" } else { expr };
        Regex::new(expr)
            .map(Pattern::Regex)
            .map_err(|e| format!("invalid regular expression '{expr}': {e}"))
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Regex(re) => re.is_match(name),
        }
    }
}

/// A user's permissions in one vhost, as a connection holds them.
#[derive(Debug)]
pub struct Grant {
    spec: Permissions,
    configure: Pattern,
    write: Pattern,
    read: Pattern,
}

impl Grant {
    fn compile(spec: Permissions) -> Result<Grant, String> {
        Ok(Grant {
            configure: Pattern::compile(&spec.configure)?,
            write: Pattern::compile(&spec.write)?,
            read: Pattern::compile(&spec.read)?,
            spec,
        })
    }

    pub fn allows(&self, access: Access, name: &str) -> bool {
        match access {
            Access::Configure => self.configure.matches(name),
            Access::Write => self.write.matches(name),
            Access::Read => self.read.matches(name),
        }
    }
}

/// The check a connection makes before an operation on a resource: RabbitMQ's
/// `check_resource_access`, with its 403 text. `grant` is `None` when the user
/// has no permissions in the vhost at all.
pub fn check(
    grant: Option<&Grant>,
    user: &str,
    vhost: &str,
    access: Access,
    kind: Resource,
    name: &str,
) -> Result<(), AmqpError> {
    // The default exchange is checked under its other name
    // (rabbit_access_control.erl:181-184).
    let name = if kind == Resource::Exchange && name.is_empty() {
        "amq.default"
    } else {
        name
    };
    if grant.is_some_and(|g| g.allows(access, name)) {
        return Ok(());
    }
    let kind = match kind {
        Resource::Exchange => "exchange",
        Resource::Queue => "queue",
    };
    Err(AmqpError::access_refused(format!(
        "access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"
    )))
}

/// Why a login was refused; the text RabbitMQ logs (the client is told only
/// "Login was refused using authentication mechanism PLAIN").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    BlankPassword(String),
    InvalidCredentials(String),
    LoopbackOnly(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // rabbit_auth_backend_internal.erl's ?BLANK_PASSWORD_REJECTION_MESSAGE.
            Refusal::BlankPassword(u) => write!(
                f,
                "user '{u}' attempted to log in with a blank password, which is prohibited by the internal authN backend. To use TLS/x509 certificate-based authentication, see the rabbitmq_auth_mechanism_ssl plugin and configure the client to use the EXTERNAL authentication mechanism. Alternatively change the password for the user to be non-blank."
            ),
            Refusal::InvalidCredentials(u) => write!(f, "user '{u}' - invalid credentials"),
            // rabbit_reader.erl:1442.
            Refusal::LoopbackOnly(u) => write!(f, "user '{u}' can only connect via localhost"),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    users: BTreeMap<String, User>,
    /// (user, vhost) → permissions.
    grants: BTreeMap<(String, String), Arc<Grant>>,
    loopback_users: Vec<String>,
}

/// The broker's users and their permissions. Read on every login and
/// `connection.open`; connections keep the grant they were given and fetch it
/// again only when `generation` says something changed.
#[derive(Debug, Default)]
pub struct Users {
    inner: RwLock<Inner>,
    /// Bumped by every change, so that a connection can tell cheaply whether
    /// the grant it holds is still the one in force.
    generation: AtomicU64,
}

impl Users {
    pub(crate) fn new(loopback_users: Vec<String>) -> Self {
        let users = Users::default();
        users.write().loopback_users = loopback_users;
        users
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The user with this name and password, if there is one (no address check:
    /// see [`Users::login`]).
    pub fn authenticate(&self, user: &str, password: &str) -> Option<User> {
        self.read()
            .users
            .get(user)
            .filter(|u| !password.is_empty() && u.password == password)
            .cloned()
    }

    /// A login over AMQP from `peer` (`None`: in process, which counts as
    /// loopback), as `rabbit_reader:auth_phase` decides it.
    pub fn login(&self, user: &str, password: &str, peer: Option<IpAddr>) -> Result<User, Refusal> {
        if password.is_empty() {
            return Err(Refusal::BlankPassword(user.to_owned()));
        }
        let found = self
            .authenticate(user, password)
            .ok_or_else(|| Refusal::InvalidCredentials(user.to_owned()))?;
        let local = peer.is_none_or(is_loopback);
        if !local && self.read().loopback_users.iter().any(|u| u == user) {
            return Err(Refusal::LoopbackOnly(user.to_owned()));
        }
        Ok(found)
    }

    /// Adds a user, or replaces the password and tags of one that exists (its
    /// permissions stay, as with RabbitMQ's `PUT /api/users/NAME`).
    pub fn put_user(&self, user: User) {
        self.write().users.insert(user.name.clone(), user);
    }

    /// Removes a user and all their permissions; false if there was none.
    pub fn delete_user(&self, name: &str) -> bool {
        let mut inner = self.write();
        inner.grants.retain(|(u, _), _| u != name);
        inner.users.remove(name).is_some()
    }

    pub fn user(&self, name: &str) -> Option<User> {
        self.read().users.get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<User> {
        self.read().users.values().cloned().collect()
    }

    /// Sets `user`'s permissions in `vhost`. An expression that does not compile
    /// is refused with the reason (RabbitMQ refuses it too). The user need not
    /// exist yet: definitions may list permissions before users.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        permissions: Permissions,
    ) -> Result<(), String> {
        let grant = Arc::new(Grant::compile(permissions)?);
        self.write()
            .grants
            .insert((user.to_owned(), vhost.to_owned()), grant);
        Ok(())
    }

    /// Removes `user`'s permissions in `vhost`; false if there were none.
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> bool {
        self.write()
            .grants
            .remove(&(user.to_owned(), vhost.to_owned()))
            .is_some()
    }

    /// Every (user, vhost, permissions), by user then vhost.
    pub fn permissions(&self) -> Vec<(String, String, Permissions)> {
        self.read()
            .grants
            .iter()
            .map(|((u, v), g)| (u.clone(), v.clone(), g.spec.clone()))
            .collect()
    }

    pub fn permissions_of(&self, user: &str, vhost: &str) -> Option<Permissions> {
        self.grant(user, vhost).map(|g| g.spec.clone())
    }

    /// What a connection of `user` in `vhost` may do; `None`: no access.
    pub(crate) fn grant(&self, user: &str, vhost: &str) -> Option<Arc<Grant>> {
        self.read()
            .grants
            .get(&(user.to_owned(), vhost.to_owned()))
            .cloned()
    }

    /// Users who may log in only from a loopback address.
    pub fn loopback_users(&self) -> Vec<String> {
        self.read().loopback_users.clone()
    }

    pub fn set_loopback_users(&self, users: Vec<String>) {
        self.write().loopback_users = users;
    }
}

/// RabbitMQ's `rabbit_net:is_loopback`: 127.0.0.0/8, ::1 and IPv4-mapped
/// 127.x addresses.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let u = Users::new(vec!["guest".into()]);
        u.put_user(User::new("guest", "guest", &["administrator"]));
        u.put_user(User::new("alice", "pw", &[]));
        u
    }

    #[test]
    fn guest_logs_in_only_over_loopback() {
        let u = users();
        let remote: IpAddr = "10.9.8.7".parse().unwrap();
        assert!(u
            .login("guest", "guest", Some("127.0.0.2".parse().unwrap()))
            .is_ok());
        assert!(u
            .login("guest", "guest", Some("::1".parse().unwrap()))
            .is_ok());
        assert!(u
            .login("guest", "guest", Some("::ffff:127.0.0.1".parse().unwrap()))
            .is_ok());
        assert!(u.login("guest", "guest", None).is_ok());
        assert_eq!(
            u.login("guest", "guest", Some(remote))
                .unwrap_err()
                .to_string(),
            "user 'guest' can only connect via localhost"
        );
        assert!(u.login("alice", "pw", Some(remote)).is_ok());
        u.set_loopback_users(Vec::new());
        assert!(u.login("guest", "guest", Some(remote)).is_ok());
    }

    #[test]
    fn wrong_unknown_and_blank_credentials_are_refused() {
        let u = users();
        assert_eq!(
            u.login("alice", "nope", None),
            Err(Refusal::InvalidCredentials("alice".into()))
        );
        assert_eq!(
            u.login("bob", "pw", None),
            Err(Refusal::InvalidCredentials("bob".into()))
        );
        assert_eq!(
            u.login("alice", "", None),
            Err(Refusal::BlankPassword("alice".into()))
        );
        assert!(u.authenticate("alice", "pw").is_some());
        assert!(u.delete_user("alice"));
        assert!(u.authenticate("alice", "pw").is_none());
    }

    #[test]
    fn permissions_match_anywhere_and_empty_means_nothing() {
        let u = users();
        u.set_permissions("alice", "/", Permissions::new("^alice-", "", "q"))
            .unwrap();
        let g = u.grant("alice", "/").unwrap();
        assert!(g.allows(Access::Configure, "alice-1"));
        assert!(!g.allows(Access::Configure, "bob-alice-1"));
        assert!(!g.allows(Access::Write, "anything"));
        assert!(g.allows(Access::Read, "my-queue"));
        assert!(u.grant("alice", "other").is_none());
        assert!(u
            .set_permissions("alice", "/", Permissions::new("(", "", ""))
            .is_err());
    }

    #[test]
    fn refusals_read_as_rabbitmq_s() {
        let u = users();
        u.set_permissions("alice", "/", Permissions::new("", "", ""))
            .unwrap();
        let g = u.grant("alice", "/");
        let err = check(
            g.as_deref(),
            "alice",
            "/",
            Access::Write,
            Resource::Exchange,
            "",
        )
        .unwrap_err();
        assert_eq!(
            err.reply_text(),
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'alice'"
        );
        let err = check(None, "alice", "v", Access::Read, Resource::Queue, "q").unwrap_err();
        assert_eq!(
            err.reply_text(),
            "ACCESS_REFUSED - access to queue 'q' in vhost 'v' refused for user 'alice'"
        );
    }
}
