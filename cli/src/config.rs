//! The client's config file (TOML) and key file, and where they are found:
//! `--config`, else `CAIRN_CONFIG`, else `$XDG_CONFIG_HOME/cairn/config.toml`
//! (`~/.config/cairn/config.toml`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_client::{BucketSettings, ClientConfig};
use cairn_crypto::{KdfParams, RootSecret, keyfile};
use serde::{Deserialize, Serialize};

/// The device identity's file name beside the config, by default.
pub const IDENTITY_FILE: &str = "identity.key";

/// The parsed config file. Relative paths are relative to its directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The key file.
    pub key_file: PathBuf,
    /// The local cache directory.
    pub cache_dir: PathBuf,
    /// Storage nodes to join through.
    pub bootstrap: Vec<String>,
    /// Settings of new buckets.
    #[serde(default)]
    pub defaults: Defaults,
    /// A private network's key file: only nodes with the same key are reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_key_file: Option<PathBuf>,
    /// This device's peer identity, which nodes count its usage against
    /// (created on first use; default `identity.key` beside the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// How long `cairn agent` waits for the next command before it ends
    /// (`90s`, `5m`, `1h`; `off`: every command joins the network itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_idle: Option<String>,
}

/// Settings of new buckets.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Shards needed to read.
    pub k: u16,
    /// Shards stored.
    pub n: u16,
    /// Extra shards uploaded, the slowest cancelled.
    pub extra: u16,
    /// Segment size, e.g. "16MiB".
    pub segment_size: String,
    /// Days a shard is leased for.
    pub lease_days: u64,
}

impl Default for Defaults {
    fn default() -> Self {
        let s = BucketSettings::default();
        Self { k: s.k, n: s.n, extra: s.extra, segment_size: "16MiB".into(), lease_days: 365 }
    }
}

/// How long the agent waits for a command unless the config says otherwise.
pub const DEFAULT_AGENT_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Where the config is: the flag, then `CAIRN_CONFIG`, then the platform default.
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os("CAIRN_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("cairn").join("config.toml")
}

fn template(cfg: &ConfigFile) -> anyhow::Result<String> {
    let body = toml::to_string(cfg)?;
    Ok(format!(
        "# Cairn client configuration.\n\
         # key_file: your key. Whoever has it (and its passphrase) can read all your data;\n\
         #   without it nobody can, including you. Keep a copy somewhere safe.\n\
         # cache_dir: local cache of index pages and known nodes (safe to delete);\n\
         #   while one process holds it (a gateway, a mount), others use cache_dir.1 to .3.\n\
         # bootstrap: storage nodes to join through, each ending in /p2p/<peer id>.\n\
         # identity.key (beside this file, or identity_file): this device's peer id,\n\
         #   created on first use; nodes count your usage against it.\n\
         # agent_idle: object commands (put, get, ls, ...) are run by `cairn agent`, a\n\
         #   background process that stays joined to the network and ends after this\n\
         #   long without a command (default 5m; \"off\": each command joins itself).\n\
         # [defaults]: how new buckets store objects: any k of n shards read a\n\
         #   segment; `extra` more are uploaded and the slowest cancelled.\n\n{body}"
    ))
}

