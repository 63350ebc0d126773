//! A peer identity (Ed25519, libp2p's protobuf encoding) kept in a file
//! readable by its owner only: a node's `identity.key`, a client
//! device's `identity.key` beside its config. A stable identity is what
//! nodes count usage and quotas against.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::Error;

/// Loads the identity in `path`, creating one (mode 0600) if there is none.
/// Refuses a file that others may read.
pub fn load_or_create(path: &Path) -> Result<Keypair, Error> {
    let bad = |reason: String| Error::IdentityFile { path: path.display().to_string(), reason };
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path).map_err(|e| bad(e.to_string()))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(bad(format!("mode {:o} lets others read it; run chmod 600", mode & 0o777)));
            }
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| bad(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
            }
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| bad(e.to_string()))?;
            // Written under a temporary name and renamed: two processes
            // starting at once both end up with one of the two keys whole.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| bad(e.to_string()))?;
            f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| bad(e.to_string()))?;
            match fs::hard_link(&tmp, path) {
                Ok(()) => {
                    let _ = fs::remove_file(&tmp);
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = fs::remove_file(&tmp);
                    load_or_create(path)
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    Err(bad(e.to_string()))
                }
            }
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_created_once_kept_private_and_refused_when_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("identity.key");
        let a = load_or_create(&path).expect("create");
        let b = load_or_create(&path).expect("load");
        assert_eq!(a.public(), b.public(), "the same identity comes back");
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load_or_create(&path).expect_err("readable by others");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&path, b"not a key").expect("write");
        assert!(load_or_create(&path).is_err(), "a damaged key is an error, not a new identity");
    }
}
