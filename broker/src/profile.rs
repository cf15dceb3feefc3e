//! Which RabbitMQ release Warren imitates: the version profiles (3.10 … 4.3) and
//! the answers that differ between them, each taken from RabbitMQ's source at the
//! release tag (`docs/rabbitmq-versions.md` cites the file and line of each).
//!
//! The rest of the broker asks this module questions ("is this deprecated
//! feature permitted?", "what is the default `max_message_size`?") instead of
//! comparing version numbers itself, so that every difference lives here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{code, AmqpError};

/// A RabbitMQ release series Warren can imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum RabbitVersion {
    /// 3.10.8: the RabbitMQ these machines run, observed live.
    #[default]
    V3_10,
    V3_11,
    V3_12,
    V3_13,
    V4_0,
    V4_1,
    V4_2,
    V4_3,
}

impl RabbitVersion {
    /// Every profile, oldest first.
    pub const ALL: [RabbitVersion; 8] = [
        RabbitVersion::V3_10,
        RabbitVersion::V3_11,
        RabbitVersion::V3_12,
        RabbitVersion::V3_13,
        RabbitVersion::V4_0,
        RabbitVersion::V4_1,
        RabbitVersion::V4_2,
        RabbitVersion::V4_3,
    ];

    /// The series, as `--rabbitmq-version` takes it: "4.3".
    pub fn series(self) -> &'static str {
        match self {
            RabbitVersion::V3_10 => "3.10",
            RabbitVersion::V3_11 => "3.11",
            RabbitVersion::V3_12 => "3.12",
            RabbitVersion::V3_13 => "3.13",
            RabbitVersion::V4_0 => "4.0",
            RabbitVersion::V4_1 => "4.1",
            RabbitVersion::V4_2 => "4.2",
            RabbitVersion::V4_3 => "4.3",
        }
    }

    /// The release whose source the profile follows, as RabbitMQ reports it in
    /// `connection.start` and the management API: for 3.10 the one observed live,
    /// for the others the newest patch release tagged in rabbitmq-server.
    pub fn release(self) -> &'static str {
        match self {
            RabbitVersion::V3_10 => "3.10.8",
            RabbitVersion::V3_11 => "3.11.28",
            RabbitVersion::V3_12 => "3.12.14",
            RabbitVersion::V3_13 => "3.13.7",
            RabbitVersion::V4_0 => "4.0.9",
            RabbitVersion::V4_1 => "4.1.8",
            RabbitVersion::V4_2 => "4.2.9",
            RabbitVersion::V4_3 => "4.3.5",
        }
    }

    /// The profile for a version string as a server reports it ("3.10.8") or as
    /// a user names it ("3.10"); `None` for a series Warren has no profile for.
    pub fn from_release(version: &str) -> Option<RabbitVersion> {
        let mut parts = version.trim().split('.');
        let series = format!("{}.{}", parts.next()?, parts.next()?);
        series.parse().ok()
    }
}

impl fmt::Display for RabbitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.series())
    }
}

/// A version Warren has no profile for; its message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVersion(pub String);

impl fmt::Display for UnknownVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = RabbitVersion::ALL.iter().map(|v| v.series()).collect();
        write!(
            f,
            "unknown RabbitMQ version '{}': known versions are {}",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownVersion {}

impl FromStr for RabbitVersion {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RabbitVersion::ALL
            .into_iter()
            .find(|v| v.series() == s.trim())
            .ok_or_else(|| UnknownVersion(s.to_owned()))
    }
}

/// A quorum queue's message priorities, per release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumPriorities {
    /// Until 3.13: FIFO, the property ignored (`rabbit_fifo` keeps one
    /// `lqueue` of messages).
    None,
    /// 4.0 to 4.2: `priority > 4` is "hi", the rest (and no priority) "no"
    /// (`priority_tag/1`, `rabbit_fifo.erl:2987-2999` at v4.2.9), served two
    /// "hi" then whichever head is older (`rabbit_fifo_q.erl:15,44-66,118-135`).
    TwoWeighted,
    /// 4.3: 32 strict levels, `min(priority, 31)`, no priority being 4
    /// (`msg_priority/1`, `rabbit_fifo.erl:48-49,3775-3786` at v4.3.5), the
    /// highest non-empty level first (`rabbit_fifo_pq.erl:52-95`).
    Strict,
}

