//! The report as a mail (RFC 8460 §5.3): `multipart/report;
//! report-type="tlsrpt"`, a short text part and the gzip-compressed JSON
//! as `application/tlsrpt+gzip`, with the `TLS-Report-Domain` and
//! `TLS-Report-Submitter` header fields and the subject the RFC spells out.
//!
//! May touch: nothing (pure). RFCs: 8460 §5.1, §5.3; 6522 (multipart/report); 1952 (gzip).

use std::io::Write;

use base64::Engine;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::report::Submitter;

/// gzip (RFC 1952) of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// What one report mail says.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    /// The policy domain.
    pub domain: &'a str,
    /// The `rua` mailboxes.
    pub to: &'a [String],
    /// The report id.
    pub report_id: &'a str,
    /// `YYYY-MM-DD`.
    pub day: &'a str,
    /// The attachment's name (RFC 8460 §5.1).
    pub filename: &'a str,
    /// The `Date:` value.
    pub date: &'a str,
}

/// The complete message (CRLF line ends) with `json` gzipped inside.
pub fn build(who: &Submitter, l: &Letter<'_>, json: &[u8]) -> Vec<u8> {
    let boundary = format!("tlsrpt.{:016x}", rand::random::<u64>());
    let b64 = base64::engine::general_purpose::STANDARD.encode(gzip(json));
    let mut m = String::new();
    m.push_str(&format!("From: {}\r\n", who.from));
    m.push_str(&format!("To: {}\r\n", l.to.join(", ")));
    m.push_str(&format!("Date: {}\r\n", l.date));
    m.push_str(&format!("Message-ID: <{}>\r\n", l.report_id));
    // RFC 8460 §5.3: this exact subject, and the two header fields.
    m.push_str(&format!("Subject: Report Domain: {} Submitter: {} Report-ID: <{}>\r\n", l.domain, who.domain, l.report_id));
    m.push_str(&format!("TLS-Report-Domain: {}\r\n", l.domain));
    m.push_str(&format!("TLS-Report-Submitter: {}\r\n", who.domain));
    m.push_str("Auto-Submitted: auto-generated\r\n");
    // RFC 8460 §5.3: a report must get through even when TLS to the
    // reporting domain fails (the failure is what it reports). RFC 8689
    // §5 `TLS-Required: No` makes delivery fall back to opportunistic TLS
    // when mx.tls, DANE or MTA-STS would refuse the host.
    m.push_str("TLS-Required: No\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!("Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
    m.push_str("This is a MIME-formatted message.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"));
    m.push_str(&format!(
        "This is an aggregate TLS report (RFC 8460) from {} for {}, {} (UTC).\r\nReport-ID: <{}>\r\n\r\n",
        who.domain, l.domain, l.day, l.report_id
    ));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: application/tlsrpt+gzip; name=\"{f}\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{f}\"\r\n\r\n",
        f = l.filename
    ));
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(&String::from_utf8_lossy(chunk));
        m.push_str("\r\n");
    }
    m.push_str(&format!("\r\n--{boundary}--\r\n"));
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn gzip_round_trip() {
        let data = br#"{"organization-name":"x","policies":[]}"#.repeat(50);
        let z = gzip(&data);
        assert_eq!(&z[..2], &[0x1f, 0x8b], "gzip magic");
        assert!(z.len() < data.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&z[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn mime_shape() {
        let who = Submitter {
            organization: "o".into(),
            contact: "c".into(),
            from: "tlsrpt@sender.example".into(),
            domain: "sender.example".into(),
        };
        let to = vec!["tls@rcpt.example".to_string()];
        let l = Letter {
            domain: "rcpt.example",
            to: &to,
            report_id: "r1@sender.example",
            day: "2026-12-05",
            filename: "sender.example!rcpt.example!1!2!r1.json.gz",
            date: "Sat, 05 Dec 2026 00:10:00 +0000",
        };
        let json = br#"{"report-id":"r1@sender.example"}"#;
        let text = String::from_utf8(build(&who, &l, json)).unwrap();
        assert!(text.contains("\r\nSubject: Report Domain: rcpt.example Submitter: sender.example Report-ID: <r1@sender.example>\r\n"));
        assert!(text.contains("\r\nTLS-Report-Domain: rcpt.example\r\n"));
        assert!(text.contains("\r\nTLS-Required: No\r\n"));
        assert!(text.contains("\r\nTLS-Report-Submitter: sender.example\r\n"));
        assert!(text.contains("multipart/report; report-type=\"tlsrpt\""));
        assert!(text.contains("Content-Type: application/tlsrpt+gzip"));
        assert!(!text.contains("\n\n") && !text.replace("\r\n", "").contains('\n'), "CRLF only");
        assert!(text.lines().all(|l| l.len() <= 998));
        // The attachment decodes back to the JSON.
        let start = text.find("filename=").unwrap();
        let body_start = text[start..].find("\r\n\r\n").unwrap() + start + 4;
        let end = text[body_start..].find("\r\n\r\n--").unwrap() + body_start;
        let b64: String = text[body_start..end].split("\r\n").collect();
        let z = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&z[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, json);
    }
}
