//! What the milters change in a message: the modifications they send at
//! end of message, the header section they edit, and writing the result
//! back into the spool draft.
//!
//! May touch: the message text through the session's spool [`Draft`]
//! (read back; rewritten via [`Draft::rewrite`], which owns durability).

use tokio::io::AsyncReadExt;

use postern_wire::milter::{action, split_headers, Header, Response};

use crate::spool::Draft;

/// A changed message text: the headers, and the body (`None`: the
/// original body, from `body_offset` of the draft).
#[derive(Debug)]
pub struct Rewrite {
    /// All header fields.
    pub headers: Vec<Header>,
    /// A replacement body, when a milter sent one.
    pub body: Option<Vec<u8>>,
    /// Where the original body starts in the draft.
    pub body_offset: u64,
}

/// Replaces the draft's text with what the milters left.
pub fn rewrite_draft(draft: &mut Draft, rw: &Rewrite) -> Result<(), crate::spool::SpoolError> {
    let mut original = draft.reader()?;
    draft.rewrite(|w| write_rewrite(w, rw, Some(&mut original)))
}

/// Writes a rewritten message: headers then the body (replacement, or the
/// original from `body_offset` of `original`).
pub fn write_rewrite(out: &mut dyn std::io::Write, rw: &Rewrite, original: Option<&mut std::fs::File>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(4096);
    for h in &rw.headers {
        h.encode(&mut head);
    }
    head.extend_from_slice(b"\r\n");
    out.write_all(&head)?;
    match (&rw.body, original) {
        (Some(b), _) => out.write_all(b),
        (None, Some(f)) => {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(rw.body_offset))?;
            std::io::copy(f, out).map(|_| ())
        }
        (None, None) => Ok(()),
    }
}

/// The header fields of the draft and where its body starts. Header
/// sections are small; at most 1 MiB is read.
pub(super) async fn read_headers(draft: &mut Draft) -> Result<(Vec<Header>, u64), std::io::Error> {
    let f = draft.reader().map_err(std::io::Error::other)?;
    let mut f = tokio::fs::File::from_std(f);
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = f.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= 1024 * 1024 {
            break;
        }
    }
    let (headers, offset) = split_headers(&buf);
    Ok((headers, offset as u64))
}

/// What a modification needs negotiated, its log name and detail.
pub(super) fn describe(m: &Response) -> (u32, &'static str, String) {
    match m {
        Response::AddHeader { name, .. } => (action::ADDHDRS, "add_header", name.clone()),
        Response::InsertHeader { index, name, .. } => (action::ADDHDRS, "insert_header", format!("{name} at {index}")),
        Response::ChangeHeader { index, name, value } if value.is_empty() => (action::CHGHDRS, "delete_header", format!("{name}[{index}]")),
        Response::ChangeHeader { index, name, .. } => (action::CHGHDRS, "change_header", format!("{name}[{index}]")),
        Response::ReplaceBody(c) => (action::CHGBODY, "replace_body", format!("{} octets", c.len())),
        Response::ChangeFrom { from, .. } => (action::CHGFROM, "change_from", from.clone()),
        Response::AddRcpt { rcpt, params: None } => (action::ADDRCPT | action::ADDRCPT_PAR, "add_rcpt", rcpt.clone()),
        Response::AddRcpt { rcpt, .. } => (action::ADDRCPT_PAR, "add_rcpt", rcpt.clone()),
        Response::DelRcpt(r) => (action::DELRCPT, "delete_rcpt", r.clone()),
        Response::Quarantine(r) => (action::QUARANTINE, "quarantine", r.clone()),
        _ => (0, "other", String::new()),
    }
}

/// A replacement body with CRLF line ends (milters may send bare LF).
pub(super) fn crlf_normalise(b: Vec<u8>) -> Vec<u8> {
    if !b.iter().enumerate().any(|(i, &c)| c == b'\n' && (i == 0 || b[i - 1] != b'\r')) {
        return b;
    }
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf() {
        assert_eq!(crlf_normalise(b"a\r\nb\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf_normalise(b"\nx".to_vec()), b"\r\nx");
        assert_eq!(crlf_normalise(b"ok\r\n".to_vec()), b"ok\r\n");
    }

    #[test]
    fn describe_needs_the_right_action() {
        let cases: Vec<(Response, u32, &str)> = vec![
            (Response::AddHeader { name: "X".into(), value: "v".into() }, action::ADDHDRS, "add_header"),
            (Response::ChangeHeader { index: 1, name: "X".into(), value: String::new() }, action::CHGHDRS, "delete_header"),
            (Response::ReplaceBody(vec![1]), action::CHGBODY, "replace_body"),
            (Response::Quarantine("r".into()), action::QUARANTINE, "quarantine"),
            (Response::DelRcpt("<a@b>".into()), action::DELRCPT, "delete_rcpt"),
        ];
        for (m, need, what) in cases {
            let (n, w, _) = describe(&m);
            assert_eq!((n, w), (need, what));
        }
    }

    #[test]
    fn write_rewrite_with_new_and_original_body() {
        let rw = Rewrite { headers: vec![Header::from_milter("Subject", "hi")], body: Some(b"new\r\n".to_vec()), body_offset: 0 };
        let mut out = Vec::new();
        write_rewrite(&mut out, &rw, None).unwrap();
        assert_eq!(out, b"Subject: hi\r\n\r\nnew\r\n");
        let rw = Rewrite { body: None, ..rw };
        out.clear();
        write_rewrite(&mut out, &rw, None).unwrap();
        assert_eq!(out, b"Subject: hi\r\n\r\n");
    }
}