impl ConfigFile {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the config {}; create one with `cairn init` or pass --config", path.display())
        })?;
        toml::from_str(&text).with_context(|| format!("the config {} is not valid", path.display()))
    }

    /// Writes the config with comments.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, template(self)?).with_context(|| format!("cannot write {}", path.display()))
    }

    fn resolve(&self, path: &Path, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { path.parent().unwrap_or(Path::new(".")).join(p) }
    }

    /// The cache directory's path.
    pub fn cache_path(&self, path: &Path) -> PathBuf {
        self.resolve(path, &self.cache_dir)
    }

    /// The key file's path.
    pub fn key_path(&self, path: &Path) -> PathBuf {
        self.resolve(path, &self.key_file)
    }

    /// This device's identity file.
    pub fn identity_path(&self, path: &Path) -> PathBuf {
        self.resolve(path, self.identity_file.as_deref().unwrap_or(Path::new(IDENTITY_FILE)))
    }

    /// How long the agent waits for a command before it ends; `None`: no agent.
    pub fn agent_idle(&self) -> anyhow::Result<Option<std::time::Duration>> {
        match self.agent_idle.as_deref().map(str::trim) {
            None => Ok(Some(DEFAULT_AGENT_IDLE)),
            Some("off" | "0" | "no" | "false") => Ok(None),
            Some(s) => Ok(Some(parse_interval(s).context("agent_idle")?)),
        }
    }

    /// The client settings this file describes.
    pub fn client_config(&self, path: &Path) -> anyhow::Result<ClientConfig> {
        let bootstrap = self
            .bootstrap
            .iter()
            .map(|a| a.parse().with_context(|| format!("bootstrap address {a:?} in {} is not valid", path.display())))
            .collect::<anyhow::Result<_>>()?;
        let segment = cairn_proto::units::parse_size(&self.defaults.segment_size)
            .map_err(|e| anyhow::anyhow!("segment_size in {}: {e}", path.display()))?;
        let defaults = BucketSettings {
            k: self.defaults.k,
            n: self.defaults.n,
            extra: self.defaults.extra,
            segment_size: u32::try_from(segment).context("segment_size is too large")?,
        };
        defaults.layout().with_context(|| format!("[defaults] in {} are not valid", path.display()))?;
        Ok(ClientConfig {
            bootstrap,
            cache_dir: Some(self.cache_path(path)),
            defaults,
            lease_secs: self.defaults.lease_days.saturating_mul(24 * 3600),
            network_key: match &self.network_key_file {
                Some(f) => Some(cairn_net::network_key::read(&self.resolve(path, f))?),
                None => None,
            },
            identity: Some(cairn_net::identity_file::load_or_create(&self.identity_path(path))?),
            ..ClientConfig::default()
        })
    }
}

/// The passphrase from `CAIRN_PASSPHRASE`, else a prompt on the terminal.
fn passphrase(prompt: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("CAIRN_PASSPHRASE") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("the key file is protected by a passphrase: set CAIRN_PASSPHRASE or run from a terminal");
    }
    Ok(rpassword::prompt_password(prompt)?)
}

/// Opens the key file, asking for its passphrase if it has one.
pub fn open_key(path: &Path) -> anyhow::Result<RootSecret> {
    let sealed = keyfile::is_sealed(path).with_context(|| format!("cannot read the key file {}", path.display()))?;
    let pass = if sealed { Some(passphrase("Passphrase for your Cairn key: ")?) } else { None };
    keyfile::open(path, pass.as_deref()).with_context(|| format!("cannot open the key file {}", path.display()))
}

/// Creates a new key file; asks for a passphrase unless `no_passphrase`.
pub fn create_key(path: &Path, no_passphrase: bool, params: KdfParams) -> anyhow::Result<()> {
    if path.exists() {
        bail!("{} exists already; refusing to overwrite a key (move it away first)", path.display());
    }
    let pass = if no_passphrase {
        None
    } else {
        let p = passphrase("New passphrase for your Cairn key: ")?;
        if std::env::var("CAIRN_PASSPHRASE").is_err() && p != passphrase("Repeat it: ")? {
            bail!("the passphrases differ");
        }
        if p.is_empty() {
            bail!("an empty passphrase protects nothing; use --no-passphrase if you mean it");
        }
        Some(p)
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    keyfile::create(path, &RootSecret::generate(), pass.as_deref(), params)
        .with_context(|| format!("cannot write the key file {}", path.display()))
}

/// Intervals (`--watch`, `agent_idle`): `90s`, `10m`, `1h`, `1d` (a bare number is seconds).
pub fn parse_interval(s: &str) -> anyhow::Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("`{s}` is not an interval like 90s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("`{s}` is not an interval like 90s, 10m, 1h"),
    };
    if secs == 0 {
        bail!("an interval must be at least 1 s");
    }
    Ok(std::time::Duration::from_secs(secs))
}
