//! Key file: creation, permissions, passphrases, damage.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use cairn_crypto::keyfile::{self, change_passphrase, create, open};
use cairn_crypto::{Error, KdfParams, RootSecret};

fn fast() -> KdfParams {
    KdfParams::insecure_for_tests()
}

#[test]
fn plain_key_file_round_trips_with_mode_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/key");
    let root = RootSecret::generate();
    create(&path, &root, None, fast()).expect("create");
    let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(open(&path, None).expect("open").as_bytes(), root.as_bytes());
    assert!(!keyfile::is_sealed(&path).expect("read"));
    // No temporary files left behind.
    assert_eq!(fs::read_dir(path.parent().expect("dir")).expect("ls").count(), 1);
}

#[test]
fn never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    let root = RootSecret::generate();
    create(&path, &root, None, fast()).expect("create");
    let err = create(&path, &RootSecret::generate(), None, fast()).expect_err("exists");
    assert!(matches!(err, Error::KeyFileExists { .. }));
    assert_eq!(open(&path, None).expect("open").as_bytes(), root.as_bytes());
}

#[test]
fn sealed_key_file_needs_the_right_passphrase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    let root = RootSecret::generate();
    create(&path, &root, Some("correct horse"), fast()).expect("create");
    assert!(keyfile::is_sealed(&path).expect("read"));
    let before = fs::read(&path).expect("read");
    assert!(matches!(open(&path, Some("wrong")), Err(Error::WrongPassphrase { .. })));
    assert!(matches!(open(&path, None), Err(Error::PassphraseRequired { .. })));
    assert_eq!(fs::read(&path).expect("read"), before, "a failed open leaves the file untouched");
    assert_eq!(open(&path, Some("correct horse")).expect("open").as_bytes(), root.as_bytes());
}

#[test]
fn changing_the_passphrase_keeps_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    let root = RootSecret::generate();
    create(&path, &root, Some("old"), fast()).expect("create");
    let before = fs::read(&path).expect("read");
    assert!(matches!(change_passphrase(&path, Some("bad"), Some("new"), fast()), Err(Error::WrongPassphrase { .. })));
    assert_eq!(fs::read(&path).expect("read"), before);
    change_passphrase(&path, Some("old"), Some("new"), fast()).expect("change");
    assert!(matches!(open(&path, Some("old")), Err(Error::WrongPassphrase { .. })));
    assert_eq!(open(&path, Some("new")).expect("open").as_bytes(), root.as_bytes());
    change_passphrase(&path, Some("new"), None, fast()).expect("remove passphrase");
    assert_eq!(open(&path, None).expect("open").as_bytes(), root.as_bytes());
}

#[test]
fn group_readable_key_file_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    create(&path, &RootSecret::generate(), None, fast()).expect("create");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = open(&path, None).expect_err("insecure");
    assert!(matches!(err, Error::InsecurePermissions { mode: 0o644, .. }));
    assert!(err.to_string().contains("chmod 600"));
}

#[test]
fn damaged_key_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for pass in [None, Some("p")] {
        let path = dir.path().join(format!("key-{}", pass.is_some()));
        create(&path, &RootSecret::generate(), pass, fast()).expect("create");
        let good = fs::read(&path).expect("read");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).expect("write");
            let err = open(&path, pass).expect_err("damaged");
            assert!(matches!(err, Error::CorruptKeyFile { .. } | Error::UnsupportedKeyFile { .. }), "byte {i}: {err}");
        }
        fs::write(&path, &good[..20]).expect("write");
        assert!(matches!(open(&path, pass), Err(Error::CorruptKeyFile { .. })));
        fs::write(&path, b"").expect("write");
        assert!(matches!(open(&path, pass), Err(Error::CorruptKeyFile { .. })));
    }
}

#[test]
fn hostile_kdf_parameters_are_refused() {
    // A file asking for 1 TiB of Argon2 memory, with a valid checksum.
    let mut bytes = b"CAIRNKEY\x01\x01".to_vec();
    bytes.extend_from_slice(&(1u32 << 30).to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 16 + 24 + 48]);
    let sum = blake3::hash(&bytes);
    bytes.extend_from_slice(sum.as_bytes());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    fs::write(&path, &bytes).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(open(&path, Some("x")), Err(Error::KdfParams { .. })));
}
