//! Tables for greylisting: the triplet decision over time, auto-allow,
//! the bounded store and its snapshot.

use std::time::Duration;

use tokio::time::Instant;

use super::*;

const S: u64 = 1000;
const DAY: u64 = 86400 * S;

fn cfg() -> Greylist {
    Greylist { enabled: true, ..Greylist::default() }
}

fn t(first: u64, passed: Option<u64>) -> Option<TripletRecord> {
    Some(TripletRecord { first, passed })
}

fn c(passes: u32, last: u64) -> Option<ClientRecord> {
    Some(ClientRecord { passes, last })
}

#[test]
fn triplet_decisions() {
    let g = cfg();
    let t0 = 1_000_000 * S;
    let defer = |secs: u64, new| Decision::Defer { wait: Duration::from_secs(secs), new };
    // (client, triplet, now, decision, triplet after, client after)
    let table = [
        // First attempt: deferred for the whole delay.
        (None, None, t0, defer(300, true), t(t0, None), None),
        // Too early: the rest of the delay.
        (None, t(t0, None), t0 + 100 * S, defer(200, false), t(t0, None), None),
        // After the delay, within the window: passes, the client counts it.
        (None, t(t0, None), t0 + 300 * S, Decision::Passed, t(t0, Some(t0 + 300 * S)), c(1, t0 + 300 * S)),
        (c(2, t0), t(t0, None), t0 + DAY, Decision::Passed, t(t0, Some(t0 + DAY)), c(3, t0 + DAY)),
        // After the retry window: starts over.
        (None, t(t0, None), t0 + 2 * DAY + S, defer(300, true), t(t0 + 2 * DAY + S, None), None),
        // Passed before, used within pass_ttl: passes, last use refreshed.
        (None, t(t0, Some(t0)), t0 + 30 * DAY, Decision::Known, t(t0, Some(t0 + 30 * DAY)), None),
        // Passed, but unused for longer than pass_ttl: starts over.
        (None, t(t0, Some(t0)), t0 + 36 * DAY, defer(300, true), t(t0 + 36 * DAY, None), None),
        // A client network with 5 passes is auto-allowed, whatever the triplet.
        (c(5, t0), None, t0 + S, Decision::AutoAllowed, None, c(5, t0 + S)),
        // ... but not once its record is older than pass_ttl.
        (c(5, t0), None, t0 + 36 * DAY, defer(300, true), t(t0 + 36 * DAY, None), None),
        (c(4, t0), None, t0 + S, defer(300, true), t(t0 + S, None), c(4, t0)),
    ];
    for (i, (client, triplet, now, want, want_t, want_c)) in table.into_iter().enumerate() {
        assert_eq!(decide(&g, client, triplet, now), (want, want_t, want_c), "row {i}");
    }
    // auto_allow_after = 0: never auto-allowed.
    let never = Greylist { auto_allow_after: 0, ..cfg() };
    assert_eq!(decide(&never, c(100, t0), None, t0 + S).0, defer(300, true));
}

#[test]
fn the_reply_is_postgreys() {
    assert_eq!(
        reply("bob@mx.test", Duration::from_millis(299_001)).summary(),
        "450 4.7.1 <bob@mx.test>: Recipient address rejected: Greylisted, try again in 300s"
    );
    assert_eq!(triplet_key("192.0.2.0/24", "A@B.example", "Bob@MX.test"), "192.0.2.0/24|a@b.example|bob@mx.test");
    assert_eq!(triplet_key("192.0.2.0/24", "", "bob@mx.test"), "192.0.2.0/24||bob@mx.test");
}

#[test]
fn the_store_remembers_and_is_bounded() {
    let g = Greylist { max_entries: 4, delay: Duration::from_secs(1), ..cfg() };
    let store = GreylistStore::default();
    let t0 = 1_000_000 * S;
    assert!(matches!(store.check(&g, "n", "n|a|b", t0), Decision::Defer { new: true, .. }));
    assert!(matches!(store.check(&g, "n", "n|a|b", t0 + 500), Decision::Defer { new: false, .. }));
    assert_eq!(store.check(&g, "n", "n|a|b", t0 + S), Decision::Passed);
    assert_eq!(store.check(&g, "n", "n|a|b", t0 + 2 * S), Decision::Known);
    for i in 0..20 {
        store.check(&g, &format!("m{i}"), &format!("m{i}|a|b"), t0 + 3 * S + i);
        let (triplets, clients) = store.len();
        assert!(triplets <= 4 && clients <= 4, "{triplets} triplets, {clients} clients");
    }
}

#[test]
fn the_snapshot_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = Greylist { delay: Duration::from_secs(1), ..cfg() };
    let store = GreylistStore::load(dir.path());
    let now = Instant::now();
    assert_eq!(store.snapshot_due(now), None, "nothing changed");
    let t0 = 1_000_000 * S;
    store.check(&g, "n", "n|a|b", t0);
    let (path, bytes) = store.snapshot_due(now).expect("first change is written");
    assert_eq!(path, dir.path().join(SNAPSHOT_FILE));
    crate::private_file::write(&path, "tmp", &bytes).expect("write");
    store.check(&g, "n", "n|a|c", t0);
    assert_eq!(store.snapshot_due(now + Duration::from_secs(5)), None, "at most every 10 s");
    assert_eq!(store.check(&g, "n", "n|a|b", t0 + S), Decision::Passed);
    let (_, bytes) = store.snapshot_due(now + Duration::from_secs(5)).expect("a pass is written within a second");
    crate::private_file::write(&path, "tmp", &bytes).expect("write");
    let again = GreylistStore::load(dir.path());
    assert_eq!(again.check(&g, "n", "n|a|b", t0 + 2 * S), Decision::Known);
    assert_eq!(again.check(&g, "n", "n|a|c", t0 + 2 * S), Decision::Passed);
    // A damaged snapshot is ignored.
    std::fs::write(&path, b"{not json").expect("write");
    assert_eq!(GreylistStore::load(dir.path()).len(), (0, 0));
}

#[test]
fn explain_says_what_would_happen() {
    let g = cfg();
    let store = GreylistStore::default();
    let line = explain(&g, &store, "192.0.2.0/24", "192.0.2.0/24|a@b|bob@mx.test", 1_000_000 * S);
    assert_eq!(
        line,
        "would defer (new triplet): 450 4.7.1 <bob@mx.test>: Recipient address rejected: Greylisted, try again in 300s (network 192.0.2.0/24, 0 passes)"
    );
}
