//! Network namespaces a test makes for itself: "sites" on one machine,
//! each with its own address on a bridge, which the test can slow down
//! (`tc tbf`) or cut off (its link down). Everything is removed on drop.
//! Needs root and iproute2; [`Bridge::create`] says why when it cannot.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A bridge in the host namespace, `10.<net>.0.1/16`, that sites attach to.
#[derive(Debug)]
pub struct Bridge {
    name: String,
    net: u8,
    sites: u8,
}

/// One namespace on a bridge, with one address.
#[derive(Debug)]
pub struct Site {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// Its address (`10.<net>.<i>.2`).
    pub ip: String,
    host_if: String,
    ns_if: String,
}

impl Bridge {
    /// A new bridge, or why there cannot be one (not root, no iproute2, no
    /// namespaces): tests skip with that message.
    pub fn create() -> Result<Self, String> {
        // Only root may make namespaces.
        let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("network namespaces need root".into());
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = (std::process::id() % 10_000) * 10 + n % 10;
        let net = 100 + (tag % 100) as u8;
        let name = format!("cb{tag}");
        ip(&["link", "add", &name, "type", "bridge"])?;
        let b = Self { name, net, sites: 0 };
        ip(&["addr", "add", &format!("10.{}.0.1/16", b.net), "dev", &b.name])?;
        ip(&["link", "set", &b.name, "up"])?;
        Ok(b)
    }

    /// The host's address on the bridge.
    pub fn host_ip(&self) -> String {
        format!("10.{}.0.1", self.net)
    }

    /// A new namespace attached to the bridge.
    pub fn site(&mut self) -> Result<Site, String> {
        self.sites += 1;
        let i = self.sites;
        let ns = format!("{}s{i}", self.name);
        let host_if = format!("{}h{i}", self.name);
        let ns_if = format!("{}n{i}", self.name);
        let ip_addr = format!("10.{}.{i}.2", self.net);
        ip(&["netns", "add", &ns])?;
        let site = Site { ns: ns.clone(), ip: ip_addr.clone(), host_if: host_if.clone(), ns_if: ns_if.clone() };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        ip(&["link", "set", &ns_if, "netns", &ns])?;
        ip(&["link", "set", &host_if, "master", &self.name])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{ip_addr}/16"), "dev", &ns_if])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        ip(&["netns", "exec", &ns, "ip", "route", "add", "default", "via", &self.host_ip()])?;
        Ok(site)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.name]);
    }
}

impl Site {
    /// The command prefix that runs a program inside the namespace.
    pub fn exec(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns.clone()]
    }

    /// Limits what leaves the site to `rate` (`tc tbf`, e.g. `8mbit`):
    /// everything it sends queues behind it.
    pub fn limit(&self, rate: &str) -> Result<(), String> {
        let dev = &self.ns_if;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate])
            .args(["burst", "32kb", "latency", "2s"])
            .output()
            .map_err(|e| format!("tc: {e}"))?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
    }

    /// Cuts the site off (its link down): nothing reaches it or leaves it.
    pub fn cut(&self) {
        let _ = ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Connects the site again.
    pub fn restore(&self) {
        let _ = ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
