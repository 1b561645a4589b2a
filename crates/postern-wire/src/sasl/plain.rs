//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one message.
//!
//! May touch: nothing (bytes in, values out).

use super::{utf8, Exchange, Need, SaslError, St, Step};

impl Exchange {
    /// PLAIN with or without an initial response (then an empty 334).
    pub(super) fn plain_start(&mut self, initial: Option<Vec<u8>>) -> Step {
        match initial {
            Some(data) => self.plain(&data),
            None => {
                self.st = St::PlainWait;
                Step::Challenge(Vec::new())
            }
        }
    }

    /// RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd.
    pub(super) fn plain(&mut self, data: &[u8]) -> Step {
        let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
        if parts.len() != 3 {
            return Step::Fail(SaslError::Malformed("PLAIN needs authzid NUL authcid NUL password"));
        }
        let (Ok(authzid), Ok(authcid), Ok(password)) = (utf8(parts[0]), utf8(parts[1]), utf8(parts[2])) else {
            return Step::Fail(SaslError::Malformed("not UTF-8"));
        };
        if authcid.is_empty() {
            return Step::Fail(SaslError::Malformed("empty authcid"));
        }
        // We do not support proxy authorization: authzid must be empty or the user itself.
        if !authzid.is_empty() && authzid != authcid {
            return Step::Fail(SaslError::BadAuthzid);
        }
        self.st = St::WaitPassword { authcid: authcid.to_string() };
        Step::Need(Need::CheckPassword { authcid: authcid.to_string(), password: password.to_string() })
    }
}
