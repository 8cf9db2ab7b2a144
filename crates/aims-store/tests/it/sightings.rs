//! Sightings: a report is one audit event however many refused callers it counts, and the
//! same caller seen again is merged into its row (earliest first, latest last, summed count).

use aims_core::audit::action;
use aims_core::id::ResourceServerName;
use aims_core::sighting::Sighting;

use crate::fixtures::{AuditCursor, at, event};
use crate::harness::Harness;

fn sighting(source: &str, first: i64, last: i64, count: u64) -> Sighting {
    Sighting {
        source: source.to_owned(),
        route: "repositories".to_owned(),
        user_agent: "curl/8.0".to_owned(),
        reason: "invalid_token".to_owned(),
        first_seen: at(first),
        last_seen: at(last),
        count,
    }
}

pub async fn sightings_are_merged_and_counted(h: &Harness) {
    let store = &*h.store;
    let gateway = ResourceServerName::new("gateway").unwrap();
    let mut audit = AuditCursor::new(store).await;
    let kept = store
        .report_sightings(
            &gateway,
            &[
                sighting("203.0.113.7", 10, 20, 5),
                sighting("198.51.100.1", 15, 15, 1),
            ],
            &event(action::SIGHTING_REPORT),
        )
        .await
        .unwrap();
    assert_eq!(kept, 2);
    audit.one(store, action::SIGHTING_REPORT).await;
    store
        .report_sightings(
            &gateway,
            &[sighting("203.0.113.7", 5, 40, 7)],
            &event(action::SIGHTING_REPORT),
        )
        .await
        .unwrap();
    audit.one(store, action::SIGHTING_REPORT).await;
    let listed = store.sightings(10).await.unwrap();
    assert_eq!(
        listed,
        vec![
            (gateway.clone(), sighting("203.0.113.7", 5, 40, 12)),
            (gateway, sighting("198.51.100.1", 15, 15, 1)),
        ]
    );
}
