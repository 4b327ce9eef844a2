//! The translation memory facet.

use super::*;

/// The memory answers what was put, and keeps the first entry of a key.
pub async fn translation_memory_keeps_the_first_entry(store: Handle) {
    let key = format!("{}-key", JobId::new());
    assert_eq!(store.memory_get(&key).await.expect("get"), None);
    store
        .memory_put(&key, "first", Some(0.9))
        .await
        .expect("put");
    store.memory_put(&key, "second", None).await.expect("put");
    assert_eq!(
        store.memory_get(&key).await.expect("get"),
        Some(("first".to_owned(), Some(0.9)))
    );
}
