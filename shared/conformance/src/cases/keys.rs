//! The API key facet.

use super::*;

/// API keys: stored by hash, found by hash, listed oldest first, revoked
/// by id; the service authenticates a key to its tenant and refuses an
/// unknown, malformed or revoked one.
pub async fn api_keys_are_found_by_hash_and_revoked(store: Handle) {
    use lotsawa_core::auth::{key_hash, new_key};
    let acme = Tenant::parse("acme").expect("tenant");
    let (k1, r1) = new_key(acme.clone(), created_at());
    let (k2, r2) = new_key(Tenant::parse("other").expect("tenant"), created_at());
    store.key_put(&r1, &key_hash(&k1)).await.expect("put");
    store.key_put(&r2, &key_hash(&k2)).await.expect("put");
    assert_eq!(
        store.key_find(&key_hash(&k1)).await.expect("find"),
        Some(r1.clone())
    );
    assert_eq!(store.key_find(&key_hash("nope")).await.expect("find"), None);
    let listed = store.keys().await.expect("keys");
    assert_eq!(
        listed.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
        vec![r1.id.clone(), r2.id.clone()]
    );
    let svc = service(&store);
    assert_eq!(svc.authenticate(&k1).await.expect("auth").tenant, acme);
    // The same shape, one digit different.
    let last = if k1.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &k1[..k1.len() - 1]);
    for bad in ["", "lts_x", &wrong, &format!("{k1}0")] {
        let r = svc.authenticate(bad).await;
        assert!(
            matches!(r, Err(ServiceError::Unauthorized(_))),
            "{bad}: {r:?}"
        );
    }
    assert!(
        store
            .key_revoke(&r1.id, created_at())
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .key_revoke("000000000000", created_at())
            .await
            .expect("revoke")
    );
    let revoked = store
        .key_find(&key_hash(&k1))
        .await
        .expect("find")
        .expect("kept");
    assert!(revoked.revoked_at.is_some());
    let r = svc.authenticate(&k1).await;
    assert!(matches!(r, Err(ServiceError::Unauthorized(_))), "{r:?}");
    assert_eq!(
        svc.authenticate(&k2)
            .await
            .expect("the other key still works")
            .tenant
            .as_str(),
        "other"
    );
}
