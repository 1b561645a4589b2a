//! Import from a Cyrus/sendmail `sasldb2`: a Berkeley DB hash file read by
//! hand (no libdb needed). Passwords are re-hashed on import.
//!
//! May touch: the sasldb2 file named (read).

use std::path::Path;

use super::{UserDb, UserError};

/// Why a file is not a Berkeley DB hash database we can read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BdbError {
    /// Shorter than one metadata page.
    #[error("too short for a Berkeley DB file")]
    TooShort,
    /// The magic number is not the hash access method's.
    #[error("not a Berkeley DB hash database")]
    NotHash,
    /// The page size is not a power of two in 512..=65536.
    #[error("bad page size {0}")]
    BadPageSize(usize),
    /// A page's item index points outside the page.
    #[error("corrupt hash page index")]
    CorruptIndex,
}

/// One key/data pair of a Berkeley DB file.
pub type KeyData = (Vec<u8>, Vec<u8>);

impl UserDb {
    /// Imports a Cyrus `sasldb2` (Berkeley DB hash file): every
    /// `user\0realm\0userPassword` entry. Returns the imported names.
    pub fn import_sasldb(&mut self, path: &Path, keep_plain: bool) -> Result<Vec<String>, UserError> {
        let data = std::fs::read(path).map_err(|source| UserError::Read { path: path.to_path_buf(), source })?;
        let pairs = read_bdb_hash(&data).map_err(|source| UserError::Sasldb { path: path.to_path_buf(), source })?;
        let mut names = Vec::new();
        for (k, v) in pairs {
            let parts: Vec<&[u8]> = k.split(|&b| b == 0).collect();
            if parts.len() != 3 || parts[2] != b"userPassword" {
                continue;
            }
            let (Ok(user), Ok(pw)) = (std::str::from_utf8(parts[0]), std::str::from_utf8(&v)) else { continue };
            self.set_password(user, pw, keep_plain)?;
            names.push(user.to_ascii_lowercase());
        }
        Ok(names)
    }
}

/// Reads every key/data pair of a Berkeley DB hash file (format version 8
/// or 9, as written by libdb 4.x/5.x for Cyrus sasldb2). Hand-written: no
/// crate reads Berkeley DB, and an importer must not need libdb. Only
/// on-page items are read (sasldb values are short); overflow items are
/// skipped.
pub fn read_bdb_hash(data: &[u8]) -> Result<Vec<KeyData>, BdbError> {
    const HASH_MAGIC: u32 = 0x0006_1561;
    if data.len() < 512 {
        return Err(BdbError::TooShort);
    }
    let le = u32::from_le_bytes([data[12], data[13], data[14], data[15]]);
    let be = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
    let little = if le == HASH_MAGIC {
        true
    } else if be == HASH_MAGIC {
        false
    } else {
        return Err(BdbError::NotHash);
    };
    let u16_at = |b: &[u8], o: usize| -> Option<usize> {
        let x = [*b.get(o)?, *b.get(o + 1)?];
        Some(if little { u16::from_le_bytes(x) } else { u16::from_be_bytes(x) } as usize)
    };
    let u32_at = |b: &[u8], o: usize| -> usize {
        let x = [data[o], data[o + 1], data[o + 2], data[o + 3]];
        let _ = b;
        (if little { u32::from_le_bytes(x) } else { u32::from_be_bytes(x) }) as usize
    };
    let pagesize = u32_at(data, 20);
    if !(512..=65536).contains(&pagesize) || !pagesize.is_power_of_two() {
        return Err(BdbError::BadPageSize(pagesize));
    }
    let mut out = Vec::new();
    for page in data.chunks(pagesize).skip(1) {
        if page.len() < 26 {
            continue;
        }
        let kind = page[25];
        if kind != 13 && kind != 2 {
            continue; // not a hash page (P_HASH / P_HASH_UNSORTED)
        }
        let entries = u16_at(page, 20).unwrap_or(0);
        // Items lie at strictly decreasing offsets, item i ending where
        // item i-1 starts (BDB's own LEN_HITEM). An index out of that
        // order made items overlap: the same bytes returned again and
        // again, up to ~2 GiB from one 64 KiB page (found by the `sasldb`
        // fuzz target).
        let mut offsets: Vec<usize> = Vec::with_capacity(entries);
        for i in 0..entries {
            match u16_at(page, 26 + 2 * i) {
                Some(o) if o < offsets.last().copied().unwrap_or(page.len()) => offsets.push(o),
                _ => return Err(BdbError::CorruptIndex),
            }
        }
        let item = |i: usize| -> Option<&[u8]> {
            let start = offsets[i];
            let end = if i == 0 { page.len() } else { offsets[i - 1] };
            if start >= end || page[start] != 1 {
                return None; // not H_KEYDATA (overflow or duplicate set)
            }
            Some(&page[start + 1..end])
        };
        let mut i = 0;
        while i + 1 < entries {
            if let (Some(k), Some(v)) = (item(i), item(i + 1)) {
                out.push((k.to_vec(), v.to_vec()));
            }
            i += 2;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// `tests/fixtures/sasldb2` was made by Debian's saslpasswd2 (Cyrus SASL
    /// 2.1.28, Berkeley DB 5.3): alice@mx.test = "pa ss:wörd", bob@mx.test = "x".
    #[test]
    fn reads_a_real_sasldb2() {
        let data = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sasldb2")).unwrap();
        let mut pairs = super::read_bdb_hash(&data).unwrap();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                (b"alice\0mx.test\0userPassword".to_vec(), "pa ss:wörd".as_bytes().to_vec()),
                (b"bob\0mx.test\0userPassword".to_vec(), b"x".to_vec()),
            ]
        );
        assert!(super::read_bdb_hash(b"not a database at all, too short").is_err());
    }

    /// A hash page whose index is not in decreasing offset order is
    /// refused: such items overlapped and were returned more than once
    /// (found by the `sasldb` fuzz target).
    #[test]
    fn overlapping_items_are_corrupt() {
        let page = |offsets: &[u16]| {
            let mut file = vec![0u8; 1024];
            file[12..16].copy_from_slice(&0x0006_1561u32.to_le_bytes());
            file[20..24].copy_from_slice(&512u32.to_le_bytes());
            let p = &mut file[512..];
            p[20..22].copy_from_slice(&(offsets.len() as u16).to_le_bytes());
            p[25] = 13;
            for (i, o) in offsets.iter().enumerate() {
                p[26 + 2 * i..28 + 2 * i].copy_from_slice(&o.to_le_bytes());
                p[usize::from(*o)] = 1;
            }
            file
        };
        // Items 4 and 5 lie inside item 1 (item 3 is out of order).
        assert_eq!(super::read_bdb_hash(&page(&[500, 400, 350, 480, 460, 300])), Err(super::BdbError::CorruptIndex));
        let pairs = super::read_bdb_hash(&page(&[500, 400, 350, 300])).unwrap();
        assert_eq!(pairs.iter().map(|(k, v)| (k.len(), v.len())).collect::<Vec<_>>(), vec![(11, 99), (49, 49)]);
    }
}
