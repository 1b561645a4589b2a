//! Single-flight password checks: concurrent identical checks run argon2
//! once (counted by `UserStore::full_checks`, never timed), different
//! passwords never share an answer, failures are never remembered, and a
//! cancelled check hands over to its waiters.
//!
//! Every test holds all CPU permits while it starts its checks, so they are
//! all in flight before the first one can run; waits are bounded.

use std::time::Duration;

use super::*;

const TTL: Duration = Duration::from_secs(60);

fn store_with(users: &[(&str, &str)]) -> (tempfile::TempDir, Arc<UserStore>, Arc<UserDb>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(UserStore::new(dir.path()));
    let mut db = UserDb { version: 1, users: BTreeMap::new() };
    for (name, password) in users {
        db.set_password(name, password, false).unwrap();
    }
    (dir, store, Arc::new(db))
}

/// Takes every CPU permit, so that no full check can start.
async fn hold_cpus(store: &UserStore) -> tokio::sync::OwnedSemaphorePermit {
    let n = store.slow_checks.available_permits() as u32;
    store.slow_checks.clone().acquire_many_owned(n).await.unwrap()
}

/// Yields until `done` holds (bounded: the spawned checks only need to reach
/// their first await).
async fn until(mut done: impl FnMut() -> bool, what: &str) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never reached: {what}");
}

fn spawn_check(store: &Arc<UserStore>, db: &Arc<UserDb>, name: &str, password: &str, ttl: Duration) -> tokio::task::JoinHandle<bool> {
    let (store, db, name, password) = (store.clone(), db.clone(), name.to_string(), password.to_string());
    tokio::spawn(async move { store.check_password(db, &name, &password, ttl).await })
}

#[tokio::test]
async fn concurrent_identical_checks_run_argon2_once() {
    for ttl in [TTL, Duration::ZERO] {
        let (_dir, store, db) = store_with(&[("bob", "secret")]);
        let cpus = hold_cpus(&store).await;
        let checks: Vec<_> = (0..20).map(|i| spawn_check(&store, &db, if i % 2 == 0 { "bob" } else { "Bob" }, "secret", ttl)).collect();
        until(|| store.in_flight.running() == 1 && store.in_flight.waiting() == 19, "19 waiting for 1").await;
        drop(cpus);
        for c in checks {
            assert!(c.await.unwrap(), "ttl {ttl:?}");
        }
        assert_eq!(store.full_checks(), 1, "ttl {ttl:?}");
        assert_eq!(store.in_flight.running(), 0, "the entry goes when the check ends");
        // Afterwards: a cache hit with a TTL, a new full check without.
        assert!(store.check_password(db.clone(), "bob", "secret", ttl).await);
        assert_eq!(store.full_checks(), if ttl.is_zero() { 2 } else { 1 }, "ttl {ttl:?}");
    }
}

#[tokio::test]
async fn a_wrong_password_never_gets_the_right_ones_answer() {
    let (_dir, store, db) = store_with(&[("bob", "secret"), ("carol", "secret")]);
    let cpus = hold_cpus(&store).await;
    let right: Vec<_> = (0..5).map(|_| spawn_check(&store, &db, "bob", "secret", TTL)).collect();
    let wrong: Vec<_> = (0..5).map(|_| spawn_check(&store, &db, "bob", "Secret", TTL)).collect();
    // The same password for another user is another check too.
    let other = spawn_check(&store, &db, "carol", "secret", TTL);
    until(|| store.in_flight.running() == 3 && store.in_flight.waiting() == 8, "3 checks, 8 waiting").await;
    drop(cpus);
    for c in right {
        assert!(c.await.unwrap());
    }
    for c in wrong {
        assert!(!c.await.unwrap());
    }
    assert!(other.await.unwrap());
    assert_eq!(store.full_checks(), 3);
}

#[tokio::test]
async fn failures_pay_again_and_unknown_users_run_the_dummy_hash() {
    let (_dir, store, db) = store_with(&[("bob", "secret")]);
    let cpus = hold_cpus(&store).await;
    let wrong: Vec<_> = (0..4).map(|_| spawn_check(&store, &db, "bob", "guess", TTL)).collect();
    let unknown: Vec<_> = (0..4).map(|_| spawn_check(&store, &db, "nobody", "guess", TTL)).collect();
    until(|| store.in_flight.running() == 2 && store.in_flight.waiting() == 6, "2 checks, 6 waiting").await;
    drop(cpus);
    for c in wrong.into_iter().chain(unknown) {
        assert!(!c.await.unwrap());
    }
    assert_eq!(store.full_checks(), 2, "one run for the wrong password, one dummy run for the unknown user");
    // No negative caching: the same failures, one after another, each pay.
    assert!(!store.check_password(db.clone(), "bob", "guess", TTL).await);
    assert!(!store.check_password(db.clone(), "nobody", "guess", TTL).await);
    assert_eq!(store.full_checks(), 4);
    assert!(store.verified.tags.lock().unwrap().is_empty(), "no failure is cached");
}

#[tokio::test]
async fn a_cancelled_check_hands_over_to_its_waiters() {
    let (_dir, store, db) = store_with(&[("bob", "secret")]);
    let cpus = hold_cpus(&store).await;
    let first = spawn_check(&store, &db, "bob", "secret", TTL);
    until(|| store.in_flight.running() == 1, "the first check leads").await;
    let second = spawn_check(&store, &db, "bob", "secret", TTL);
    until(|| store.in_flight.waiting() == 1, "the second one waits").await;
    // The leading session goes away while waiting for a CPU.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    until(|| store.in_flight.running() == 1 && store.in_flight.waiting() == 0, "the second one leads").await;
    drop(cpus);
    assert!(second.await.unwrap());
    assert_eq!(store.full_checks(), 1);
    assert_eq!(store.in_flight.running(), 0);
}

#[tokio::test]
async fn a_changed_password_is_a_different_check() {
    let (_dir, store, db) = store_with(&[("bob", "first")]);
    let mut changed = (*db).clone();
    changed.set_password("bob", "second", false).unwrap();
    let changed = Arc::new(changed);
    let cpus = hold_cpus(&store).await;
    // The same password against the old and the new stored hash.
    let old = spawn_check(&store, &db, "bob", "first", TTL);
    let new = spawn_check(&store, &changed, "bob", "first", TTL);
    until(|| store.in_flight.running() == 2, "two checks").await;
    drop(cpus);
    assert!(old.await.unwrap());
    assert!(!new.await.unwrap());
    assert_eq!(store.full_checks(), 2);
}
