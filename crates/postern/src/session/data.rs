//! DATA and BDAT (RFC 5321 §4.1.1.4, RFC 3030): the message into a spool
//! draft, the end-of-data checks, the milters' end-of-message stage and the
//! commit that must be on disk before the 250.
//!
//! May touch: the spool (drafts and commits, through `Spool`); the queue
//! notifier. Implements RFC 5321 §4.1.1.4 and §4.5.2 (dot-stuffing, by
//! `DataDecoder`), §4.5.3.1 (size and line limits), RFC 3030 (CHUNKING).

use tokio::time::Instant;

use postern_wire::command::Body;
use postern_wire::data::{ChunkScanner, DataDecoder, DataFlags};
use postern_wire::received::ReceivedCounter;
use postern_wire::{codes, Reply};

use super::authcheck::{AuthStep, Disposition};
use super::trace::{build_envelope, received_header};
use super::{Chunking, End, Greeted, Session, Socket, State, Txn};
use crate::config::BareNewline;
use crate::maillog;
use crate::milter::Verdict;
use crate::spool::{Draft, Place};

/// Read size while a message arrives (DATA text, BDAT chunks).
const DATA_READ: usize = 64 * 1024;
/// The read buffer kept between messages.
const IDLE_READ: usize = 4096;
/// Decoded text goes to the draft in pieces of at least this size: as large
/// as the draft's buffer, which then passes them straight to the file.
const DRAFT_PIECE: usize = 64 * 1024;

