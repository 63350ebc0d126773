//! `config.toml`: one commented TOML file per node.

use std::path::{Path, PathBuf};

use cairn_proto::units::parse_size;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The node's configuration. Every field but `data_dir` has a default.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where shards, metadata and the identity key live.
    pub data_dir: PathBuf,
    /// Peer-to-peer listen addresses (libp2p multiaddrs). QUIC first, TCP
    /// as fallback for networks that block UDP.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Peers to join the network through (`…/p2p/<peer id>`).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Most bytes of shard data to keep (`100GiB`).
    #[serde(default = "default_capacity")]
    pub capacity: String,
    /// Largest single shard accepted (`64MiB`): a 16 MiB segment with k = 1
    /// fits, with room to spare.
    #[serde(default = "default_max_shard")]
    pub max_shard_size: String,
    /// Admin HTTP listener: `/health`, `/metrics`, dashboard. Keep it on
    /// loopback unless a firewall protects it.
    #[serde(default = "default_admin")]
    pub admin_listen: String,
    /// Write shard bodies with direct I/O (`O_DIRECT`) where the file
    /// system supports it: no copy through the page cache, which keeps
    /// memory for other work and measured faster (docs/BENCHMARKS.md).
    #[serde(default = "default_direct_io")]
    pub direct_io: bool,
    /// Shards up to this size (`128KiB`) are kept in the node's database
    /// beside their metadata rather than in files of their own: index
    /// pages and the shards of small objects. `0`: every shard in a file.
    #[serde(default = "default_small_shard")]
    pub small_shard_size: String,
    /// The region this node is in (`eu-west`): clients keep buckets
    /// inside regions and spread segments over them. Lowercase letters,
    /// digits, `-` and `_`; empty for none.
    #[serde(default)]
    pub region: String,
    /// The zone within the region (a site or a rack), empty for none.
    #[serde(default)]
    pub zone: String,
    /// A private network's key file (libp2p pnet): only peers with the
    /// same key can connect, over TCP. Empty: the public network.
    #[serde(default)]
    pub network_key_file: String,
    /// Per-peer and global limits.
    #[serde(default)]
    pub limits: Limits,
    /// How long shards are kept unless renewed.
    #[serde(default)]
    pub leases: Leases,
}

/// Lease policy: every shard is kept until its lease ends, and its owner
/// renews it while something references it. A shard nothing renews (an
/// abandoned upload, a deleted object whose delete never arrived) is
/// collected when its lease ends.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Leases {
    /// Longest lease granted, in seconds; longer requests are cut to it.
    pub max_lease_secs: u64,
    /// Seconds between two sweeps that collect expired shards.
    pub collect_interval_secs: u64,
}

/// 400 days: a client that renews once a year (the default lease is 365
/// days) never loses a shard to this cap.
pub const DEFAULT_MAX_LEASE_SECS: u64 = 400 * 24 * 3600;

impl Default for Leases {
    fn default() -> Self {
        Self { max_lease_secs: DEFAULT_MAX_LEASE_SECS, collect_interval_secs: 60 }
    }
}

/// Limits on what peers may ask of this node.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Streams one peer may have open at once. A peer id is a device:
    /// its CLI calls, gateway and mount share this (32 concurrent `cairn
    /// put`s to one node take about 64).
    pub max_streams_per_peer: usize,
    /// Streams all peers together may have open at once; bounds memory and
    /// file handles.
    pub max_streams: usize,
    /// Sustained requests per second from one peer (burst: twice as many).
    pub requests_per_second_per_peer: u32,
    /// Seconds a peer may take to send a request header, or between two
    /// chunks of a body, before the stream is dropped.
    pub idle_timeout_secs: u64,
    /// Head records one peer may create (records the node did not hold)
    /// per hour; updates of records held are not counted.
    pub new_records_per_peer_per_hour: u32,
    /// Head records the node holds at most (each at most ~33 KiB:
    /// `MAX_HEAD_RECORD_SIZE`, so 200 000 take at most ~6.6 GB).
    pub max_records: usize,
    /// Sustained MiB per second of shard bodies one peer may send or fetch
    /// (bursts of a few seconds' worth, at least one largest shard, pass);
    /// 0: no limit.
    pub mib_per_second_per_peer: u64,
    /// Seconds any request may take in total, plus the time its body
    /// takes at `min_kib_per_second`; a stream past it is dropped (no
    /// slowloris).
    pub request_deadline_secs: u64,
    /// The slowest body transfer a request's deadline allows for.
    pub min_kib_per_second: u64,
    /// Inbound connections one IP address may have open; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Count loopback addresses too (they are exempt by default, so that a
    /// devnet on one machine works).
    pub limit_loopback: bool,
    /// MiB of shards one uploading peer may store on this node; 0: no
    /// limit (peer ids are free: this bounds a careless client more than
    /// a determined one).
    pub max_mib_per_peer: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_streams_per_peer: 64,
            max_streams: 256,
            requests_per_second_per_peer: 500,
            idle_timeout_secs: 20,
            new_records_per_peer_per_hour: 1000,
            max_records: 200_000,
            mib_per_second_per_peer: 256,
            request_deadline_secs: 60,
            min_kib_per_second: 256,
            max_connections_per_ip: 64,
            limit_loopback: false,
            max_mib_per_peer: 0,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/udp/4001/quic-v1".into(), "/ip4/0.0.0.0/tcp/4001".into()]
}
fn default_capacity() -> String {
    "100GiB".into()
}
fn default_max_shard() -> String {
    "64MiB".into()
}
fn default_direct_io() -> bool {
    true
}
fn default_small_shard() -> String {
    "128KiB".into()
}
fn default_admin() -> String {
    "127.0.0.1:9101".into()
}

