//! Mail loops (issue 14 point 1): a message that arrives with more
//! `Received:` fields than `limits.max_received_headers` is refused with
//! `554 5.4.6 Too many hops`, over DATA and over BDAT.

use super::harness::{Client, Harness};

/// A message with `n` `Received:` fields, ending in CRLF.
fn message(n: usize) -> String {
    let mut m = String::new();
    for i in 0..n {
        m.push_str(&format!("Received: from hop{i}.example by hop{}.example; Sat, 5 Dec 2026 07:00:00 +0000\r\n", i + 1));
    }
    m.push_str("Subject: loop\r\n\r\nReceived: body lines are not counted\r\n");
    m
}

async fn ready(h: &Harness) -> Client<tokio::io::DuplexStream> {
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c
}

async fn by_data(c: &mut Client<tokio::io::DuplexStream>, n: usize, want: &str) {
    c.send("MAIL FROM:<a@far.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("354 ").await;
    c.send(&format!("{}.", message(n))).await;
    c.expect(want).await;
}

async fn by_bdat(c: &mut Client<tokio::io::DuplexStream>, n: usize, want: &str) {
    let m = message(n);
    // Two chunks, cut inside a `Received:` field name.
    let (a, b) = m.split_at(m.len() / 2 + 3);
    c.send("MAIL FROM:<a@far.example>\r\nRCPT TO:<alice@mx.test>").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    // Both chunks in one write (pipelined), so the first may end anywhere.
    let b = b.strip_suffix("\r\n").unwrap_or(b);
    c.send(&format!("BDAT {}\r\n{a}BDAT {} LAST\r\n{b}", a.len(), b.len() + 2)).await;
    c.expect("250 2.0.0").await;
    c.expect(want).await;
}

#[tokio::test]
async fn too_many_received_fields_over_data() {
    let h = Harness::new("").await;
    let mut c = ready(&h).await;
    by_data(&mut c, 50, "250 2.0.0 Ok: queued as").await;
    by_data(&mut c, 51, "554 5.4.6 Too many hops").await;
    // The session goes on: the next message is fine.
    by_data(&mut c, 1, "250 2.0.0 Ok: queued as").await;
}

#[tokio::test]
async fn too_many_received_fields_over_bdat() {
    let h = Harness::new("").await;
    let mut c = ready(&h).await;
    by_bdat(&mut c, 50, "250 2.0.0 Ok: queued as").await;
    by_bdat(&mut c, 51, "554 5.4.6 Too many hops").await;
    by_bdat(&mut c, 0, "250 2.0.0 Ok: queued as").await;
}

#[tokio::test]
async fn the_limit_is_configurable() {
    let h = Harness::new("[limits]\nmax_received_headers = 2\n").await;
    let mut c = ready(&h).await;
    by_data(&mut c, 2, "250 2.0.0").await;
    by_data(&mut c, 3, "554 5.4.6 Too many hops").await;
    by_bdat(&mut c, 3, "554 5.4.6 Too many hops").await;
}