impl<S: Socket> Session<S> {
    /// Takes the transaction out of the state for DATA/BDAT, or replies why not.
    fn take_txn(&mut self) -> Option<(Greeted, Txn)> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Mail { greeted, txn } if !txn.rcpts.is_empty() => Some((greeted, txn)),
            State::Mail { greeted, txn } => {
                self.state = State::Mail { greeted, txn };
                self.reply(codes::no_valid_recipients());
                None
            }
            other => {
                self.state = other;
                self.reply(codes::bad_sequence().with_text("Need MAIL and RCPT first"));
                None
            }
        }
    }

    /// Creates the spool draft and writes the `Received:` header.
    fn start_draft(&self, greeted: &Greeted, txn: &Txn) -> Result<Draft, Reply> {
        let mut draft = self.ctx.spool.draft().map_err(|e| {
            tracing::warn!("spool: {e}");
            if e.is_no_space() {
                codes::insufficient_storage()
            } else {
                codes::local_error()
            }
        })?;
        let header = received_header(self.settings(), &self.conn, self.client_name(), greeted, txn, &draft.id, self.tls());
        draft.write(header.as_bytes());
        Ok(draft)
    }

    /// DATA: 354, then the message through the smuggling-safe decoder.
    pub(super) async fn data(&mut self) -> Result<(), End> {
        let Some((greeted, mut txn)) = self.take_txn() else { return Ok(()) };
        if txn.params.body == Body::BinaryMime {
            self.reply(codes::bad_sequence().with_text("BINARYMIME requires BDAT"));
            self.enter(State::Mail { greeted, txn });
            return Ok(());
        }
        let mut draft = match self.start_draft(&greeted, &txn) {
            Ok(d) => d,
            Err(r) => {
                self.reject("DATA", r, &[("from", &txn.sender())]);
                self.enter(State::Mail { greeted, txn });
                return Ok(());
            }
        };
        if let Some(r) = self.milter_data(&draft.id, &mut txn).await? {
            self.reject("DATA", r, &[("from", &txn.sender())]);
            self.enter(State::Ready { greeted });
            return Ok(());
        }
        self.reply(codes::start_data());
        let limits = &self.settings().config.limits;
        let mut dec = DataDecoder::new(limits.max_line_length, limits.max_message_size);
        let deadline = self.deadline(limits.data_timeout);
        // One pass over the text: the decoder unstuffs it from the read
        // buffer into `out` (one copy), which goes to the draft in pieces of
        // at least DRAFT_PIECE, written straight to the file (no second
        // copy into the draft's buffer); only the header section is looked
        // at again, by the hop counter.
        let mut out = Vec::new();
        let mut hops = ReceivedCounter::new();
        loop {
            let before = out.len();
            let fed = dec.feed(&self.rbuf, &mut out);
            hops.feed(&out[before..]);
            self.rbuf.drain(..fed.consumed);
            if fed.done {
                break;
            }
            if out.len() >= DRAFT_PIECE {
                draft.write(&out);
                out.clear();
            }
            self.fill_data(deadline).await?;
        }
        draft.write(&out);
        drop(out);
        self.release_data_buffer();
        self.finish_message(greeted, txn, draft, (dec.flags(), hops.count()), "DATA").await
    }

    /// Reads more of a message: like `fill`, into a read buffer of
    /// [`DATA_READ`] octets, so a large message takes a few large reads.
    async fn fill_data(&mut self, deadline: Instant) -> Result<(), End> {
        if self.rbuf.capacity() < DATA_READ {
            // Exactly DATA_READ: `fill` shrinks only a larger idle buffer.
            self.rbuf.reserve_exact(DATA_READ - self.rbuf.len());
        }
        self.fill(deadline, false).await
    }

    /// After a message: the large read buffer goes back, so an idle
    /// session between messages holds only a small one.
    fn release_data_buffer(&mut self) {
        if self.rbuf.capacity() > IDLE_READ && self.rbuf.len() <= IDLE_READ {
            self.rbuf.shrink_to(IDLE_READ);
        }
    }

    /// BDAT: one chunk; LAST commits.
    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Result<(), End> {
        let (greeted, txn, mut chunking) = match std::mem::replace(&mut self.state, State::Closed) {
            State::Bdat { greeted, txn, chunking } => (greeted, txn, chunking),
            State::Mail { greeted, mut txn } if !txn.rcpts.is_empty() => {
                let max_line = self.settings().config.limits.max_line_length;
                let (draft, failed) = match self.start_draft(&greeted, &txn) {
                    Ok(d) => match self.milter_data(&d.id, &mut txn).await? {
                        None => (Some(d), None),
                        Some(r) => (None, Some(r)),
                    },
                    Err(r) => (None, Some(r)),
                };
                (
                    greeted,
                    txn,
                    Box::new(Chunking { draft, scanner: ChunkScanner::new(max_line), hops: ReceivedCounter::new(), size: 0, failed }),
                )
            }
            other => {
                // MAIL without recipients: the chunk is still on its way,
                // read and drop it.
                self.state = other;
                let deadline = self.deadline(self.settings().config.limits.data_timeout);
                self.read_chunk(size, deadline, |_| {}).await?;
                self.reply(codes::no_valid_recipients());
                return Ok(());
            }
        };
        let max = self.settings().config.limits.max_message_size;
        let deadline = self.deadline(self.settings().config.limits.data_timeout);
        if chunking.failed.is_none() && chunking.size.saturating_add(size) > max {
            chunking.failed = Some(codes::too_big());
            chunking.draft = None;
        }
        {
            let ch = &mut *chunking;
            self.read_chunk(size, deadline, |bytes| {
                if ch.failed.is_none() {
                    ch.scanner.scan(bytes);
                    ch.hops.feed(bytes);
                    if let Some(d) = ch.draft.as_mut() {
                        d.write(bytes);
                    }
                }
            })
            .await?;
        }
        chunking.size += size;
        if !last {
            let r = match &chunking.failed {
                Some(r) => r.clone(),
                None => codes::ok().with_text(format!("{size} octets received")),
            };
            self.reply(r);
            self.enter(State::Bdat { greeted, txn, chunking });
            return Ok(());
        }
        match (chunking.failed, chunking.draft) {
            (None, Some(draft)) => {
                let flags = chunking.scanner.finish();
                return self.finish_message(greeted, txn, draft, (flags, chunking.hops.count()), "BDAT").await;
            }
            (failed, _) => {
                let r = failed.unwrap_or_else(codes::local_error);
                if let Some(m) = self.milters.as_mut() {
                    m.abort().await;
                }
                self.reject("BDAT", r, &[("from", &txn.sender())]);
                self.enter(State::Ready { greeted });
            }
        }
        Ok(())
    }

    /// Reads exactly `size` octets of chunk data, passing them to `sink`.
    pub(super) async fn read_chunk(&mut self, size: u64, deadline: Instant, mut sink: impl FnMut(&[u8])) -> Result<(), End> {
        let mut remaining = size;
        loop {
            let n = (remaining.min(self.rbuf.len() as u64)) as usize;
            sink(&self.rbuf[..n]);
            self.rbuf.drain(..n);
            remaining -= n as u64;
            if remaining == 0 {
                self.release_data_buffer();
                return Ok(());
            }
            self.fill_data(deadline).await?;
        }
    }

    /// What the decoder saw that refuses the message. `hops`: the
    /// `Received:` fields it arrived with (ours is not counted).
    fn content_refusal(&self, flags: DataFlags, hops: u32) -> Option<Reply> {
        let limits = &self.settings().config.limits;
        if flags.too_big {
            Some(codes::too_big())
        } else if flags.bare_cr_lf && limits.bare_newline == BareNewline::Reject {
            Some(codes::bare_newline())
        } else if flags.long_line {
            let max = limits.max_line_length;
            Some(codes::line_in_message_too_long().with_text(format!("Message has a line longer than {max} octets (RFC 5321 4.5.3.1.6)")))
        } else if hops > limits.max_received_headers {
            // RFC 5321 §6.3: a loop is detected by counting Received: fields.
            Some(codes::too_many_hops())
        } else {
            None
        }
    }

    /// Checks what the decoder saw, runs the milters' end-of-message stage,
    /// then commits to the spool and replies.
    /// `seen`: the decoder's flags and the `Received:` count.
    async fn finish_message(
        &mut self,
        greeted: Greeted,
        mut txn: Txn,
        mut draft: Draft,
        seen: (DataFlags, u32),
        verb: &str,
    ) -> Result<(), End> {
        let sender = txn.sender();
        if let Some(r) = self.content_refusal(seen.0, seen.1) {
            drop(draft); // removes the temp file: no debris
            if let Some(m) = self.milters.as_mut() {
                m.abort().await;
            }
            self.reject(verb, r, &[("from", &sender)]);
            self.enter(State::Ready { greeted });
            return Ok(());
        }
        let mut place = Place::Active;
        let mut quarantine = None;
        if txn.discard {
            if let Some(m) = self.milters.as_mut() {
                m.abort().await;
            }
            return self.discarded(greeted, draft, &sender);
        }
        if self.milters.is_some() {
            let out = self.milter_message(&mut draft).await;
            match self.apply_milters(out, &mut txn, &mut draft) {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Discard) => return self.discarded(greeted, draft, &sender),
                Ok(Verdict::Reject(r)) => {
                    drop(draft);
                    self.reject(verb, r, &[("from", &sender)]);
                    self.enter(State::Ready { greeted });
                    return Ok(());
                }
                Ok(Verdict::Close(r)) => return self.milter_close(verb, r),
                Err(q) => {
                    place = Place::Hold;
                    quarantine = Some(q.0);
                }
            }
        }
        let auth = match self.mail_auth(&greeted, &txn, &mut draft).await {
            AuthStep::Continue(log) => log,
            AuthStep::Hold(reason, log) => {
                if quarantine.is_none() {
                    place = Place::Hold;
                    quarantine = Some(reason);
                }
                Some(log)
            }
            AuthStep::Refuse(r, log) => {
                drop(draft);
                let mut fields = vec![("from", sender.as_str())];
                fields.extend(log.fields());
                self.reject(verb, r, &fields);
                self.enter(State::Ready { greeted });
                return Ok(());
            }
        };
        // After the milters' changes, before the 250: the signature covers what is queued.
        let dkim = match self.dkim_sign(&greeted, &txn, &mut draft) {
            Ok(d) => d,
            Err(r) => {
                drop(draft);
                self.reject(verb, r, &[("from", &sender)]);
                self.enter(State::Ready { greeted });
                return Ok(());
            }
        };
        self.commit(greeted, txn, draft, Disposition { place, quarantine, auth, dkim }, verb).await
    }

    /// Commits the draft (fsync, on a blocking thread), then replies: the
    /// 250 goes out only once the message is on disk.
    async fn commit(&mut self, greeted: Greeted, txn: Txn, draft: Draft, disp: Disposition, verb: &str) -> Result<(), End> {
        let Disposition { place, quarantine, auth, dkim } = disp;
        let id = draft.id.clone();
        let sender = txn.sender();
        let mut env = build_envelope(&id, &txn, draft.written(), &self.conn, &greeted.helo);
        env.quarantine = quarantine;
        let spool = self.ctx.spool.clone();
        let env2 = env.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || spool.commit_to(draft, &env2, place)).await;
        crate::metrics::commit_duration(started.elapsed());
        match result {
            Ok(Ok(())) => {
                self.messages += 1;
                self.junk = 0;
                let client = self.client_text();
                let (size, nrcpt) = (env.size.to_string(), env.recipients.len().to_string());
                let mut fields = vec![
                    ("id", id.as_str()),
                    ("from", &sender),
                    ("size", &size),
                    ("nrcpt", &nrcpt),
                    ("client", &client),
                    ("helo", &greeted.helo.name),
                ];
                if let Some(a) = &auth {
                    fields.extend(a.fields());
                }
                if let Some(d) = &dkim {
                    fields.push(("dkim", d));
                }
                maillog::queued(&fields);
                if let Some(reason) = &env.quarantine {
                    maillog::hold(&[("id", id.as_str()), ("reason", reason)]);
                }
                let _ = self.ctx.queued.send(id.clone());
                self.reply(codes::ok().with_text(format!("Ok: queued as {id}")));
            }
            Ok(Err(e)) => {
                tracing::error!("spool commit failed: {e}");
                let r = if e.is_no_space() { codes::insufficient_storage() } else { codes::local_error() };
                self.reject(verb, r, &[("from", &sender), ("error", &e.to_string())]);
            }
            Err(e) => {
                tracing::error!("spool commit task failed: {e}");
                self.reject(verb, codes::local_error(), &[("from", &sender)]);
            }
        }
        self.enter(State::Ready { greeted });
        Ok(())
    }

    /// A milter said "discard": the client hears the usual 250, nothing is queued.
    fn discarded(&mut self, greeted: Greeted, draft: Draft, sender: &str) -> Result<(), End> {
        let id = draft.id.clone();
        drop(draft);
        let client = self.client_text();
        maillog::discarded(&[("id", id.as_str()), ("from", sender), ("client", &client)]);
        self.reply(codes::ok().with_text(format!("Ok: queued as {id}")));
        self.enter(State::Ready { greeted });
        Ok(())
    }
}
