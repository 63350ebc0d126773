//! Manifests come from decrypted index pages; a damaged one must not panic.
#![no_main]
use cairn_proto::ObjectManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ObjectManifest::from_bytes(data) {
        assert!(m.validate().is_ok());
    }
});