/// A deprecated feature, as rabbitmq.conf's `deprecated_features.permit.NAME`
/// names it. The framework came with RabbitMQ 3.13; older profiles have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DeprecatedFeature {
    /// Queues that are neither durable nor exclusive (`rabbit_amqqueue.erl`).
    TransientNonexclQueues,
    /// `basic.qos` with `global = true` (`rabbit_channel.erl`).
    GlobalQos,
    /// The `x-queue-master-locator` argument (`rabbit_queue_location.erl`, 4.0+).
    QueueMasterLocator,
    /// `ha-*` policies (`rabbit_mirror_queue_misc.erl`); policies only, which no
    /// AMQP 0-9-1 method sets.
    ClassicQueueMirroring,
    /// RAM cluster nodes (`rabbit_mnesia.erl`); not visible to a client.
    RamNodeType,
    /// The management plugin's metrics collection; not visible to a client.
    ManagementMetricsCollection,
    /// AMQP 1.0 address format v1 (4.0+); not visible to an AMQP 0-9-1 client.
    AmqpAddressV1,
    /// An AMQP 1.0 filter-set quirk (4.1+); not visible to an AMQP 0-9-1 client.
    AmqpFilterSetBug,
}

impl DeprecatedFeature {
    pub const ALL: [DeprecatedFeature; 8] = [
        DeprecatedFeature::TransientNonexclQueues,
        DeprecatedFeature::GlobalQos,
        DeprecatedFeature::QueueMasterLocator,
        DeprecatedFeature::ClassicQueueMirroring,
        DeprecatedFeature::RamNodeType,
        DeprecatedFeature::ManagementMetricsCollection,
        DeprecatedFeature::AmqpAddressV1,
        DeprecatedFeature::AmqpFilterSetBug,
    ];

    /// RabbitMQ's name for it.
    pub fn name(self) -> &'static str {
        match self {
            DeprecatedFeature::TransientNonexclQueues => "transient_nonexcl_queues",
            DeprecatedFeature::GlobalQos => "global_qos",
            DeprecatedFeature::QueueMasterLocator => "queue_master_locator",
            DeprecatedFeature::ClassicQueueMirroring => "classic_queue_mirroring",
            DeprecatedFeature::RamNodeType => "ram_node_type",
            DeprecatedFeature::ManagementMetricsCollection => "management_metrics_collection",
            DeprecatedFeature::AmqpAddressV1 => "amqp_address_v1",
            DeprecatedFeature::AmqpFilterSetBug => "amqp_filter_set_bug",
        }
    }

    /// Where the feature is in its life in `version`: the `deprecation_phase` of
    /// its `-rabbit_deprecated_feature` attribute at that release tag, or `None`
    /// when that release does not declare it.
    pub fn phase(self, version: RabbitVersion) -> Option<Phase> {
        use DeprecatedFeature as F;
        use Phase::*;
        use RabbitVersion as V;
        if version < V::V3_13 {
            return None;
        }
        Some(match (self, version) {
            (F::TransientNonexclQueues | F::GlobalQos, V::V4_3) => DeniedByDefault,
            (F::TransientNonexclQueues | F::GlobalQos, _) => PermittedByDefault,
            (F::QueueMasterLocator, V::V3_13) => return None,
            (F::QueueMasterLocator, V::V4_3) => DeniedByDefault,
            (F::QueueMasterLocator, _) => PermittedByDefault,
            (F::ClassicQueueMirroring, V::V3_13) => PermittedByDefault,
            (F::ClassicQueueMirroring, _) => Removed,
            (F::RamNodeType, V::V4_3) => Removed,
            (F::RamNodeType, _) => PermittedByDefault,
            (F::ManagementMetricsCollection, _) => PermittedByDefault,
            (F::AmqpAddressV1, V::V3_13) => return None,
            (F::AmqpAddressV1, V::V4_3) => DeniedByDefault,
            (F::AmqpAddressV1, _) => PermittedByDefault,
            (F::AmqpFilterSetBug, V::V3_13 | V::V4_0) => return None,
            (F::AmqpFilterSetBug, V::V4_3) => DeniedByDefault,
            (F::AmqpFilterSetBug, _) => PermittedByDefault,
        })
    }
}

