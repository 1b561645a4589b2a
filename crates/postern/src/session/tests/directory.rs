//! The account directory as clients see it (issue 16 item 4): virtual
//! domains at RCPT (mailbox, alias, unknown, outage), AUTH through the
//! directory (only PLAIN/LOGIN offered, 454 during an outage),
//! sender-login ownership from the directory (451 during an outage).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::harness::{b64, Harness};
use crate::directory::{BoxFuture, Directory, DirectoryError, Lookup, PasswordEntry};
use crate::services::Services;

/// a.example holds alice and the alias sales → alice, bob@b.example;
/// alice's password is "pw" (plain, allowed in the test config); boss@a.example
/// may be used by alice. `down` makes every lookup fail.
#[derive(Default)]
struct Fake {
    down: AtomicBool,
}

impl Fake {
    fn answer<T: Send + 'static>(&self, v: T) -> BoxFuture<'_, Lookup<T>> {
        let down = self.down.load(Ordering::SeqCst);
        Box::pin(async move {
            if down {
                Err(DirectoryError::Unavailable { backend: "fake", reason: "connection refused".into() })
            } else {
                Ok(v)
            }
        })
    }
}

impl Directory for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn password<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Lookup<Option<PasswordEntry>>> {
        let e = (login == "alice@a.example").then(|| PasswordEntry { user: login.into(), hash: "{PLAIN}pw".into(), disabled: None });
        self.answer(e)
    }
    fn domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Lookup<bool>> {
        self.answer(domain == "a.example")
    }
    fn mailbox<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<bool>> {
        self.answer(address == "alice@a.example")
    }
    fn alias<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
        let t = if address == "sales@a.example" { vec!["alice@a.example".into(), "bob@b.example".into()] } else { vec![] };
        self.answer(t)
    }
    fn sender_logins<'a>(&'a self, sender: &'a str) -> BoxFuture<'a, Lookup<Vec<String>>> {
        let t = if sender == "boss@a.example" { vec!["alice@a.example".into()] } else { vec![] };
        self.answer(t)
    }
}

const CONFIG: &str =
    "[auth]\nbackend = \"sql\"\nsender_login_match = true\n[sql]\nurl = \"host=/nonexistent\"\nallow_plain_passwords = true\n";

async fn harness() -> (Harness, Arc<Fake>) {
    let mut h = Harness::new(CONFIG).await;
    let fake = Arc::new(Fake::default());
    h.services = Arc::new(Services { directory: Some(fake.clone()), ..Services::default() });
    (h, fake)
}

fn plain(user: &str, password: &str) -> String {
    format!("AUTH PLAIN {}", b64(&format!("\0{user}\0{password}")))
}

#[tokio::test]
async fn rcpt_in_a_virtual_domain() {
    let (h, fake) = harness().await;
    let mut c = h.connect_from("smtp", [203, 0, 113, 9].into()).await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c.send("MAIL FROM:<x@elsewhere.example>").await;
    c.expect("250 ").await;
    for (rcpt, want) in [
        ("Alice@A.example", "250 2.1.5"),
        ("sales@a.example", "250 2.1.5"),
        ("nobody@a.example", "550 5.1.1"),
        ("someone@c.example", "550 5.7.1"),
    ] {
        c.send(&format!("RCPT TO:<{rcpt}>")).await;
        c.expect(want).await;
    }
    fake.down.store(true, Ordering::SeqCst);
    c.send("RCPT TO:<alice@a.example>").await;
    c.expect("451 4.3.0").await;
    assert!(h.log_has("reason=\"fake lookup failed: connection refused\""));
}

#[tokio::test]
async fn auth_through_the_directory() {
    let (h, fake) = harness().await;
    let mut c = h.connect_tls("smtp").await;
    c.send("EHLO client.example").await;
    let ehlo = c.expect_last("250 ").await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("SCRAM"), "{ehlo}");
    c.send(&plain("alice@a.example", "wrong")).await;
    c.expect("535 5.7.8").await;
    fake.down.store(true, Ordering::SeqCst);
    c.send(&plain("alice@a.example", "pw")).await;
    c.expect("454 4.7.0").await;
    fake.down.store(false, Ordering::SeqCst);
    c.send(&plain("alice@a.example", "pw")).await;
    c.expect("235 2.7.0").await;
    // The directory's sender-login map; a failed lookup is 451, not 553.
    c.send("MAIL FROM:<boss@a.example>").await;
    c.expect("250 ").await;
    c.send("RSET").await;
    c.expect("250 ").await;
    c.send("MAIL FROM:<carol@a.example>").await;
    c.expect("553 5.7.1").await;
    fake.down.store(true, Ordering::SeqCst);
    c.send("MAIL FROM:<boss@a.example>").await;
    c.expect("451 4.3.0").await;
}
