//! Glossaries and the segment memory: per tenant, replaced in place, and
//! found exactly and by similarity.

use lotsawa_core::glossaries::GlossaryRecord;
use lotsawa_core::job::GlossaryId;

use super::*;

fn glossary(tenant: &Tenant, name: &str, terms: &[(&str, &str)]) -> GlossaryRecord {
    let now = Utc::now();
    GlossaryRecord {
        id: GlossaryId::new(),
        tenant: tenant.clone(),
        name: name.into(),
        entries: terms
            .iter()
            .map(|(bo, en)| lotsawa_core::GlossaryEntry {
                bo: (*bo).into(),
                en: (*en).into(),
            })
            .collect(),
        terms: terms.len() as u32,
        created_at: now,
        updated_at: now,
    }
}

/// A tenant sees its own glossaries only; a put replaces; a delete says
/// whether there was one.
pub async fn glossaries_are_kept_per_tenant(store: Handle) {
    let acme = Tenant::parse("acme").expect("tenant");
    let other = Tenant::parse("other").expect("tenant");
    let mut a = glossary(
        &acme,
        "Heart",
        &[("ཆོས", "Dharma"), ("སྟོང་པ་ཉིད", "emptiness")],
    );
    store.glossary_put(&a).await.expect("put");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = glossary(&acme, "Second", &[("དགེ་སློང", "monk")]);
    store.glossary_put(&b).await.expect("put");
    store
        .glossary_put(&glossary(&other, "Theirs", &[("ཀ", "ka")]))
        .await
        .expect("put");
    let got = store
        .glossary_get(&acme, a.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got.entries, a.entries, "terms round-trip");
    assert_eq!((got.name.as_str(), got.terms), ("Heart", 2));
    assert!(
        store
            .glossary_get(&other, a.id)
            .await
            .expect("get")
            .is_none(),
        "another tenant's glossary is not found"
    );
    let list = store.glossary_list(&acme).await.expect("list");
    let names: Vec<&str> = list.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["Heart", "Second"], "oldest first");
    assert!(
        list.iter().all(|g| g.entries.is_empty()),
        "lists carry no terms"
    );
    assert_eq!(list[0].terms, 2);
    a.entries.truncate(1);
    a.terms = 1;
    a.name = "Heart, shorter".into();
    store.glossary_put(&a).await.expect("replace");
    let got = store
        .glossary_get(&acme, a.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(
        (got.name.as_str(), got.entries.len()),
        ("Heart, shorter", 1)
    );
    assert_eq!(store.glossary_list(&acme).await.expect("list").len(), 2);
    assert!(!store.glossary_delete(&other, a.id).await.expect("delete"));
    assert!(store.glossary_delete(&acme, a.id).await.expect("delete"));
    assert!(!store.glossary_delete(&acme, a.id).await.expect("delete"));
    assert_eq!(store.glossary_list(&acme).await.expect("list").len(), 1);
}

/// A person's translation is found for its exact source and replaced by a
/// newer one; an engine's first answer stays; similar segments are found
/// through the index, people's first, per tenant.
pub async fn segments_are_found_exactly_and_by_similarity(store: Handle) {
    let acme = Tenant::parse("acme").expect("tenant");
    let other = Tenant::parse("other").expect("tenant");
    let near = "བཅོམ་ལྡན་འདས་རྒྱལ་པོའི་ཁབ་ན་བྱ་རྒོད་ཕུང་པོའི་རི་ལ་དགེ་སློང་གི་དགེ་འདུན་ཆེན་པོ་དང་ཐབས་ཅིག་ཏུ་བཞུགས་ཏེ།";
    let query = "བཅོམ་ལྡན་འདས་རྒྱལ་པོའི་ཁབ་ན་བྱ་རྒོད་ཕུང་པོའི་རི་ལ་དགེ་སློང་གི་དགེ་འདུན་ཆེན་པོ་དང་ལྷན་ཅིག་ཏུ་བཞུགས་ཏེ།";
    let far = "ཤེས་རབ་ཀྱི་ཕ་རོལ་ཏུ་ཕྱིན་པའི་སྙིང་པོ།";
    store
        .segment_put(&acme, near, "engine first", false)
        .await
        .expect("put");
    store
        .segment_put(&acme, near, "engine second", false)
        .await
        .expect("put");
    store
        .segment_put(&acme, near, "person first", true)
        .await
        .expect("put");
    store
        .segment_put(&acme, near, "person second", true)
        .await
        .expect("put");
    store
        .segment_put(&acme, far, "far", false)
        .await
        .expect("put");
    store
        .segment_put(&other, near, "other tenant", true)
        .await
        .expect("put");
    assert_eq!(
        store
            .human_segment(&acme, &format!(" {near} "))
            .await
            .expect("get")
            .as_deref(),
        Some("person second"),
        "the newest human translation, source normalized"
    );
    assert_eq!(store.human_segment(&acme, far).await.expect("get"), None);
    let found = store
        .similar_segments(&acme, query, 3, lotsawa_core::fuzzy::USEFUL)
        .await
        .expect("similar");
    let texts: Vec<&str> = found.iter().map(|e| e.translation.as_str()).collect();
    assert_eq!(texts, ["person second", "engine first"], "{found:?}");
    assert!(found[0].human && !found[1].human);
    assert!(
        found
            .iter()
            .all(|e| e.similarity >= 0.6 && e.similarity < 1.0),
        "{found:?}"
    );
    let same = store
        .similar_segments(&acme, near, 3, lotsawa_core::fuzzy::USEFUL)
        .await
        .expect("similar");
    assert!(
        same.is_empty(),
        "the very same source is left out: {same:?}"
    );
    let none = store
        .similar_segments(&Tenant::parse("empty").expect("tenant"), query, 3, 0.6)
        .await
        .expect("similar");
    assert!(none.is_empty());
}
