//! LOGIN (draft-murchison-sasl-login): `Username:`, then `Password:`.
//!
//! May touch: nothing (bytes in, values out).

use super::{utf8, Exchange, Need, SaslError, St, Step};

impl Exchange {
    /// LOGIN, optionally with the user as initial response.
    pub(super) fn login_start(&mut self, initial: Option<Vec<u8>>) -> Step {
        match initial {
            // `AUTH LOGIN <base64 user>` (initial response, RFC 4954 style).
            Some(user) if !user.is_empty() => match utf8(&user) {
                Ok(u) => {
                    self.st = St::LoginPass { user: u.to_string() };
                    Step::Challenge(b"Password:".to_vec())
                }
                Err(e) => Step::Fail(e),
            },
            _ => {
                self.st = St::LoginUser;
                Step::Challenge(b"Username:".to_vec())
            }
        }
    }

    /// The answer to `Username:`.
    pub(super) fn login_user(&mut self, data: &[u8]) -> Step {
        match utf8(data) {
            Ok(u) if !u.is_empty() => {
                self.st = St::LoginPass { user: u.to_string() };
                Step::Challenge(b"Password:".to_vec())
            }
            Ok(_) => Step::Fail(SaslError::Malformed("empty user name")),
            Err(e) => Step::Fail(e),
        }
    }

    /// The answer to `Password:`.
    pub(super) fn login_pass(&mut self, user: String, data: &[u8]) -> Step {
        match utf8(data) {
            Ok(p) => {
                self.st = St::WaitPassword { authcid: user.clone() };
                Step::Need(Need::CheckPassword { authcid: user, password: p.to_string() })
            }
            Err(e) => Step::Fail(e),
        }
    }
}
