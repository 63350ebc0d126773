//! The key file: the root secret on disk, mode 0600, optionally sealed
//! with a key from Argon2id(passphrase).
//!
//! ```text
//! plain:  "CAIRNKEY" ‖ 0x01 ‖ 0x00 ‖ root (32)                                   ‖ checksum (32)
//! sealed: "CAIRNKEY" ‖ 0x01 ‖ 0x01 ‖ m_cost ‖ t_cost ‖ p_cost (u32 LE each)
//!         ‖ salt (16) ‖ nonce (24) ‖ XChaCha20-Poly1305(root) (48)               ‖ checksum (32)
//! checksum = BLAKE3 of everything before it
//! ```
//!
//! The checksum tells a damaged file from a wrong passphrase. The sealed
//! root's associated data is the header, so tampering with the Argon2
//! parameters fails too. Changing the passphrase rewrites this file only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::keys::{RootSecret, random_bytes};

const MAGIC: &[u8; 8] = b"CAIRNKEY";
const FORMAT_V1: u8 = 1;
const KIND_PLAIN: u8 = 0;
const KIND_SEALED: u8 = 1;
const HEADER_LEN: usize = 10;
const CHECKSUM_LEN: usize = 32;
const SEALED_PARAMS_LEN: usize = 12 + 16 + 24;
const SEALED_ROOT_LEN: usize = 32 + 16;

/// Argon2id cost parameters, stored in the key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommendation (64 MiB, 3 passes), one lane: about
    /// a quarter of a second here, paid once per `cairn` start.
    fn default() -> Self {
        Self { m_cost: 64 * 1024, t_cost: 3, p_cost: 1 }
    }
}

impl KdfParams {
    /// Tiny parameters for tests only: fast and worthless against guessing.
    pub fn insecure_for_tests() -> Self {
        Self { m_cost: 64, t_cost: 1, p_cost: 1 }
    }

    /// Refuses parameters that a damaged or hostile file could use to make
    /// us allocate gigabytes or spin for hours.
    fn check(&self, path: &Path) -> Result<Params, Error> {
        let out_of_range = || Error::KdfParams {
            path: path.to_owned(),
            m_cost: self.m_cost,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        };
        if self.m_cost > 4 * 1024 * 1024 || self.t_cost > 64 || self.p_cost > 16 {
            return Err(out_of_range());
        }
        Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32)).map_err(|_| out_of_range())
    }
}

fn derive_wrapping_key(
    path: &Path,
    passphrase: &str,
    salt: &[u8; 16],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.check(path)?);
    let mut key = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase.as_bytes(), salt, &mut key[..]).map_err(|_| Error::KdfParams {
        path: path.to_owned(),
        m_cost: params.m_cost,
        t_cost: params.t_cost,
        p_cost: params.p_cost,
    })?;
    Ok(key)
}

fn encode(
    path: &Path,
    root: &RootSecret,
    passphrase: Option<&str>,
    params: KdfParams,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut out = Zeroizing::new(Vec::with_capacity(160));
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_V1);
    match passphrase {
        None => {
            out.push(KIND_PLAIN);
            out.extend_from_slice(root.as_bytes());
        }
        Some(pass) => {
            out.push(KIND_SEALED);
            out.extend_from_slice(&params.m_cost.to_le_bytes());
            out.extend_from_slice(&params.t_cost.to_le_bytes());
            out.extend_from_slice(&params.p_cost.to_le_bytes());
            let mut salt = [0u8; 16];
            random_bytes(&mut salt);
            let mut nonce = [0u8; 24];
            random_bytes(&mut nonce);
            out.extend_from_slice(&salt);
            out.extend_from_slice(&nonce);
            let key = derive_wrapping_key(path, pass, &salt, params)?;
            let aead = XChaCha20Poly1305::new(&(*key).into());
            let sealed = aead
                .encrypt(XNonce::from_slice(&nonce), Payload { msg: root.as_bytes(), aad: &out[..] })
                .unwrap_or_default();
            out.extend_from_slice(&sealed);
        }
    }
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    Ok(out)
}