impl fmt::Display for DeprecatedFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no deprecated feature of any profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFeature(pub String);

impl fmt::Display for UnknownFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = DeprecatedFeature::ALL.iter().map(|d| d.name()).collect();
        write!(
            f,
            "unknown deprecated feature '{}': known features are {}",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownFeature {}

impl FromStr for DeprecatedFeature {
    type Err = UnknownFeature;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeprecatedFeature::ALL
            .into_iter()
            .find(|d| d.name() == s.trim())
            .ok_or_else(|| UnknownFeature(s.to_owned()))
    }
}

/// RabbitMQ's `deprecation_phase()` (`rabbit_deprecated_features.erl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Works unless `deprecated_features.permit.NAME = false`.
    PermittedByDefault,
    /// Refused unless `deprecated_features.permit.NAME = true`.
    DeniedByDefault,
    /// Gone, whatever the configuration says.
    Removed,
}

/// Whether a feature may be used under a profile and its overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureState {
    /// Not deprecated in this version: it simply works.
    NotDeprecated,
    /// Deprecated, and permitted (by default or by `--permit-deprecated`).
    Permitted,
    /// Deprecated and not permitted (by default or by `--deny-deprecated`).
    Denied,
    /// Removed from this version.
    Removed,
}

impl FeatureState {
    /// Whether a client may use the feature.
    pub fn allows(self) -> bool {
        matches!(self, FeatureState::NotDeprecated | FeatureState::Permitted)
    }
}

/// A profile asked to permit or deny what its version does not declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotInVersion {
    pub feature: DeprecatedFeature,
    pub version: RabbitVersion,
}

impl fmt::Display for NotInVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = DeprecatedFeature::ALL
            .iter()
            .filter(|d| d.phase(self.version).is_some())
            .map(|d| d.name())
            .collect();
        if known.is_empty() {
            write!(
                f,
                "RabbitMQ {} has no deprecated features ({} is one from 3.13 on)",
                self.version, self.feature
            )
        } else {
            write!(
                f,
                "RabbitMQ {} has no deprecated feature '{}': its deprecated features are {}",
                self.version,
                self.feature,
                known.join(", ")
            )
        }
    }
}

impl std::error::Error for NotInVersion {}

/// The RabbitMQ Warren imitates: a version and, as `deprecated_features.permit.*`
/// in rabbitmq.conf, the deprecated features permitted or denied on top of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    version: RabbitVersion,
    /// `true`: permitted, `false`: denied, overriding the version's default.
    overrides: BTreeMap<DeprecatedFeature, bool>,
}

impl Profile {
    pub fn new(version: RabbitVersion) -> Self {
        Self {
            version,
            overrides: BTreeMap::new(),
        }
    }

    pub fn version(&self) -> RabbitVersion {
        self.version
    }

    /// Changes the version, keeping the overrides.
    pub fn set_version(&mut self, version: RabbitVersion) {
        self.version = version;
    }

