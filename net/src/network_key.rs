//! Private network keys: a 32-byte pre-shared key in the libp2p (and
//! IPFS `swarm.key`) file format, `/key/swarm/psk/1.0.0/`, `/base16/`, and
//! the key in hex.

use std::path::Path;

use crate::error::Error;
use crate::swarm::NetworkKey;

/// A fresh random key.
pub fn generate() -> NetworkKey {
    NetworkKey::new(rand::random())
}

/// Reads a key file.
pub fn read(path: &Path) -> Result<NetworkKey, Error> {
    let bad = |reason: String| Error::NetworkKey { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    text.parse().map_err(|e: libp2p::pnet::KeyParseError| bad(e.to_string()))
}

/// Writes a key file readable by its owner only; refuses to replace one.
pub fn write(path: &Path, key: &NetworkKey) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |e: std::io::Error| Error::NetworkKey { path: path.display().to_string(), reason: e.to_string() };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(bad)?;
    f.write_all(key.to_key_file().as_bytes()).map_err(bad)?;
    f.sync_all().map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("network.key");
        let key = generate();
        write(&path, &key).expect("write");
        assert_eq!(read(&path).expect("read"), key);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(write(&path, &generate()).is_err(), "an existing key is never replaced");
        std::fs::write(dir.path().join("bad"), "/key/swarm/psk/1.0.0/\n/base16/\nzz\n").expect("write");
        let e = read(&dir.path().join("bad")).expect_err("bad key");
        assert!(e.to_string().contains("bad"), "{e}");
    }
}
