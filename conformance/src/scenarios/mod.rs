//! The scenario table: every scenario, by area, in the order they run and report.

use std::future::Future;
use std::pin::Pin;

use crate::ctx::Ctx;
use crate::driver::R;

pub mod basic;
pub mod confirms;
pub mod connection;
pub mod exchange;
pub mod malformed;
pub mod queue;

/// A scenario's body: takes a fresh context, returns whether its expectations held.
pub type Body = fn(Ctx) -> Pin<Box<dyn Future<Output = R> + Send>>;

/// One named scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// `area::name`
    pub name: &'static str,
    /// What it does.
    pub run: Body,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Lists scenarios by module; each name is an `async fn(Ctx) -> R` in that module.
macro_rules! table {
    ($($module:ident: [$($name:ident),* $(,)?])*) => {
        /// Every scenario, in table order.
        pub fn all() -> Vec<Scenario> {
            vec![$($(Scenario {
                name: concat!(stringify!($module), "::", stringify!($name)),
                run: |cx| Box::pin($module::$name(cx)),
            },)*)*]
        }
    };
}

table! {
    connection: [
        open_and_close,
        start_announces_capabilities,
        tune_proposes_defaults,
        auth_wrong_password,
        auth_unknown_user,
        auth_failure_without_capability_drops_socket,
        unknown_vhost,
        channel_max_enforced,
        channel_ids_up_to_max,
        channel_open_twice,
        method_on_unopened_channel,
        channel_reopen_after_close,
        channel_reopen_after_error,
        channel_error_spares_other_channels,
        small_frame_max_carries_large_body,
        frame_max_below_minimum,
        frame_larger_than_frame_max,
        heartbeat_negotiated_is_sent,
        heartbeat_disabled_stays_open,
        close_with_unacked_requeues,
        close_requeues_only_unacked,
        two_connections_share_a_queue,
        two_connections_round_robin,
        channel_close_with_unacked_requeues,
        channel_flow_active,
        abrupt_disconnect_requeues,
    ]
    exchange: [
        declare_each_type,
        passive_missing,
        passive_existing_ignores_type,
        predeclared_exchanges_exist,
        redeclare_type_mismatch,
        redeclare_durable_mismatch,
        redeclare_auto_delete_mismatch,
        redeclare_internal_mismatch,
        unknown_type,
        amq_prefix_reserved,
        redeclare_amq_direct_identically,
        redeclare_amq_direct_not_durable,
        declare_default_exchange,
        passive_default_exchange,
        delete_default_exchange,
        delete_amq_exchange,
        delete_missing,
        delete_then_passive,
        delete_if_unused_with_binding,
        delete_if_unused_without_binding,
        delete_if_unused_after_unbind,
        delete_removes_bindings,
        publish_to_missing_exchange,
        publish_to_internal_exchange,
        fanout_to_no_queue,
        fanout_to_one_queue,
        fanout_to_many_queues,
        amq_fanout_routes,
        direct_routes_by_key,
        direct_same_key_two_queues,
        direct_queue_with_two_keys,
        direct_duplicate_binding_is_one,
        direct_empty_key,
        unbind_stops_routing,
        default_exchange_routes_by_name,
        default_exchange_unknown_queue,
        bind_to_default_exchange,
        unbind_from_default_exchange,
        auto_delete_on_last_unbind,
        auto_delete_without_bindings_stays,
        auto_delete_on_queue_delete,
        declare_nowait,
        declare_durable,
        exchange_to_exchange_binding,
        exchange_bind_missing_source,
    ]
    queue: [
        declare_and_redeclare,
        redeclare_reports_counts,
        server_named,
        server_named_are_distinct,
        passive_missing,
        passive_reports_counts,
        passive_ignores_flags,
        equivalence_durable,
        equivalence_auto_delete,
        equivalence_arguments,
        equivalence_missing_argument,
        durable_redeclare,
        amq_prefix_reserved,
        amq_prefix_passive,
        exclusive_declare_from_other_connection,
        exclusive_passive_from_other_connection,
        exclusive_consume_from_other_connection,
        exclusive_get_from_other_connection,
        exclusive_delete_from_other_connection,
        exclusive_purge_from_other_connection,
        exclusive_bind_from_other_connection,
        exclusive_publish_from_other_connection,
        exclusive_other_channel_same_connection,
        exclusive_deleted_on_close,
        exclusive_survives_channel_close,
        exclusive_name_reusable_after_close,
        auto_delete_on_last_cancel,
        auto_delete_stays_without_consumer,
        auto_delete_two_consumers,
        auto_delete_on_channel_close,
        purge_counts,
        purge_spares_unacked,
        purge_missing,
        delete_counts,
        delete_missing,
        delete_if_empty_refused,
        delete_if_empty_ok,
        delete_if_unused_refused,
        delete_if_unused_ok,
        delete_cancels_consumers,
        delete_removes_bindings,
        bind_missing_queue,
        bind_missing_exchange,
        bind_both_missing,
        unbind_missing_binding,
        unbind_missing_queue,
        unbind_missing_exchange,
        declare_nowait,
        declare_counts_consumers,
        messages_wait_for_consumer,
    ]
    basic: [
        consume_order_and_tags,
        publish_while_consuming,
        consume_with_own_tag,
        server_consumer_tag,
        round_robin_one_channel,
        round_robin_two_channels,
        prefetch_per_consumer,
        prefetch_each_consumer,
        prefetch_global_shared,
        prefetch_global_and_per_consumer,
        prefetch_zero_unlimited,
        prefetch_applies_to_later_consumers,
        prefetch_raised_global,
        prefetch_ignored_for_no_ack,
        ack_multiple,
        ack_out_of_order,
        ack_zero_multiple_acks_all,
        ack_unknown_tag,
        ack_twice,
        ack_of_no_ack_delivery,
        ack_zero_single,
        ack_on_wrong_channel,
        ack_after_reopen,
        nack_requeue,
        nack_drop,
        nack_multiple_requeue_order,
        nack_multiple_drop,
        nack_unknown_tag,
        reject_requeue,
        reject_drop,
        reject_unknown_tag,
        requeue_goes_to_head,
        requeue_redelivers_to_consumer,
        get_with_counts,
        get_empty,
        get_missing_queue,
        get_and_deliver_share_tags,
        get_unacked_requeued_on_close,
        recover_requeue,
        recover_no_requeue,
        recover_nothing,
        mandatory_unroutable_returned,
        mandatory_routed_not_returned,
        unroutable_dropped_silently,
        immediate_not_implemented,
        cancel_stops_deliveries,
        cancel_keeps_unacked,
        cancel_unknown_tag,
        exclusive_consumer_blocks_others,
        exclusive_consumer_needs_empty_queue,
        exclusive_consumer_released_on_cancel,
        exclusive_consumer_gets_all,
        duplicate_consumer_tag,
        same_consumer_tag_two_channels,
        consumer_tag_reusable_after_cancel,
        consume_missing_queue,
        no_ack_not_redelivered,
        no_local_ignored,
        properties_preserved,
        wrong_user_id_refused,
        empty_body,
        large_body,
        body_at_frame_boundary,
        delivery_reports_exchange_and_key,
        consumer_count_follows,
        ready_count_after_publish,
        consume_nowait,
        cancel_nowait,
        tx_commit_publishes,
        tx_rollback_discards,
        tx_ack_on_commit,
        tx_commit_without_select,
    ]
    confirms: []
    malformed: []
}