    /// The release string RabbitMQ would report ("3.10.8"): `connection.start`'s
    /// `version` and the management API's `rabbitmq_version`.
    pub fn release(&self) -> &'static str {
        self.version.release()
    }

    /// RabbitMQ's product name: `connection.start`'s `product` and the management
    /// API's `product_name`.
    pub fn product_name(&self) -> &'static str {
        "RabbitMQ"
    }

    /// As `deprecated_features.permit.NAME = true|false`.
    pub fn set_permitted(&mut self, feature: DeprecatedFeature, permitted: bool) {
        self.overrides.insert(feature, permitted);
    }

    /// The permits and denials given on top of the version, oldest first.
    pub fn overrides(&self) -> impl Iterator<Item = (DeprecatedFeature, bool)> + '_ {
        self.overrides.iter().map(|(f, p)| (*f, *p))
    }

    /// Refuses an override naming a feature this version does not declare (it
    /// would be silently ignored otherwise, and a test would lie).
    pub fn validate(&self) -> Result<(), NotInVersion> {
        match self
            .overrides
            .keys()
            .find(|f| f.phase(self.version).is_none())
        {
            Some(&feature) => Err(NotInVersion {
                feature,
                version: self.version,
            }),
            None => Ok(()),
        }
    }

    /// `rabbit_deprecated_features:is_permitted/1`: the configuration wins over
    /// the phase's default, except for a removed feature.
    pub fn deprecated_feature_state(&self, feature: DeprecatedFeature) -> FeatureState {
        match feature.phase(self.version) {
            None => FeatureState::NotDeprecated,
            Some(Phase::Removed) => FeatureState::Removed,
            Some(phase) => {
                let permitted = self
                    .overrides
                    .get(&feature)
                    .copied()
                    .unwrap_or(phase == Phase::PermittedByDefault);
                if permitted {
                    FeatureState::Permitted
                } else {
                    FeatureState::Denied
                }
            }
        }
    }

    /// The 541 INTERNAL_ERROR RabbitMQ closes the connection with when a client
    /// uses a deprecated feature that is not permitted: the `when_denied` (or
    /// `when_removed`) text of `rabbit_deprecated_features:generate_warnings1/3`,
    /// raised through `{protocol_error, internal_error, "~ts", [Warning]}`.
    /// `None` while the feature may be used.
    pub fn deprecated_feature_refusal(&self, feature: DeprecatedFeature) -> Option<AmqpError> {
        let phase = feature.phase(self.version)?;
        let name = feature.name();
        let text = match (self.deprecated_feature_state(feature), phase) {
            (FeatureState::Denied, Phase::PermittedByDefault) => format!(
                "Feature `{name}` is deprecated.\n\
                 Its use is not permitted per the configuration (overriding the default, \
                 which is permitted):\n    \"deprecated_features.permit.{name} = false\"\n\
                 Its use will not be permitted by default in a future minor RabbitMQ version \
                 and the feature will be removed from a future major RabbitMQ version; actual \
                 versions to be determined.\n\
                 To continue using this feature when it is not permitted by default, set the \
                 following parameter in your configuration:\n    \
                 \"deprecated_features.permit.{name} = true\""
            ),
            (FeatureState::Denied, _) => format!(
                "Feature `{name}` is deprecated.\n\
                 By default, this feature is not permitted anymore.\n\
                 The feature will be removed from a future major RabbitMQ version, regardless \
                 of the configuration; actual version to be determined.\n\
                 To continue using this feature when it is not permitted by default, set the \
                 following parameter in your configuration:\n    \
                 \"deprecated_features.permit.{name} = true\""
            ),
            (FeatureState::Removed, _) => format!(
                "Feature `{name}` is removed; its use is not possible anymore.\n\
                 If RabbitMQ refuses to start because of this, you need to downgrade RabbitMQ \
                 and make sure the feature is not used at all before upgrading again."
            ),
            (FeatureState::Permitted | FeatureState::NotDeprecated, _) => return None,
        };
        Some(AmqpError::connection(code::INTERNAL_ERROR, text))
    }

    /// `max_message_size` when none is configured: 128 MiB until 3.13, 16 MiB
    /// from 4.0 (`deps/rabbit/Makefile`, `{max_message_size, …}`).
    pub fn max_message_size_default(&self) -> u64 {
        if self.version >= RabbitVersion::V4_0 {
            16 * 1024 * 1024
        } else {
            128 * 1024 * 1024
        }
    }

    /// The `x-queue-version` values a classic queue takes: 1 and 2 until 4.2,
    /// only 2 from 4.3, which removed CQv1 (`rabbit_amqqueue:check_queue_version/2`).
    pub fn queue_versions(&self) -> &'static [i64] {
        if self.version >= RabbitVersion::V4_3 {
            &[2]
        } else {
            &[1, 2]
        }
    }

    /// How a quorum queue orders its ready messages by the `priority` property
    /// (`vhost/queue.rs` applies it).
    pub fn quorum_priorities(&self) -> QuorumPriorities {
        if self.version >= RabbitVersion::V4_3 {
            QuorumPriorities::Strict
        } else if self.version >= RabbitVersion::V4_0 {
            QuorumPriorities::TwoWeighted
        } else {
            QuorumPriorities::None
        }
    }

    /// Whether a quorum queue's delivery limit counts failed deliveries only
    /// (4.3: `delivery_count > DeliveryLimit`, `rabbit_fifo.erl:2367-2372` at
    /// v4.3.5; release notes 4.3.0 "unlimited explicit returns"), rather than
    /// every return (`acquired_count`, `rabbit_fifo.erl:1904` at v4.0.9).
    pub fn quorum_limit_counts_failed_only(&self) -> bool {
        self.version >= RabbitVersion::V4_3
    }

    /// Whether `x-queue-mode` is checked (`default` or `lazy`): until 4.2. 4.3
    /// dropped its validator from `rabbit_amqqueue:declare_args/0` and ignores it.
    pub fn checks_queue_mode(&self) -> bool {
        self.version < RabbitVersion::V4_3
    }

    /// The delivery limit of a quorum queue from its `x-delivery-limit`
    /// argument; `None` is no limit. Until 3.13 no argument is no limit and a
    /// negative one drops a message on its first return (observed on 3.10.8);
    /// from 4.0 no argument is 20 (`?DEFAULT_DELIVERY_LIMIT` in
    /// `rabbit_quorum_queue.erl`) and a negative one is no limit (`rabbit_fifo:init/1`).
    pub fn quorum_delivery_limit(&self, arg: Option<i64>) -> Option<u64> {
        if self.version < RabbitVersion::V4_0 {
            return arg.map(|n| n.max(0) as u64);
        }
        match arg {
            None => Some(20),
            Some(n) if n < 0 => None,
            Some(n) => Some(n as u64),
        }
    }

    /// The smallest `frame_max` a client may ask for in `connection.tune-ok`
    /// (`?FRAME_MIN_SIZE`): 4096 until 4.0, 8192 from 4.1.
    pub fn frame_min_size(&self) -> u32 {
        if self.version >= RabbitVersion::V4_1 {
            8192
        } else {
            4096
        }
    }

    /// Whether a reply published to a direct reply-to address counts as routed
    /// (no `basic.return` to a mandatory publisher): from 4.2, where the address
    /// is a (volatile) queue whether or not its requester is still there. Before,
    /// the reply is delivered beside routing and a mandatory one is always
    /// returned with 312 NO_ROUTE, delivered or not (observed on 3.10.8).
    pub fn reply_to_is_routed(&self) -> bool {
        self.version >= RabbitVersion::V4_2
    }

    /// Whether `basic.qos` with `global = true` is honoured; when not, RabbitMQ
    /// (3.13+, `rabbit_channel.erl`) handles it as `global = false`.
    pub fn global_qos(&self) -> bool {
        self.deprecated_feature_state(DeprecatedFeature::GlobalQos)
            .allows()
    }

    /// Whether an `x-death` header a client published is the message's death
    /// history: until 3.13 (`rabbit_dead_letter:update_x_death_header/2` at
    /// v3.10.8; `mc_amqpl:headers_to_deaths/2`, `mc_amqpl.erl:712` at v3.13.7).
    /// From 4.0 only the broker's own `deaths` annotation counts and is written
    /// out over the header (`mc_amqpl.erl:455` at v4.0.9; release notes 4.0.1,
    /// "AMQP 0.9.1 x-death header").
    pub fn reads_client_x_death(&self) -> bool {
        self.version < RabbitVersion::V4_0
    }

    /// Whether dead-lettering sets `x-last-death-reason`, `-queue` and
    /// `-exchange`: from 3.13 (`mc:record_death/4`, `mc.erl:392-394` at v3.13.7).
    pub fn last_death_headers(&self) -> bool {
        self.version >= RabbitVersion::V3_13
    }

    /// Whether the `x-local-random` exchange type exists: from 4.0
    /// (rabbit_exchange_type_local_random.erl, first in v4.0.0).
    pub fn local_random_exchange(&self) -> bool {
        self.version >= RabbitVersion::V4_0
    }

    /// Whether the `x-modulus-hash` exchange type exists: from 4.3, which moved
    /// it from the sharding plugin into the core
    /// (deps/rabbit/src/rabbit_exchange_type_modulus_hash.erl, first in v4.3.0;
    /// release-notes/4.3.0.md:236).
    pub fn modulus_hash_exchange(&self) -> bool {
        self.version >= RabbitVersion::V4_3
    }

    /// Whether the channel's consumer timeout reads the queue's own
    /// `x-consumer-timeout` argument (or `consumer-timeout` policy) before
    /// `consumer_timeout`: from 3.12 to 4.2 (`get_queue_consumer_timeout/2`,
    /// `rabbit_channel.erl:2776-2787` at v3.12.14, `:2854-2865` at v4.2.9; none
    /// at v3.11.28).
    pub fn queue_consumer_timeout_arg(&self) -> bool {
        self.version >= RabbitVersion::V3_12 && self.version < RabbitVersion::V4_3
    }

    /// Whether consumer timeouts are the queue's (quorum queues only) rather
    /// than the channel's: from 4.3. Until 4.2 `rabbit_channel` closes the
    /// channel, whatever the queue type, once its oldest unacked delivery is
    /// older than the timeout (`evaluate_consumer_timeout`,
    /// `rabbit_channel.erl:853` at v3.10.8). 4.3 evaluates them in the quorum
    /// queue (`rabbit_fifo.erl:722` at v4.3.5), which returns the timed-out
    /// deliveries and tells the channel, which cancels the consumer or closes
    /// (`rabbit_channel.erl:2802-2813`); classic queues and streams have none
    /// (release-notes/4.3.0.md:63-69). The timeout is then the consumer's
    /// `x-consumer-timeout`, else the queue's, else `consumer_timeout`
    /// (`rabbit_queue_type.erl:544-547,944-952`), both arguments validated as
    /// non-negative integers (`rabbit_amqqueue.erl:964,975`).
    pub fn quorum_consumer_timeout(&self) -> bool {
        self.version >= RabbitVersion::V4_3
    }

    /// `connection.start`'s server-properties as this RabbitMQ sends them
    /// (`rabbit_reader:server_properties/1` and `server_capabilities/1`), with
    /// Warren's own version in a key of its own.
    pub fn server_properties(&self) -> FieldTable {
        let mut caps = FieldTable::default();
        // rabbit_reader.erl, server_capabilities/1: the same nine in every
        // profile from 3.10.8 to 4.3.5.
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        let mut text = |k: &str, v: &str| {
            props.insert(k.into(), AMQPValue::LongString(v.into()));
        };
        text("product", self.product_name());
        text("version", self.release());
        text("platform", self.platform());
        text("copyright", self.copyright());
        text(
            "information",
            "Licensed under the MPL 2.0. Website: https://rabbitmq.com",
        );
        text("cluster_name", &cluster_name());
        text("warren_version", env!("CARGO_PKG_VERSION"));
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        props
    }

    /// `rabbit_misc:platform_and_version/0` names the Erlang the node runs on:
    /// for 3.10 the one observed live, for the others the oldest Erlang/OTP the
    /// release accepts (`rabbit_prelaunch_erlang_compat.erl`, `OTP_MINIMUM`).
    fn platform(&self) -> &'static str {
        match self.version {
            RabbitVersion::V3_10 => "Erlang/OTP 25.2.3",
            RabbitVersion::V3_11 | RabbitVersion::V3_12 => "Erlang/OTP 25.0",
            RabbitVersion::V3_13 | RabbitVersion::V4_0 | RabbitVersion::V4_1 => "Erlang/OTP 26.0",
            RabbitVersion::V4_2 | RabbitVersion::V4_3 => "Erlang/OTP 27.0",
        }
    }

    /// `?COPYRIGHT_MESSAGE` in `deps/rabbit_common/include/rabbit.hrl`.
    fn copyright(&self) -> &'static str {
        match self.version {
            RabbitVersion::V3_10 => "Copyright (c) 2007-2022 VMware, Inc. or its affiliates.",
            RabbitVersion::V3_11 => "Copyright (c) 2007-2023 Broadcom Inc and/or its subsidiaries",
            RabbitVersion::V3_12 | RabbitVersion::V3_13 => {
                "Copyright (c) 2007-2024 Broadcom Inc and/or its subsidiaries"
            }
            RabbitVersion::V4_0 => "Copyright (c) 2007-2025 Broadcom Inc and/or its subsidiaries",
            RabbitVersion::V4_1 | RabbitVersion::V4_2 | RabbitVersion::V4_3 => {
                "Copyright (c) 2007-2026 Broadcom Inc and/or its subsidiaries"
            }
        }
    }
}

