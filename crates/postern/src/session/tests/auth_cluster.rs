//! The AUTH throttle of two nodes (two harnesses) sharing one store
//! (`[cluster] redis`, here in memory), and with the store down: what
//! clients see.

use std::sync::Arc;

use super::harness::{b64, Harness};
use crate::cluster::fake::{DownCounters, MemoryCounters};
use crate::counters::SharedCounters;

const AUTH: &str = "[auth]\nmax_failures_per_ip = 3\ndelay_after = 100\nban_exempt_networks = []\n";

fn plain(user: &str, password: &str) -> String {
    format!("AUTH PLAIN {}", b64(&format!("\0{user}\0{password}")))
}

async fn nodes(store: Arc<dyn SharedCounters>) -> (Harness, Harness) {
    let mut a = Harness::new(AUTH).await;
    let mut b = Harness::new(AUTH).await;
    a.set_counters(store.clone());
    b.set_counters(store);
    (a, b)
}

/// Tries `passwords` in one session on `node`; the reply codes.
async fn attempts(node: &Harness, passwords: &[&str]) -> Vec<String> {
    let mut c = node.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    let mut out = Vec::new();
    for pw in passwords {
        c.send(&plain("alice", pw)).await;
        out.push(c.expect("").await[..3].to_string());
    }
    out
}

/// 2 failures on A and 1 on B make the third: B bans, A refuses too.
#[tokio::test]
async fn a_ban_counted_on_two_nodes_holds_on_both() {
    let store = Arc::new(MemoryCounters::default());
    let (a, b) = nodes(store.clone()).await;
    assert_eq!(attempts(&a, &["wrong", "wrong"]).await, ["535", "535"]);
    assert_eq!(attempts(&b, &["wrong", "secret pw"]).await, ["535", "454"]);
    assert_eq!(attempts(&a, &["secret pw"]).await, ["454"]);
    assert!(store.keys().iter().any(|k| k.starts_with("auth:ban:")), "{:?}", store.keys());
}

/// The store down: each node counts alone, logins go on.
#[tokio::test]
async fn store_down_each_node_counts_alone() {
    let (a, b) = nodes(Arc::new(DownCounters)).await;
    assert_eq!(attempts(&a, &["wrong", "wrong"]).await, ["535", "535"]);
    assert_eq!(attempts(&b, &["wrong", "secret pw"]).await, ["535", "235"]);
    assert_eq!(attempts(&a, &["secret pw"]).await, ["235"]);
}
