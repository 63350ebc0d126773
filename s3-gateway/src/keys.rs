//! Access keys of the gateway: a TOML file (mode 0600) next to the
//! client config, managed with `cairn gateway keys`. The gateway reads it
//! again when it changes, so keys added or revoked take effect at once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rand::Rng;
use s3s::auth::{Credentials, S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One access key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// A name for people (`cairn gateway keys revoke NAME`).
    pub name: String,
    /// The access key id clients send.
    pub access_key: String,
    /// The secret clients sign with.
    pub secret: String,
    /// Only reads (GET and HEAD) are allowed.
    #[serde(default)]
    pub read_only: bool,
    /// Only this bucket is reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    key: Vec<AccessKey>,
}

/// Reads the keys in `path` (none if it does not exist).
pub fn load(path: &Path) -> Result<Vec<AccessKey>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(toml::from_str::<File>(&text).map_err(|source| Error::KeysFormat { path: path.into(), source })?.key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::KeysFile { path: path.into(), source }),
    }
}

/// Writes `keys` to `path`, readable by the owner only, atomically.
pub fn save(path: &Path, keys: &[AccessKey]) -> Result<(), Error> {
    let io = |source| Error::KeysFile { path: path.into(), source };
    let text = toml::to_string(&File { key: keys.to_vec() }).map_err(|e| io(std::io::Error::other(e)))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect()
}

/// Adds a key named `name` to the file; returns it (with its secret).
pub fn add(path: &Path, name: &str, read_only: bool, bucket: Option<String>) -> Result<AccessKey, Error> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err(Error::BadKeyName(name.into()));
    }
    let mut keys = load(path)?;
    if keys.iter().any(|k| k.name == name) {
        return Err(Error::KeyExists(name.into()));
    }
    let key = AccessKey {
        name: name.into(),
        access_key: format!("CK{}", random_string(18, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
        secret: random_string(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
        read_only,
        bucket,
    };
    keys.push(key.clone());
    save(path, &keys)?;
    Ok(key)
}

/// Removes the key named `name`.
pub fn revoke(path: &Path, name: &str) -> Result<(), Error> {
    let mut keys = load(path)?;
    let before = keys.len();
    keys.retain(|k| k.name != name);
    if keys.len() == before {
        return Err(Error::NoSuchKey(name.into()));
    }
    save(path, &keys)
}

/// The keys a running gateway accepts, read again when the file changes.
#[derive(Debug)]
pub struct Keys {
    path: Option<PathBuf>,
    state: Mutex<(Option<SystemTime>, Vec<AccessKey>)>,
}

impl Keys {
    /// Keys from `path`, followed as it changes.
    pub fn from_file(path: PathBuf) -> Result<Self, Error> {
        let keys = load(&path)?;
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(Self { path: Some(path), state: Mutex::new((mtime, keys)) })
    }

    /// A fixed set of keys (tests, benchmarks).
    pub fn fixed(keys: Vec<AccessKey>) -> Self {
        Self { path: None, state: Mutex::new((None, keys)) }
    }

    /// The key with access key id `id`, reading the file again if it
    /// changed.
    pub fn find(&self, id: &str) -> Option<AccessKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if mtime != state.0 {
                match load(path) {
                    Ok(keys) => *state = (mtime, keys),
                    Err(e) => tracing::warn!(error = %e, "keys file changed but cannot be read; keeping the old keys"),
                }
            }
        }
        state.1.iter().find(|k| k.access_key == id).cloned()
    }

    /// Whether `creds` may reach `bucket` (None: the bucket list), and
    /// write to it.
    pub fn check(&self, creds: Option<&Credentials>, bucket: Option<&str>, write: bool) -> S3Result<AccessKey> {
        let Some(c) = creds else { return Err(s3_error!(AccessDenied, "a signed request is required")) };
        let Some(key) = self.find(&c.access_key) else { return Err(s3_error!(InvalidAccessKeyId)) };
        if write && key.read_only {
            return Err(s3_error!(AccessDenied, "this access key is read-only"));
        }
        if let (Some(only), Some(b)) = (&key.bucket, bucket)
            && only != b
        {
            return Err(s3_error!(AccessDenied, "this access key is limited to another bucket"));
        }
        if write && bucket.is_none() && key.bucket.is_some() {
            return Err(s3_error!(AccessDenied, "this access key is limited to one bucket"));
        }
        Ok(key)
    }
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.find(access_key) {
            Some(k) => Ok(SecretKey::from(k.secret)),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_added_listed_revoked_and_kept_private() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys.toml");
        let a = add(&path, "alice", false, None).expect("add");
        let b = add(&path, "bob", true, Some("photos".into())).expect("add");
        assert!(matches!(add(&path, "alice", false, None), Err(Error::KeyExists(_))));
        assert!(matches!(add(&path, "no/slash", false, None), Err(Error::BadKeyName(_))));
        assert_eq!(load(&path).expect("load"), vec![a.clone(), b.clone()]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let keys = Keys::from_file(path.clone()).expect("keys");
        let creds =
            |k: &AccessKey| Credentials { access_key: k.access_key.clone(), secret_key: k.secret.clone().into() };
        assert!(keys.check(Some(&creds(&a)), Some("any"), true).is_ok());
        assert!(keys.check(Some(&creds(&b)), Some("photos"), false).is_ok());
        assert!(keys.check(Some(&creds(&b)), Some("photos"), true).is_err());
        assert!(keys.check(Some(&creds(&b)), Some("other"), false).is_err());
        assert!(keys.check(None, Some("photos"), false).is_err());
        revoke(&path, "alice").expect("revoke");
        assert!(matches!(revoke(&path, "alice"), Err(Error::NoSuchKey(_))));
        // Some filesystems keep mtime in whole seconds: make the change seen.
        let f = std::fs::File::options().write(true).open(&path).expect("open");
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5)).expect("touch");
        assert!(keys.find(&a.access_key).is_none(), "a revoked key is refused by a running gateway");
    }
}
