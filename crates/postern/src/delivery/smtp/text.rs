//! Sending a queued message's text after `354` (RFC 5321 §4.1.1.4,
//! dot-stuffing §4.5.2) without building a stuffed copy of it: the
//! pieces of [`DotStuffed`] are slices of the text as it was read from the
//! spool, written to the socket as they are when they are large, gathered
//! into one buffer when they are small (headers, lines around a leading
//! dot, the end marker), so a small message still goes out in one write.
//!
//! May touch: the outbound connection it is given.

use std::time::Duration;

use tokio::io::AsyncWrite;

use postern_wire::data::DotStuffed;

use super::{write_within, ConnError, WRITE_PIECE};

/// Pieces at least this long are written from the message itself.
const DIRECT: usize = 16 * 1024;
/// The end of a directly written piece that is gathered instead, to go
/// out with the end marker in the same write.
const TAIL: usize = 1024;

/// Writes `text` dot-stuffed and the end marker, flushed; every write
/// of up to `WRITE_PIECE` octets within `per_piece`.
pub(super) async fn send_text<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, text: &[u8], per_piece: Duration) -> Result<(), ConnError> {
    let mut gathered: Vec<u8> = Vec::with_capacity(text.len().min(WRITE_PIECE) + 5);
    for piece in DotStuffed::new(text) {
        if piece.len() >= DIRECT {
            let (head, tail) = piece.split_at(piece.len() - TAIL);
            if !gathered.is_empty() {
                write_within(w, &gathered, per_piece).await?;
                gathered.clear();
            }
            write_within(w, head, per_piece).await?;
            gathered.extend_from_slice(tail);
        } else {
            gathered.extend_from_slice(piece);
            if gathered.len() >= WRITE_PIECE {
                write_within(w, &gathered, per_piece).await?;
                gathered.clear();
            }
        }
    }
    write_within(w, &gathered, per_piece).await
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use postern_wire::data::dot_stuff;

    use super::*;

    /// Records what is written and where each write's buffer was.
    #[derive(Default)]
    struct Recorder {
        out: Vec<u8>,
        writes: Vec<(usize, usize)>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.writes.push((buf.as_ptr() as usize, buf.len()));
            self.out.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn sent(text: &[u8]) -> Recorder {
        let mut r = Recorder::default();
        send_text(&mut r, text, Duration::from_secs(1)).await.expect("send");
        let mut want = Vec::new();
        dot_stuff(text, &mut want);
        assert_eq!(r.out, want, "text of {} octets", text.len());
        r
    }

    /// Writes that came from the text itself (not copied).
    fn direct(r: &Recorder, text: &[u8]) -> usize {
        let range = text.as_ptr() as usize..text.as_ptr() as usize + text.len();
        r.writes.iter().filter(|(p, _)| range.contains(p)).map(|(_, n)| n).sum()
    }

    #[tokio::test]
    async fn small_messages_go_out_in_one_write() {
        for text in [&b""[..], b"a\r\n", b".\r\n", b"Subject: x\r\n\r\n..\r\n.a\r\nb", &[b'x'; 4096]] {
            let r = sent(text).await;
            assert_eq!(r.writes.len(), 1, "{:?}", String::from_utf8_lossy(text));
        }
    }

    /// A megabyte without leading dots: all but the last TAIL octets are
    /// written from the text itself, in WRITE_PIECE writes; the tail goes
    /// out with the end marker.
    #[tokio::test]
    async fn a_large_text_is_written_from_itself() {
        let line = b"0123456789012345678901234567890123456789012345678901234567890123456789012345\r\n";
        let text: Vec<u8> = line.iter().copied().cycle().take(line.len() * 13_000).collect();
        let r = sent(&text).await;
        assert_eq!(direct(&r, &text), text.len() - TAIL);
        assert!(r.writes.iter().all(|&(_, n)| n <= WRITE_PIECE));
        assert_eq!(r.writes.last().map(|w| w.1), Some(TAIL + 3));
    }

    /// Leading dots anywhere, at and around the edges of DIRECT and TAIL,
    /// lone LFs and CRs, no final CRLF: always what `dot_stuff` sends.
    #[tokio::test]
    async fn leading_dots_at_piece_edges() {
        let mut texts = Vec::new();
        for n in [DIRECT - 2, DIRECT - 1, DIRECT, DIRECT + 1, TAIL, TAIL + 1, WRITE_PIECE - 1, WRITE_PIECE + 3] {
            for end in [&b"\r\n.x\r\n"[..], b"\n.", b"\r\n.", b".\r\n", b"\r.\r\n", b""] {
                let mut t = vec![b'a'; n];
                t.extend_from_slice(end);
                texts.push(t.clone());
                t.splice(0..0, b".\r\n.".iter().copied());
                texts.push(t);
            }
        }
        // Many short dotted lines: gathered into WRITE_PIECE writes.
        texts.push(b".x\r\n".repeat(40_000));
        for t in &texts {
            sent(t).await;
        }
    }
}
