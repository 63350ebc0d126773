//! The node's Ed25519 identity (its PeerId), kept in `DATA_DIR/identity.key`
//! with mode 0600 as libp2p's protobuf encoding.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::Error;

/// File name of the identity key inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

/// Loads the identity in `data_dir`, creating one if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, Error> {
    let path = data_dir.join(IDENTITY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let mode = fs::metadata(&path).map_err(Error::io(&path))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(Error::Identity {
                    path,
                    reason: format!("mode {:o} lets others read it; run chmod 600", mode & 0o777),
                });
            }
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| Error::Identity { path, reason: e.to_string() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(Error::io(data_dir))?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| Error::Identity { path: path.clone(), reason: e.to_string() })?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(Error::io(&path))?;
            f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(Error::io(&path))?;
            Ok(key)
        }
        Err(e) => Err(Error::io(path)(e)),
    }
}
