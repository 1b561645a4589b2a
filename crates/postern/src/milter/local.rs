//! Milters for mail queued without SMTP (the `sendmail` command), the way
//! Postfix runs `non_smtpd_milters`.
//!
//! May touch: the milters' sockets; the message text through the spool
//! [`Draft`] (read back; the caller applies the rewrite).

use std::sync::Arc;

use crate::config::Milter as MilterConfig;
use crate::spool::Draft;

use super::{ConnectInfo, Macros, MessageResult, Milters, Verdict};

/// Runs a message queued without SMTP through milters: CONNECT from
/// localhost, HELO, MAIL, each RCPT, DATA, then the message. Recipients a
/// milter refuses refuse the whole message (there is no SMTP dialogue to
/// refuse one of them in).
pub async fn filter_local(
    cfgs: &[Arc<MilterConfig>],
    hostname: &str,
    draft: &mut Draft,
    sender: &str,
    rcpts: &[String],
    max_size: u64,
) -> MessageResult {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let id = draft.id.to_string();
    let connect: Macros = vec![
        ("j", hostname.to_string()),
        ("_", "localhost [127.0.0.1]".into()),
        ("v", concat!("postern ", env!("CARGO_PKG_VERSION")).to_string()),
        ("{daemon_name}", "sendmail".into()),
        ("{client_addr}", "127.0.0.1".into()),
        ("{client_name}", "localhost".into()),
    ];
    let (mut m, v) = Milters::connect(cfgs, &ConnectInfo { hostname: "localhost", peer }, &connect, "local".into()).await;
    let mail_args = vec![format!("<{sender}>")];
    let mail_macros: Macros = vec![("{mail_addr}", sender.to_string()), ("{mail_mailer}", "local".into())];
    let mut verdict = v;
    if verdict == Verdict::Continue {
        verdict = m.helo("localhost", &Vec::new()).await;
    }
    if verdict == Verdict::Continue {
        verdict = m.mail(&mail_args, &mail_macros).await;
    }
    for r in rcpts {
        if verdict != Verdict::Continue {
            break;
        }
        verdict = m.rcpt(&[format!("<{r}>")], &vec![("{rcpt_addr}", r.clone())]).await;
    }
    m.queue_id = Some(id.clone());
    if verdict == Verdict::Continue {
        verdict = m.data(&vec![("i", id.clone())]).await;
    }
    let out = if verdict == Verdict::Continue {
        let macros: Macros = vec![("i", id)];
        m.message(draft, &macros, &macros, max_size).await
    } else {
        MessageResult::decided(verdict)
    };
    m.quit().await;
    out
}
