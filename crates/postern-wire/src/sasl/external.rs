//! EXTERNAL (RFC 4422 appendix A): the identity comes from the TLS client
//! certificate, mapped by the caller; the client may only name itself.
//!
//! May touch: nothing (bytes in, values out).

use super::{utf8, Exchange, SaslError, St, Step, Success};

impl Exchange {
    /// EXTERNAL with or without an initial response (then an empty 334).
    pub(super) fn external_start(&mut self, initial: Option<Vec<u8>>) -> Step {
        match initial {
            Some(data) => self.external(&data),
            None => {
                self.st = St::ExternalWait;
                Step::Challenge(Vec::new())
            }
        }
    }

    /// The client's authorization identity: empty, or the mapped user.
    pub(super) fn external(&mut self, data: &[u8]) -> Step {
        let Some(user) = self.external.clone() else { return Step::Fail(SaslError::NoExternalIdentity) };
        match utf8(data) {
            Ok("") => Step::Success(Success::new(user, None)),
            Ok(authzid) if authzid == user => Step::Success(Success::new(user, None)),
            Ok(_) => Step::Fail(SaslError::BadAuthzid),
            Err(e) => Step::Fail(e),
        }
    }
}