/// RabbitMQ's default cluster name is its node name, `rabbit@HOST`
/// (`rabbit_nodes:cluster_name_default/0`); the live 3.10.8 here says
/// `rabbit@vm`.
fn cluster_name() -> String {
    // Read once: every connection.start says it.
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().split('.').next().unwrap_or("").to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("rabbit@{host}")
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_version_lists_the_known_ones() {
        let e = "3.9".parse::<RabbitVersion>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown RabbitMQ version '3.9': known versions are \
             3.10, 3.11, 3.12, 3.13, 4.0, 4.1, 4.2, 4.3"
        );
        assert_eq!(
            RabbitVersion::from_release("3.10.8"),
            Some(RabbitVersion::V3_10)
        );
        assert_eq!(
            RabbitVersion::from_release("4.3.0"),
            Some(RabbitVersion::V4_3)
        );
        assert_eq!(RabbitVersion::from_release("5.0.0"), None);
    }

    #[test]
    fn transient_queues_are_denied_by_default_only_in_4_3() {
        for v in RabbitVersion::ALL {
            let state =
                Profile::new(v).deprecated_feature_state(DeprecatedFeature::TransientNonexclQueues);
            let expected = match v {
                RabbitVersion::V4_3 => FeatureState::Denied,
                v if v >= RabbitVersion::V3_13 => FeatureState::Permitted,
                _ => FeatureState::NotDeprecated,
            };
            assert_eq!(state, expected, "{v}");
        }
        let mut p = Profile::new(RabbitVersion::V4_3);
        p.set_permitted(DeprecatedFeature::TransientNonexclQueues, true);
        assert!(p
            .deprecated_feature_refusal(DeprecatedFeature::TransientNonexclQueues)
            .is_none());
    }

    #[test]
    fn the_4_3_refusal_is_rabbitmqs_text_cut_as_rabbitmq_cuts_it() {
        // Computed with io_lib:format("~ts - ~ts", [..], [{chars_limit, 255}]) as
        // rabbit_binary_generator:amqp_exception_explanation/2 does in 4.x.
        let e = Profile::new(RabbitVersion::V4_3)
            .deprecated_feature_refusal(DeprecatedFeature::TransientNonexclQueues)
            .unwrap();
        assert_eq!(e.code, 541);
        assert_eq!(
            e.reply_text(),
            "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n\
             By default, this feature is not permitted anymore.\n\
             The feature will be removed from a future major RabbitMQ version, regardless of \
             the configuration; actual version to be determined.\nTo..."
        );
    }

    #[test]
    fn overrides_must_name_a_feature_of_the_version() {
        let mut p = Profile::new(RabbitVersion::V3_10);
        p.set_permitted(DeprecatedFeature::GlobalQos, false);
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "RabbitMQ 3.10 has no deprecated features (global_qos is one from 3.13 on)"
        );
        p.set_version(RabbitVersion::V3_13);
        assert!(p.validate().is_ok());
        assert!(!p.global_qos());
        // A removed feature stays removed whatever is permitted.
        let mut p = Profile::new(RabbitVersion::V4_0);
        p.set_permitted(DeprecatedFeature::ClassicQueueMirroring, true);
        assert_eq!(
            p.deprecated_feature_state(DeprecatedFeature::ClassicQueueMirroring),
            FeatureState::Removed
        );
    }

    #[test]
    fn max_message_size_drops_to_16_mib_in_4_0() {
        assert_eq!(
            Profile::new(RabbitVersion::V3_13).max_message_size_default(),
            134_217_728
        );
        assert_eq!(
            Profile::new(RabbitVersion::V4_0).max_message_size_default(),
            16_777_216
        );
    }
}
