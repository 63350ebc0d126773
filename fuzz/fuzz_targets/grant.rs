//! Grant strings are pasted by users and received from others.
#![no_main]
use cairn_crypto::{Grant, Identity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Grant::parse(s);
        let _ = Identity::from_seed([1; 32]).open_grant(s);
    }
});