impl NodeConfig {
    /// Defaults for a node in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: default_listen(),
            bootstrap: Vec::new(),
            capacity: default_capacity(),
            max_shard_size: default_max_shard(),
            admin_listen: default_admin(),
            direct_io: default_direct_io(),
            small_shard_size: default_small_shard(),
            region: String::new(),
            zone: String::new(),
            network_key_file: String::new(),
            limits: Limits::default(),
            leases: Leases::default(),
        }
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let cfg: Self =
            toml::from_str(&text).map_err(|e| Error::Config { path: path.into(), reason: e.to_string() })?;
        cfg.check(path)?;
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::Config { path: path.into(), reason });
        if let Err(e) = self.capacity_bytes() {
            return bad(format!("capacity: {e}"));
        }
        if let Err(e) = self.max_shard_bytes() {
            return bad(format!("max_shard_size: {e}"));
        }
        if let Err(e) = self.small_shard_bytes() {
            return bad(format!("small_shard_size: {e}"));
        }
        for a in self.listen.iter().chain(&self.bootstrap) {
            if a.parse::<cairn_net::Multiaddr>().is_err() {
                return bad(format!("`{a}` is not a multiaddr; write e.g. /ip4/0.0.0.0/udp/4001/quic-v1"));
            }
        }
        for (what, name) in [("region", &self.region), ("zone", &self.zone)] {
            if let Err(e) = cairn_proto::profile::check_name(name) {
                return bad(format!("{what}: {e}"));
            }
        }
        if self.admin_listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!("admin_listen `{}` is not an address like 127.0.0.1:9101", self.admin_listen));
        }
        let l = &self.limits;
        if l.max_streams == 0
            || l.max_streams_per_peer == 0
            || l.request_deadline_secs == 0
            || l.min_kib_per_second == 0
        {
            return bad(
                "limits: max_streams, max_streams_per_peer, request_deadline_secs and min_kib_per_second must be at least 1"
                    .into(),
            );
        }
        if self.leases.max_lease_secs == 0 || self.leases.collect_interval_secs == 0 {
            return bad("leases: max_lease_secs and collect_interval_secs must be at least 1".into());
        }
        Ok(())
    }

    /// `capacity` in bytes.
    pub fn capacity_bytes(&self) -> Result<u64, String> {
        parse_size(&self.capacity)
    }

    /// [`Self::small_shard_size`] in bytes; at most 1 MiB (a RocksDB value
    /// is read whole).
    pub fn small_shard_bytes(&self) -> Result<u64, String> {
        let n = parse_size(&self.small_shard_size)?;
        if n > 1 << 20 {
            return Err("at most 1MiB: larger shards are better in files".into());
        }
        Ok(n)
    }

    /// `max_shard_size` in bytes, capped by the protocol's maximum.
    pub fn max_shard_bytes(&self) -> Result<u64, String> {
        let n = parse_size(&self.max_shard_size)?;
        if n > cairn_proto::shard::MAX_SHARD_SIZE {
            return Err(format!("at most {} bytes", cairn_proto::shard::MAX_SHARD_SIZE));
        }
        Ok(n)
    }

    /// The config as a commented TOML file.
    pub fn to_commented_toml(&self) -> String {
        let list = |v: &[String]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        let l = &self.limits;
        format!(
            r#"# cairn-node configuration. See docs/OPERATOR.md for every key.

# Where shards, their metadata (RocksDB) and this node's identity key live.
data_dir = "{data_dir}"

# Peer-to-peer listen addresses. QUIC (UDP) first; TCP for networks that block UDP.
listen = [{listen}]

# Peers to join the network through, each ending in /p2p/<peer id>.
bootstrap = [{bootstrap}]

# Most bytes of shard data this node keeps. Puts beyond it are refused, nothing is evicted.
capacity = "{capacity}"

# The region and zone this node is in (lowercase, digits, - and _; empty for
# none). Clients keep buckets inside regions and spread segments over them;
# the node signs what it declares.
region = "{region}"
zone = "{zone}"

# A private network's key file (`cairn-node keygen`): only peers with the same
# key can connect, over TCP only (no QUIC). Empty: the public network.
network_key_file = "{network_key}"

# Largest single shard accepted.
max_shard_size = "{max_shard}"

# Admin HTTP: /health, /metrics (Prometheus) and a dashboard at /. Keep it on loopback.
admin_listen = "{admin}"

# Write shard bodies with direct I/O (O_DIRECT) where the file system allows it.
direct_io = {direct_io}

# Shards up to this size (index pages, small objects' shards) are kept in the
# node's database beside their metadata, not in files of their own. "0": all in files.
small_shard_size = "{small_shard}"

[limits]
# Streams one peer may have open at once, and all peers together.
max_streams_per_peer = {per_peer}
max_streams = {streams}
# Sustained requests per second from one peer (bursts of twice as many pass).
requests_per_second_per_peer = {rps}
# Seconds a peer may stay silent mid-request before its stream is dropped.
idle_timeout_secs = {idle}
# Head records one peer may create per hour, and the most this node holds.
new_records_per_peer_per_hour = {new_records}
max_records = {max_records}
# Sustained MiB/s of shard bodies one peer may send or fetch (0: no limit).
mib_per_second_per_peer = {mibps}
# A request may take this many seconds, plus its body's time at min_kib_per_second.
request_deadline_secs = {deadline}
min_kib_per_second = {min_kibps}
# Inbound connections one IP address may have open (0: no limit); loopback
# is exempt unless limit_loopback = true.
max_connections_per_ip = {per_ip}
limit_loopback = {loopback}
# MiB of shards one uploading peer may store here (0: no limit).
max_mib_per_peer = {per_peer_mib}

[leases]
# Longest lease granted, in seconds (clients renew what they still use;
# what nobody renews is collected when its lease ends).
max_lease_secs = {max_lease}
# Seconds between two sweeps that collect expired shards.
collect_interval_secs = {collect}
"#,
            data_dir = self.data_dir.display(),
            listen = list(&self.listen),
            bootstrap = list(&self.bootstrap),
            capacity = self.capacity,
            max_shard = self.max_shard_size,
            region = self.region,
            zone = self.zone,
            network_key = self.network_key_file,
            admin = self.admin_listen,
            direct_io = self.direct_io,
            small_shard = self.small_shard_size,
            per_peer = l.max_streams_per_peer,
            streams = l.max_streams,
            rps = l.requests_per_second_per_peer,
            idle = l.idle_timeout_secs,
            new_records = l.new_records_per_peer_per_hour,
            max_records = l.max_records,
            mibps = l.mib_per_second_per_peer,
            deadline = l.request_deadline_secs,
            min_kibps = l.min_kib_per_second,
            per_ip = l.max_connections_per_ip,
            loopback = l.limit_loopback,
            per_peer_mib = l.max_mib_per_peer,
            max_lease = self.leases.max_lease_secs,
            collect = self.leases.collect_interval_secs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_file_round_trips() {
        let mut c = NodeConfig::new("/tmp/x".into());
        c.bootstrap =
            vec!["/ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()];
        let parsed: NodeConfig = toml::from_str(&c.to_commented_toml()).expect("parse");
        assert_eq!(parsed, c);
        assert!(parsed.check(Path::new("x")).is_ok());
    }

    #[test]
    fn bad_values_are_explained() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "data_dir = \"/x\"\ncapacity = \"lots\"\n").expect("write");
        let err = NodeConfig::load(&path).expect_err("bad");
        assert!(err.to_string().contains("capacity"), "{err}");
        std::fs::write(&path, "data_dir = \"/x\"\ncapacty = \"1GiB\"\n").expect("write");
        assert!(NodeConfig::load(&path).expect_err("typo").to_string().contains("capacty"));
    }
}
