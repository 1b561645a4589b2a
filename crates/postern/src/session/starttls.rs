//! STARTTLS (RFC 3207) and the TLS handshake of implicit-TLS listeners
//! (RFC 8314).
//!
//! May touch: the client socket (the handshake takes it over). Implements
//! RFC 3207 §4 (454 without TLS material), §4.2 (the session starts over:
//! HELO and AUTH are forgotten), and the CVE-2011-0411 defence (plaintext
//! pipelined after STARTTLS is discarded, never executed inside TLS).

use postern_wire::codes;

use super::stream::Stream;
use super::{End, Session, Socket, State};
use crate::maillog;
use crate::tls::TlsInfo;

impl<S: Socket> Session<S> {
    /// Runs the TLS handshake on the socket (implicit TLS or after STARTTLS).
    pub(super) async fn handshake(&mut self) -> Result<(), End> {
        let Some(tls) = self.ctx.tls.clone() else { return Err(End::Gone) };
        let mode = self.ctx.listener.cert_mode_for(self.conn.peer.ip());
        let Stream::Plain(tcp) = std::mem::replace(&mut self.io, Stream::Upgrading) else {
            return Err(End::Gone);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config(mode));
        let deadline = self.deadline(self.settings().config.limits.command_timeout);
        let client = self.client_text();
        match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let info = TlsInfo::from_server(stream.get_ref().1, &tls, mode);
                let (subject, verdict, fp) = match &info.client_cert {
                    Some(c) => (c.cert.subject.clone(), c.verdict(), c.cert.sha256.clone()),
                    None => (String::new(), "no certificate".to_string(), String::new()),
                };
                let mode_text = mode.as_str();
                maillog::tls(&[
                    ("client", &client),
                    ("version", &info.version),
                    ("cipher", &info.cipher),
                    ("client_cert_mode", mode_text),
                    ("cert_subject", &subject),
                    ("cert_sha256", &fp),
                    ("cert", &verdict),
                ]);
                self.io = Stream::Tls(Box::new(stream), Box::new(info));
                Ok(())
            }
            Ok(Err(e)) => {
                maillog::tls(&[("client", &client), ("error", &e.to_string())]);
                self.enter(State::Closed);
                Err(End::Gone)
            }
            Err(_) => {
                maillog::tls(&[("client", &client), ("error", "handshake timeout")]);
                self.enter(State::Closed);
                Err(End::Gone)
            }
        }
    }

    /// STARTTLS (RFC 3207). The table refused it once TLS is active,
    /// without TLS material (454) and inside a transaction.
    pub(super) async fn starttls(&mut self) -> Result<(), End> {
        self.reply(codes::ready_for_tls());
        self.flush().await?;
        // CVE-2011-0411 class: anything the client pipelined after STARTTLS
        // arrived in plaintext and must not be executed inside TLS.
        if !self.rbuf.is_empty() {
            let client = self.client_text();
            let bytes = self.rbuf.len().to_string();
            maillog::tls(&[("client", &client), ("warning", "discarded plaintext pipelined after STARTTLS"), ("bytes", &bytes)]);
            self.rbuf.clear();
        }
        self.skip_to_lf = false;
        self.handshake().await?;
        // RFC 3207 §4.2: the session starts over; the client must EHLO
        // again, and nothing learnt before (HELO, AUTH) carries over: both
        // live in the state that this transition drops.
        self.enter(State::Fresh);
        Ok(())
    }
}
