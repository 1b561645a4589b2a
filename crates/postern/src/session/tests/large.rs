//! Large messages through the session: DATA read in large reads, unstuffed
//! in one pass and written to the draft in large pieces, BDAT chunks
//! larger than the read buffer; the queued text is exactly what was sent,
//! and the session goes on with the next message (issue 20).

use super::harness::{Client, Harness};

/// About `size` octets of CRLF text: lines of 1 to 997 octets, every few
/// lines one that starts with a dot, and lines of only a dot.
fn text(size: usize) -> String {
    let mut t = String::from("Subject: large\r\n\r\n");
    let mut n = 0usize;
    while t.len() < size {
        n += 1;
        match n % 11 {
            0 => t.push_str(".\r\n"),
            3 | 7 => t.push_str(".leading dot\r\n"),
            _ => {
                let len = (n * 7919) % 997 + 1;
                t.extend((0..len).map(|i| (b'a' + ((i + n) % 26) as u8) as char));
                t.push_str("\r\n");
            }
        }
    }
    t
}

/// RFC 5321 §4.5.2: a line starting with a dot gets one more.
fn stuffed(text: &str) -> String {
    text.split_inclusive('\n').map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_string() }).collect()
}

/// The queued text of the message whose reply is `reply` ("250 ... queued as ID").
fn queued(h: &Harness, reply: &str) -> String {
    let id = reply.rsplit(' ').next().expect("queue id");
    let body = h.body(id);
    // Our fields (Received:, Authentication-Results:) come first.
    let end = body.find("\r\nSubject: large").expect("our text") + 2;
    assert!(body[..end].contains("Received: from client.example"), "{}", &body[..end]);
    body[end..].to_string()
}

async fn greeted(h: &Harness) -> Client<tokio::io::DuplexStream> {
    let mut c = h.connect("smtp").await;
    c.expect("220 ").await;
    c.send("EHLO client.example").await;
    c.expect_last("250 ").await;
    c
}

#[tokio::test]
async fn a_large_message_is_queued_exactly_and_the_session_goes_on() {
    let h = Harness::new("").await;
    let mut c = greeted(&h).await;
    for size in [1_500_000, 70_000, 10] {
        let t = text(size);
        c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA").await;
        c.expect("250 ").await;
        c.expect("250 ").await;
        c.expect("354 ").await;
        // The end of data and the next command in the same write.
        c.send(&format!("{}.\r\nNOOP", stuffed(&t))).await;
        let reply = c.expect("250 2.0.0 Ok: queued as ").await;
        assert_eq!(queued(&h, &reply), t, "message of {size} octets");
        c.expect("250 2.0.0 Ok").await; // the NOOP
    }
}

#[tokio::test]
async fn large_bdat_chunks_are_queued_exactly() {
    let h = Harness::new("").await;
    let mut c = greeted(&h).await;
    let t = text(1_000_000);
    // The first chunk ends with a line (`send` adds its CRLF).
    let cut = t[300_000..].find("\r\n").expect("a line end") + 300_000;
    let (a, b) = (&t[..cut], &t[cut + 2..]);
    c.send(&format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@mx.test>\r\nBDAT {}\r\n{a}", a.len() + 2)).await;
    c.expect("250 ").await;
    c.expect("250 ").await;
    c.expect(&format!("250 2.0.0 {} octets received", a.len() + 2)).await;
    c.send(&format!("BDAT {} LAST\r\n{b}NOOP", b.len())).await;
    let reply = c.expect("250 2.0.0 Ok: queued as ").await;
    assert_eq!(queued(&h, &reply), t);
    c.expect("250 2.0.0 Ok").await;
}

/// A line of 999 octets (with CRLF 1001) is refused, wherever it falls in
/// the reads; a 998 one is not.
#[tokio::test]
async fn long_lines_are_found_in_large_messages() {
    let h = Harness::new("").await;
    let mut c = greeted(&h).await;
    for (len, ok) in [(998, true), (999, false)] {
        let mut t = text(200_000);
        t.push_str(&"x".repeat(len));
        t.push_str("\r\n");
        t.push_str(&text(200_000));
        c.send(&format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<alice@mx.test>\r\nDATA\r\n{}.", stuffed(&t))).await;
        c.expect("250 ").await;
        c.expect("250 ").await;
        c.expect("354 ").await;
        if ok {
            c.expect("250 2.0.0 Ok: queued as ").await;
        } else {
            c.expect("550 5.6.0 ").await;
        }
    }
}