fn decode(path: &Path, bytes: &[u8], passphrase: Option<&str>) -> Result<RootSecret, Error> {
    let corrupt = |reason| Error::CorruptKeyFile { path: path.to_owned(), reason };
    let (body, checksum) =
        bytes.split_at_checked(bytes.len().saturating_sub(CHECKSUM_LEN)).ok_or_else(|| corrupt("too short"))?;
    if body.len() < HEADER_LEN || &body[..8] != MAGIC {
        return Err(corrupt("not a Cairn key file"));
    }
    if body[8] != FORMAT_V1 {
        return Err(Error::UnsupportedKeyFile { path: path.to_owned(), version: body[8] });
    }
    if blake3::hash(body).as_bytes() != checksum {
        return Err(corrupt("checksum mismatch"));
    }
    let rest = &body[HEADER_LEN..];
    match body[9] {
        KIND_PLAIN => {
            let root: [u8; 32] = rest.try_into().map_err(|_| corrupt("wrong length"))?;
            Ok(RootSecret::from_bytes(root))
        }
        KIND_SEALED => {
            if rest.len() != SEALED_PARAMS_LEN + SEALED_ROOT_LEN {
                return Err(corrupt("wrong length"));
            }
            let pass = passphrase.ok_or_else(|| Error::PassphraseRequired { path: path.to_owned() })?;
            let u32_at = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
            let params = KdfParams { m_cost: u32_at(0), t_cost: u32_at(4), p_cost: u32_at(8) };
            let salt: [u8; 16] = rest[12..28].try_into().map_err(|_| corrupt("wrong length"))?;
            let nonce = &rest[28..52];
            let key = derive_wrapping_key(path, pass, &salt, params)?;
            let aead = XChaCha20Poly1305::new(&(*key).into());
            let header = &body[..HEADER_LEN + SEALED_PARAMS_LEN];
            let root = Zeroizing::new(
                aead.decrypt(XNonce::from_slice(nonce), Payload { msg: &rest[52..], aad: header })
                    .map_err(|_| Error::WrongPassphrase { path: path.to_owned() })?,
            );
            let root: [u8; 32] = root[..].try_into().map_err(|_| corrupt("wrong length"))?;
            Ok(RootSecret::from_bytes(root))
        }
        _ => Err(corrupt("unknown kind")),
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// Writes `bytes` to a fresh temporary file (mode 0600) next to `path`,
/// synced, and returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, Error> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut nonce = [0u8; 8];
    random_bytes(&mut nonce);
    let name =
        format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("key"), u64::from_le_bytes(nonce));
    let tmp = dir.join(name);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io_err(&tmp))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    Ok(tmp)
}

/// Creates a key file holding `root` at `path`, sealed when `passphrase` is
/// given. Never overwrites an existing file; the file appears whole or not
/// at all.
pub fn create(path: &Path, root: &RootSecret, passphrase: Option<&str>, params: KdfParams) -> Result<(), Error> {
    if path.exists() {
        return Err(Error::KeyFileExists { path: path.to_owned() });
    }
    let bytes = encode(path, root, passphrase, params)?;
    let tmp = write_temp(path, &bytes)?;
    // link() refuses to replace an existing file, unlike rename().
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::KeyFileExists { path: path.to_owned() }),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Opens the key file at `path`. Refuses a file readable by group or others,
/// a damaged file, and a wrong passphrase, each with its own error.
pub fn open(path: &Path, passphrase: Option<&str>) -> Result<RootSecret, Error> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions { path: path.to_owned(), mode });
    }
    if meta.len() > 4096 {
        return Err(Error::CorruptKeyFile { path: path.to_owned(), reason: "far too large" });
    }
    let bytes = Zeroizing::new(fs::read(path).map_err(io_err(path))?);
    decode(path, &bytes, passphrase)
}

/// Whether the key file at `path` is sealed with a passphrase.
pub fn is_sealed(path: &Path) -> Result<bool, Error> {
    use std::io::Read;
    let mut header = [0u8; HEADER_LEN];
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    match f.read_exact(&mut header) {
        Ok(()) => Ok(header[9] == KIND_SEALED),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(Error::CorruptKeyFile { path: path.to_owned(), reason: "too short" })
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Replaces the passphrase (or adds or removes one) without changing the
/// root secret. A wrong `old` passphrase leaves the file untouched.
pub fn change_passphrase(path: &Path, old: Option<&str>, new: Option<&str>, params: KdfParams) -> Result<(), Error> {
    let root = open(path, old)?;
    let bytes = encode(path, &root, new, params)?;
    let tmp = write_temp(path, &bytes)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path)(e)
    })
}
