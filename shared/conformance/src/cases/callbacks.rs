//! The callback facet.

use super::*;

/// A job with a callback URL gets its event's delivery in the same commit
/// as the transition that ends it; due deliveries are listed earliest
/// first, and a delivery's state is replaced only as read (one deliverer
/// wins, and a newer event is never overwritten by an older delivery).
pub async fn callbacks_are_written_with_the_terminal_transition(store: Handle) {
    use lotsawa_core::{Callback, CallbackStatus};
    let with_url = |chunks: &[String]| {
        JobFactory::new()
            .texts(chunks.to_vec())
            .with(|j| j.config.callback_url = Some("https://hooks.example.org/lotsawa".into()))
            .job()
    };
    let chunks = vec!["ཀ་ཁ། ".to_owned()];
    let a = with_url(&chunks);
    store.create(&a, &chunks).await.expect("create");
    let b = with_url(&chunks);
    store.create(&b, &chunks).await.expect("create");
    let plain = create(&store, 1).await;
    assert!(store.get(a.id).await.expect("get").callback.is_none());

    // Starting is not an event that is delivered.
    let a = start(&store, &a).await;
    assert!(a.callback.is_none());
    let now = Utc::now();
    assert!(store.callbacks_due(now, 10).await.expect("due").is_empty());

    // Failing a, cancelling b and the plain job.
    let failed = applied(
        change(
            &store,
            &a,
            Change::Fail {
                error: "provider_rejected: the provider answered HTTP 400".into(),
                chunk: None,
            },
        )
        .await,
        "fail",
    );
    let cb = failed
        .callback
        .clone()
        .expect("a callback with the failure");
    assert_eq!(cb.status, CallbackStatus::Pending);
    assert_eq!(cb.attempts, 0);
    let event: serde_json::Value = serde_json::from_str(&cb.event).expect("event json");
    assert_eq!(event["type"], "job.failed");
    assert_eq!(event["jobId"], a.id.to_string());
    assert_eq!(event["errorCode"], "provider_rejected");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cancelled = applied(change(&store, &b, Change::Cancel).await, "cancel");
    assert_eq!(
        cancelled.callback.as_ref().map(|c| c.status),
        Some(CallbackStatus::Pending)
    );
    let plain = applied(change(&store, &plain, Change::Cancel).await, "cancel");
    assert!(plain.callback.is_none(), "no URL, no callback");
    // The stored job says the same as the transition's answer.
    assert_eq!(
        store.get(a.id).await.expect("get").callback,
        failed.callback
    );

    // Due: both, the earliest first; none before they are due.
    let later = Utc::now() + chrono::Duration::seconds(1);
    let due = due_ids(&store, later).await;
    assert_eq!(due, vec![a.id, b.id]);
    let long_ago = Utc::now() - chrono::Duration::hours(1);
    assert!(
        store
            .callbacks_due(long_ago, 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(store.callbacks_due(later, 1).await.expect("due").len(), 1);

    // A failed attempt: due again later.
    let retry_at = Utc::now() + chrono::Duration::minutes(10);
    let after_one = Callback {
        attempts: 1,
        last_error: Some("HTTP 500".into()),
        next_attempt_at: Some(retry_at),
        ..cb.clone()
    };
    assert!(
        store
            .callback_update(a.id, &cb, &after_one)
            .await
            .expect("update")
    );
    // A second deliverer with the old state loses.
    let other = Callback {
        attempts: 1,
        last_error: Some("timeout".into()),
        ..cb.clone()
    };
    assert!(
        !store
            .callback_update(a.id, &cb, &other)
            .await
            .expect("update")
    );
    let due = due_ids(&store, later).await;
    assert_eq!(due, vec![b.id], "a is due in ten minutes");
    let far = retry_at + chrono::Duration::seconds(1);
    assert_eq!(store.callbacks_due(far, 10).await.expect("due").len(), 2);

    // Delivered: never due again; the job shows it.
    let delivered = Callback {
        status: CallbackStatus::Delivered,
        attempts: 2,
        last_error: None,
        delivered_at: Some(Utc::now()),
        next_attempt_at: None,
        ..cb.clone()
    };
    assert!(
        store
            .callback_update(a.id, &after_one, &delivered)
            .await
            .expect("update")
    );
    let shown = store
        .get(a.id)
        .await
        .expect("get")
        .callback
        .expect("callback");
    assert_eq!(shown.status, CallbackStatus::Delivered);
    assert_eq!(shown.attempts, 2);
    let due = due_ids(&store, far).await;
    assert_eq!(due, vec![b.id]);

    // Retried and failed again: a new event, due at once, whatever the
    // old delivery's state.
    let again = applied(change(&store, &failed, Change::Retry).await, "retry");
    assert_eq!(
        again.callback.as_ref().map(|c| c.status),
        Some(CallbackStatus::Delivered)
    );
    let again = start(&store, &again).await;
    let failed2 = applied(
        change(
            &store,
            &again,
            Change::Fail {
                error: "provider_unavailable: the provider answered HTTP 503".into(),
                chunk: None,
            },
        )
        .await,
        "fail",
    );
    let cb2 = failed2.callback.expect("the new event");
    assert_eq!((cb2.status, cb2.attempts), (CallbackStatus::Pending, 0));
    assert!(cb2.event.contains("provider_unavailable"));
    // The older delivery's writer cannot overwrite the new event.
    assert!(
        !store
            .callback_update(a.id, &delivered, &after_one)
            .await
            .expect("update")
    );
    assert_eq!(store.callbacks_due(far, 10).await.expect("due").len(), 2);
}
