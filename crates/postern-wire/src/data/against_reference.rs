//! The `memchr` decoder and scanner against the octet-at-a-time reference
//! (`reference.rs`): every small input over the alphabet that matters, in
//! every split, with tight line and size limits; then long random texts in
//! random splits, as a large message arrives in reads.

use rand::{Rng, SeedableRng};

use super::reference;
use super::{ChunkScanner, DataDecoder};

fn flags3(f: super::DataFlags) -> [bool; 3] {
    [f.bare_cr_lf, f.long_line, f.too_big]
}

fn decode(chunks: &[&[u8]], max_line: usize, max_size: u64) -> (Vec<u8>, Option<usize>, [bool; 3]) {
    let (mut d, mut out, mut used) = (DataDecoder::new(max_line, max_size), Vec::new(), 0);
    for c in chunks {
        let fed = d.feed(c, &mut out);
        used += fed.consumed;
        if fed.done {
            return (out, Some(used), flags3(d.flags()));
        }
        assert_eq!(fed.consumed, c.len());
    }
    (out, None, flags3(d.flags()))
}

fn scan(chunks: &[&[u8]], max_line: usize) -> [bool; 3] {
    let mut s = ChunkScanner::new(max_line);
    chunks.iter().for_each(|c| s.scan(c));
    flags3(s.finish())
}

/// What `normalize_crlf` replaced: one octet at a time.
fn normalize_reference(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Whole, split at every point, and one octet at a time.
fn check(msg: &[u8], max_line: usize, max_size: u64) {
    let want = reference::decode(&[msg], max_line, max_size);
    assert_eq!(decode(&[msg], max_line, max_size), want, "{msg:?} whole, max_line {max_line} max_size {max_size}");
    for cut in 0..=msg.len() {
        let (a, b) = msg.split_at(cut);
        assert_eq!(decode(&[a, b], max_line, max_size), want, "{msg:?} cut at {cut}");
    }
    let octets: Vec<&[u8]> = msg.chunks(1).collect();
    assert_eq!(decode(&octets, max_line, max_size), want, "{msg:?} octet by octet");
    assert_eq!(super::normalize_crlf(msg), normalize_reference(msg), "{msg:?} normalize_crlf");
    let want = reference::scan(&[msg], max_line);
    assert_eq!(scan(&[msg], max_line), want, "{msg:?} scan");
    assert_eq!(scan(&octets, max_line), want, "{msg:?} scan octet by octet");
}

#[test]
fn every_small_input_decodes_as_the_reference() {
    let alphabet = [b'.', b'\r', b'\n', b'a'];
    let mut msg = Vec::new();
    for len in 0..=7u32 {
        for mut n in 0..4usize.pow(len) {
            msg.clear();
            for _ in 0..len {
                msg.push(alphabet[n % 4]);
                n /= 4;
            }
            check(&msg, 1000, 1 << 20);
            check(&msg, 3, 4); // lines of one octet, four octets in all
        }
    }
}

#[test]
fn edge_cases() {
    let cases: &[&[u8]] = &[
        b".\r\n",
        b"..\r\n.\r\n",
        b"a\r\n.\r\n",
        b"a\r\n..\r\n.\r\n",
        b"a\r\n.b\r\n.\r\n",
        b"a\r\n.\rb\r\n.\r\n",
        b"a\r\n.\nb\r\n.\r\n",
        b"a\n.\r\n.\r\n",
        b"a\r.\r\n\r\n.\r\n",
        b"\r\r\n.\r\n",
        b"\n\n.\r\n",
        b"x\r\n\r\n\r\n.\r\nQUIT\r\n",
        b"0123456789abc\r\n.\r\n",
        b"012345678\r\n9\r\n.\r\n",
    ];
    for msg in cases {
        for (max_line, max_size) in [(1000, 1 << 20), (3, 10), (5, 9), (2, 11), (1000, 0)] {
            check(msg, max_line, max_size);
        }
    }
}

/// Texts of 100 KB to 1 MB (lines of random length, some with a leading
/// dot, a few lone CRs and LFs) in random reads, as from a socket.
#[test]
fn large_random_texts_in_random_reads() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    for round in 0..12 {
        let mut msg = Vec::new();
        let target = rng.random_range(100_000..1_000_000);
        while msg.len() < target {
            if rng.random_ratio(1, 20) {
                msg.push(b'.');
            }
            let len = rng.random_range(0..1100);
            msg.extend((0..len).map(|_| rng.random_range(b' '..=b'~')));
            match rng.random_range(0..200) {
                0 => msg.push(b'\n'),
                1 => msg.push(b'\r'),
                _ => msg.extend_from_slice(b"\r\n"),
            }
        }
        msg.extend_from_slice(b".\r\nQUIT\r\n");
        let mut chunks = Vec::new();
        let mut rest = &msg[..];
        while !rest.is_empty() {
            let (a, b) = rest.split_at(rng.random_range(1..70_000).min(rest.len()));
            chunks.push(a);
            rest = b;
        }
        let max_size = if round % 3 == 0 { target as u64 / 2 } else { 1 << 24 };
        for max_line in [1000, 998] {
            let want = reference::decode(&[&msg], max_line, max_size);
            assert_eq!(decode(&chunks, max_line, max_size), want, "round {round}");
            assert_eq!(want.1, Some(msg.len() - b"QUIT\r\n".len()), "round {round}");
            assert_eq!(scan(&chunks, max_line), reference::scan(&[&msg], max_line));
        }
    }
}
