//! The store conformance suite: every check is written once, against `dyn Store`, and runs
//! against SQLite (a fresh file per test) and PostgreSQL (a fresh schema per test).
//!
//! PostgreSQL tests are ignored by default. Run them with a database:
//! `AIMS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!  cargo test -p aims-store -- --include-ignored`. Without the variable they fail rather
//! than pass silently.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly on an unexpected error"
)]

mod agents;
mod approvals;
mod audit;
mod faults;
mod fixtures;
mod harness;
mod identity;
mod init;
mod join_tokens;
mod keys;
mod leases;
mod policies;
mod secrets;
mod sightings;
mod ssf;
mod tokens;
mod upgrade;
mod users;

/// Generates, for each `module::check`, one `#[tokio::test]` per backend:
/// `sqlite::check` and `postgres::check`.
macro_rules! conformance {
    ($($module:ident :: $check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let harness = crate::harness::Harness::sqlite().await;
                    crate::$module::$check(&harness).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test) and run with --include-ignored"]
                async fn $check() {
                    let harness = crate::harness::Harness::postgres().await;
                    crate::$module::$check(&harness).await;
                }
            )*
        }
    };
}

conformance! {
    leases::leases_die_with_their_task_token,
    leases::a_lease_is_claimed_once_under_concurrency,
    leases::a_lease_holds_its_parent_until_it_commits,
    sightings::sightings_are_merged_and_counted,
    secrets::secrets_are_versioned_and_read_current,
    approvals::identical_calls_share_one_pending_request,
    approvals::a_request_is_answered_once,
    approvals::an_agent_cannot_flood_the_queue,
    approvals::a_grant_covers_its_call_and_uses_only,
    approvals::a_single_use_grant_is_spent_once_under_concurrency,
    approvals::a_grant_of_three_is_spent_three_times_under_concurrency,
    approvals::revocation_revokes_requests_and_grants,
    approvals::quarantine_revokes_the_agents_requests,
    init::initializes_once,
    init::ping_answers,
    init::data_survives_reopen,
    agents::agents_round_trip,
    agents::agent_names_are_never_reused,
    agents::agent_listing_filters_and_pages,
    agents::agent_updates_check_revisions,
    join_tokens::join_token_is_consumed_once,
    join_tokens::join_token_is_consumed_once_under_concurrency,
    join_tokens::expired_and_unknown_join_tokens,
    join_tokens::replaced_join_token_stops_working,
    identity::nonces_are_single_use_and_expire,
    identity::attestations_record_snapshot_and_credential,
    identity::leaving_active_revokes_every_credential,
    identity::registry_changes_follow_every_change,
    policies::policy_versions_follow_each_other,
    policies::concurrent_pushes_take_one_version,
    users::users_are_found_by_credential,
    users::user_credential_rotation,
    users::removal_keeps_an_admin,
    keys::keys_rotate,
    audit::audit_batches_chain,
    audit::concurrent_appends_form_one_chain,
    audit::tampering_is_detected,
    audit::a_window_starts_at_its_first_record,
    audit::entries_keys_and_checkpoints,
    audit::queries_read_by_their_index,
    audit::concurrent_writes_with_refusals_commit_as_a_serial_history,
    audit::queued_events_precede_later_writes,
    audit::a_queued_event_waits_for_no_lock,
    audit::the_sequencer_lease_has_one_holder,
    tokens::access_tokens_register_with_their_task,
    tokens::issuance_racing_revocation_leaves_no_live_descendant,
    tokens::a_revocation_in_steps_stays_complete_under_racing_issuance,
    tokens::an_incomplete_revocation_is_finished,
    tokens::a_cascade_step_waits_for_no_audit_head_lock,
    tokens::a_cascade_step_ended_by_a_deadlock_is_run_again,
    tokens::a_revoking_write_waits_for_the_revocation_log_lock,
    tokens::a_missing_revocation_log_lock_refuses_revocation,
    tokens::a_cascade_step_reads_live_children_by_index,
    tokens::random_races_of_issuance_and_revocation_keep_revocation_complete,
    tokens::an_issuance_holds_what_it_checked_until_it_commits,
    tokens::refused_issuance_writes_nothing,
    tokens::expired_dpop_proofs_are_forgotten,
    tokens::one_dpop_proof_under_concurrency,
    tokens::revoking_a_credential_cascades,
    tokens::revoking_a_subtree_keeps_its_root,
    tokens::revocation_counts_survive_sequence_gaps,
    tokens::revoking_a_task_closes_it,
    tokens::revoking_an_agent_closes_its_tasks,
    tokens::revoking_an_owner_spares_other_owners,
    tokens::suspension_revokes_into_the_log,
    tokens::task_listing_filters_and_orders,
    tokens::resource_servers_round_trip,
    ssf::ssf_streams_round_trip_from_the_log_head,
    ssf::ssf_streams_per_receiver_are_bounded,
    ssf::ssf_acknowledgements_hide_only_what_was_delivered,
    ssf::ssf_streams_of_a_resource_server_carry_only_its_audience,
    ssf::ssf_delivery_claims_are_exclusive,
    ssf::ssf_updates_keep_what_the_transmitter_set,
    ssf::ssf_statuses_hold_or_drop_what_waits,
}
