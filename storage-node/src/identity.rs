//! The node's Ed25519 identity (its PeerId), kept in `DATA_DIR/identity.key`
//! with mode 0600 as libp2p's protobuf encoding.

use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::Error;

/// File name of the identity key inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

/// Loads the identity in `data_dir`, creating one if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, Error> {
    Ok(cairn_net::identity_file::load_or_create(&data_dir.join(IDENTITY_FILE))?)
}
