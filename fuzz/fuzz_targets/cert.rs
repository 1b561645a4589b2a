//! Certificate identity extraction (`cert_info`, used on every client
//! certificate before and after verification): any DER is parsed or
//! refused without panicking; fingerprints are 64 hex digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::tls::cert_info;

fuzz_target!(|der: &[u8]| {
    if let Ok(info) = cert_info(der) {
        assert_eq!((info.sha256.len(), info.spki_sha256.len()), (64, 64));
        let _ = info.subject_cns.len();
    }
});
