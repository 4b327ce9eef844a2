//! The job store conformance suite: one set of cases every
//! [`Store`](lotsawa_core::Store) must pass, facet by facet (`cases/<facet>.rs`), instantiated per store
//! with [`conformance_tests!`] (one `#[tokio::test]` per case, so a failure
//! never hides the cases after it).
//!
//! A store under test comes from a factory: an async function returning a
//! [`Fixture`] whose store is empty and used by one case only.

pub mod cases;
pub mod factory;
pub mod postgres;

pub use factory::JobFactory;

use std::sync::Arc;

use lotsawa_core::Store;

/// An empty store for one case, and whatever keeps it alive.
pub struct Fixture {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Dropped after the case (a temporary directory, say).
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Every case's name, in the order they are generated.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@cases $factory;
            every_transition_is_checked_and_compare_and_set,
            a_stale_run_cannot_write,
            claims_are_fifo,
            claims_follow_priority_then_arrival,
            two_claimers_respect_the_concurrency_limit,
            checkpoints_are_idempotent,
            usage_is_kept_per_chunk_and_per_tenant_day,
            cancel_of_pending_and_processing,
            retry_resets_only_unfinished_chunks,
            lists_are_newest_first_with_stable_cursors,
            foreign_and_forged_cursors_are_invalid_input,
            translation_memory_keeps_the_first_entry,
            chunk_edits_are_compare_and_set,
            glossaries_are_kept_per_tenant,
            segments_are_found_exactly_and_by_similarity,
            large_texts_round_trip_byte_for_byte,
            a_job_keeps_its_trace,
            counts_by_status,
            unknown_jobs_are_not_found,
            watchers_read_pulses_briefs_and_chunk_ranges,
            tenants_see_only_their_own_jobs,
            api_keys_are_found_by_hash_and_revoked,
            idempotency_keys_hold_their_first_request,
            rate_buckets_per_tenant,
            pending_jobs_are_counted_and_capped_per_tenant,
            callbacks_are_written_with_the_terminal_transition,
            batches_are_stored_listed_and_queued_in_turns
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture: $crate::Fixture = $factory().await;
                $crate::cases::$case(fixture.store.clone()).await;
                drop(fixture);
            }
        )*
    };
}
