//! The outbound guard: which addresses `call: http` and `call: openapi` may reach.
//!
//! A workflow definition chooses the URIs it calls, so whoever may deploy or start one could
//! otherwise make the runtime reach what only the runtime's host can: loopback services, the
//! store's database, the cloud metadata endpoint, the private network (server-side request
//! forgery). With the guard on, every address a request would connect to is checked against
//! the ranges in [`denied_range`] unless an [`AllowList`] entry lets it through:
//!
//! - host names are resolved by [`GuardedResolver`], which drops denied addresses, so the
//!   connection goes to exactly the addresses that were checked (no second lookup for a
//!   rebinding DNS server to answer differently);
//! - IP literals never reach a resolver (reqwest connects to them directly), so
//!   [`Guard::check_url`] checks them before a request is sent, and the redirect policy of
//!   [`Guard::redirect_policy`] checks every hop the same way;
//! - odd IPv4 notations (`2130706433`, `0x7f.1`, `017700000001`, `127.1`) are normalised by the
//!   URL parser (WHATWG rules) before they are seen here, and IPv6 forms that carry an IPv4
//!   address (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by
//!   the IPv4 address they carry;
//! - proxies from the environment (`HTTP_PROXY`, ...) are ignored while the guard is on: the
//!   connection would go to the proxy, which would resolve and reach the target unchecked.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::Policy;
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// A range of addresses the guard denies, with the name an error shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeniedRange {
    /// The range, as a CIDR.
    pub net: IpNet,
    /// What the range is (`loopback`, `private`, `cloud metadata`, ...).
    pub name: &'static str,
}

impl fmt::Display for DeniedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.net)
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, name: &'static str) -> (Ipv4Net, &'static str) {
    (Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len), name)
}

const fn v6(segments: [u16; 8], len: u8, name: &'static str) -> (Ipv6Net, &'static str) {
    let [a, b, c, d, e, f, g, h] = segments;
    (
        Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len),
        name,
    )
}

/// Denied IPv4 ranges, most specific first so that an error names the narrowest (IANA IPv4
/// Special-Purpose Address Registry, plus the cloud metadata endpoints inside or outside it).
const DENIED_V4: &[(Ipv4Net, &str)] = &[
    // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle Cloud...
    v4(169, 254, 169, 254, 32, "cloud metadata"),
    v4(169, 254, 170, 2, 32, "container metadata (AWS ECS)"),
    v4(100, 100, 100, 200, 32, "cloud metadata (Alibaba Cloud)"),
    // A public address that answers only inside Azure: the host's agent and metadata channel.
    v4(
        168,
        63,
        129,
        16,
        32,
        "cloud platform endpoint (Azure WireServer)",
    ),
    v4(192, 0, 0, 192, 32, "cloud metadata (Oracle Cloud Classic)"),
    v4(0, 0, 0, 0, 8, "unspecified (this network)"),
    v4(10, 0, 0, 0, 8, "private"),
    v4(100, 64, 0, 0, 10, "shared address space (CGNAT)"),
    v4(127, 0, 0, 0, 8, "loopback"),
    v4(169, 254, 0, 0, 16, "link-local"),
    v4(172, 16, 0, 0, 12, "private"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignments"),
    v4(192, 0, 2, 0, 24, "documentation"),
    v4(192, 88, 99, 0, 24, "6to4 relay anycast"),
    v4(192, 168, 0, 0, 16, "private"),
    v4(198, 18, 0, 0, 15, "benchmarking"),
    v4(198, 51, 100, 0, 24, "documentation"),
    v4(203, 0, 113, 0, 24, "documentation"),
    v4(224, 0, 0, 0, 4, "multicast"),
    v4(255, 255, 255, 255, 32, "broadcast"),
    v4(240, 0, 0, 0, 4, "reserved"),
];

/// Denied IPv6 ranges, most specific first (IANA IPv6 Special-Purpose Address Registry).
/// IPv4-mapped, NAT64 and 6to4 addresses are judged by their IPv4 address before this table.
const DENIED_V6: &[(Ipv6Net, &str)] = &[
    v6(
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254],
        128,
        "cloud metadata (AWS)",
    ),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible (deprecated)"),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo"),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments",
    ),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "segment routing (SRv6)"),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local (deprecated)"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

/// The denied range `ip` is in, or `None` for an address the guard lets through (a public
/// unicast address). IPv6 addresses that carry an IPv4 address (mapped, NAT64, 6to4) are judged
/// by it.
pub fn denied_range(ip: IpAddr) -> Option<DeniedRange> {
    match ip {
        IpAddr::V4(ip) => denied_v4(ip),
        IpAddr::V6(ip) => match embedded_v4(ip) {
            Some(v4) => denied_v4(v4),
            None => DENIED_V6
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|(net, name)| DeniedRange {
                    net: IpNet::V6(*net),
                    name,
                }),
        },
    }
}

fn denied_v4(ip: Ipv4Addr) -> Option<DeniedRange> {
    DENIED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(net, name)| DeniedRange {
            net: IpNet::V4(*net),
            name,
        })
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:0:0/96`, which the
/// kernel connects to over IPv4), the well-known NAT64 prefix (`64:ff9b::/96`) and 6to4
/// (`2002::/16`), whose gateways forward to the IPv4 address inside.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let [hi, lo] = [s[6], s[7]];
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    None
}

/// What the guard lets through besides public addresses: the `allow_outbound` setting.
///
/// Written as a comma-separated list (or, in a settings file, a list) of entries:
///
/// - `all`: everything; the guard is off;
/// - `none` (or nothing): public addresses only;
/// - an IP address (`127.0.0.1`, `::1`) or a CIDR (`10.1.0.0/16`, `fd00::/8`): addresses in it;
/// - a host name (`api.internal`), or `*.` and a domain (`*.svc.cluster.local`) for the names
///   under it: every address those names resolve to, whatever its range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    all: bool,
    nets: Vec<IpNet>,
    /// Lower case, without a trailing dot; `*.example` as `.example`.
    hosts: Vec<String>,
}

/// Why an `allow_outbound` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid allow_outbound entry {entry:?}: {reason}")]
pub struct AllowListError {
    entry: String,
    reason: &'static str,
}

impl AllowList {
    /// Everything: the guard is off.
    pub fn all() -> Self {
        AllowList {
            all: true,
            ..AllowList::default()
        }
    }

    /// Public addresses only (the default).
    pub fn none() -> Self {
        AllowList::default()
    }

    /// Parses a list of entries (see [`AllowList`]).
    pub fn parse_entries<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowListError> {
        let mut list = AllowList::default();
        let mut saw_none = false;
        let mut saw_other = false;
        for raw in entries {
            let entry = raw.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let bad = |reason| AllowListError {
                entry: entry.to_string(),
                reason,
            };
            match entry.to_ascii_lowercase().as_str() {
                "all" => list.all = true,
                "none" => saw_none = true,
                lower => {
                    saw_other = true;
                    let bare = lower
                        .strip_prefix('[')
                        .and_then(|s| s.strip_suffix(']'))
                        .unwrap_or(lower);
                    if let Ok(ip) = IpAddr::from_str(bare) {
                        list.nets.push(IpNet::from(ip));
                    } else if lower.contains('/') {
                        let net = IpNet::from_str(lower)
                            .map_err(|_| bad("not a CIDR such as 10.0.0.0/8 or fd00::/8"))?;
                        list.nets.push(net.trunc());
                    } else {
                        list.hosts.push(host_pattern(lower).ok_or_else(|| {
                            bad("not an IP address, a CIDR, a host name or *.domain")
                        })?);
                    }
                }
            }
        }
        if saw_none && (saw_other || list.all) {
            return Err(AllowListError {
                entry: "none".to_string(),
                reason: "`none` cannot be combined with other entries",
            });
        }
        Ok(list)
    }

    /// Whether everything is allowed (the guard is off).
    pub fn allows_all(&self) -> bool {
        self.all
    }

    /// Whether `ip` is in an allowed CIDR (an IPv4-mapped IPv6 address also by its IPv4 form).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        if self.all {
            return true;
        }
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }

    /// Whether the host name `host` is allowed by name (whatever it resolves to).
    pub fn allows_host(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix('.') {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
                None => *pattern == host,
            })
    }

    /// Checks that `ip`, reached as `host`, may be connected to.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Denied> {
        if self.allows_ip(ip) {
            return Ok(());
        }
        match denied_range(ip) {
            Some(range) => Err(Denied {
                host: host.to_string(),
                range,
            }),
            None => Ok(()),
        }
    }
}

/// A host name pattern in its stored form, or `None` if `lower` is not one.
fn host_pattern(lower: &str) -> Option<String> {
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    valid.then(|| {
        if wildcard {
            format!(".{name}")
        } else {
            name.to_string()
        }
    })
}

impl FromStr for AllowList {
    type Err = AllowListError;

    /// Parses a comma-separated list (see [`AllowList`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AllowList::parse_entries(&s.split(',').collect::<Vec<_>>())
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all {
            return f.write_str("all");
        }
        let mut entries: Vec<String> = self.nets.iter().map(ToString::to_string).collect();
        entries.extend(self.hosts.iter().map(|h| match h.strip_prefix('.') {
            Some(domain) => format!("*.{domain}"),
            None => h.clone(),
        }));
        if entries.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&entries.join(","))
        }
    }
}

impl Serialize for AllowList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AllowList {
    /// A comma-separated string, or a list of entries.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            One(String),
            Many(Vec<String>),
        }
        let parsed = match Repr::deserialize(d)? {
            Repr::One(s) => s.parse(),
            Repr::Many(entries) => AllowList::parse_entries(&entries),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// A destination the guard refused. Its message names the host and the range, never the list
/// of addresses a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the outbound guard denies {host}: its address is in a denied range ({range}); \
     the allow_outbound setting can allow it"
)]
pub struct Denied {
    /// The host as the URL names it.
    pub host: String,
    /// The first denied range met.
    pub range: DeniedRange,
}

/// The checks a guarded client makes, shared by its resolver and its redirect policy.
#[derive(Debug, Clone)]
pub struct Guard {
    allow: Arc<AllowList>,
}

impl Guard {
    /// A guard that lets through public addresses and what `allow` lists; `None` when `allow`
    /// allows everything (no guard).
    pub fn new(allow: &AllowList) -> Option<Self> {
        (!allow.allows_all()).then(|| Guard {
            allow: Arc::new(allow.clone()),
        })
    }

    /// Checks the host of `url` when it is an IP literal, which reqwest connects to without
    /// asking a resolver. Host names are checked by [`GuardedResolver`] once resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), Denied> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.allow.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.allow.check_ip(&format!("[{ip}]"), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) | None => Ok(()),
        }
    }

    /// Follows up to `max` redirects (as [`Policy::limited`]) to destinations the guard allows;
    /// a redirect to a denied IP literal fails with [`Denied`].
    pub fn redirect_policy(&self, max: usize) -> Policy {
        let guard = self.clone();
        let limited = Policy::limited(max);
        Policy::custom(move |attempt| match guard.check_url(attempt.url()) {
            Ok(()) => limited.redirect(attempt),
            Err(denied) => attempt.error(denied),
        })
    }
}

/// The system resolver (`getaddrinfo`, on a blocking thread), as reqwest's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Resolves host names and keeps only the addresses the guard allows, so the client connects
/// to checked addresses only. A name whose every address is denied fails with [`Denied`].
pub struct GuardedResolver {
    inner: Arc<dyn Resolve>,
    allow: Arc<AllowList>,
}

impl GuardedResolver {
    /// Resolves through `inner`, keeping what `allow` allows (everything, for
    /// [`AllowList::all`]).
    pub fn new(inner: Arc<dyn Resolve>, allow: &AllowList) -> Self {
        GuardedResolver {
            inner,
            allow: Arc::new(allow.clone()),
        }
    }
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let allow = self.allow.clone();
        let resolving = self.inner.resolve(name);
        Box::pin(async move {
            let addrs = resolving.await?;
            if allow.allows_host(&host) {
                return Ok(addrs);
            }
            let mut kept = Vec::new();
            let mut denied = None;
            for addr in addrs {
                match allow.check_ip(&host, addr.ip()) {
                    Ok(()) => kept.push(addr),
                    Err(d) => {
                        denied.get_or_insert(d);
                    }
                }
            }
            match denied {
                Some(d) if kept.is_empty() => Err(Box::new(d) as _),
                _ => {
                    let addrs: Addrs = Box::new(kept.into_iter());
                    Ok(addrs)
                }
            }
        })
    }
}

/// The [`Denied`] somewhere in `e`'s chain of sources, if the guard caused it.
pub fn find_denied<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Denied> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(d) = err.downcast_ref::<Denied>() {
            return Some(d);
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn range_of(s: &str) -> Option<String> {
        denied_range(ip(s)).map(|r| r.to_string())
    }

    #[test]
    fn special_ranges_are_denied_with_their_name() {
        for (addr, expected) in [
            ("127.0.0.1", "loopback 127.0.0.0/8"),
            ("127.255.1.2", "loopback 127.0.0.0/8"),
            ("0.0.0.0", "unspecified (this network) 0.0.0.0/8"),
            ("10.1.2.3", "private 10.0.0.0/8"),
            ("172.31.255.255", "private 172.16.0.0/12"),
            ("192.168.1.1", "private 192.168.0.0/16"),
            ("169.254.169.254", "cloud metadata 169.254.169.254/32"),
            ("169.254.1.1", "link-local 169.254.0.0/16"),
            (
                "100.100.100.200",
                "cloud metadata (Alibaba Cloud) 100.100.100.200/32",
            ),
            ("100.64.0.1", "shared address space (CGNAT) 100.64.0.0/10"),
            (
                "168.63.129.16",
                "cloud platform endpoint (Azure WireServer) 168.63.129.16/32",
            ),
            ("224.0.0.1", "multicast 224.0.0.0/4"),
            ("255.255.255.255", "broadcast 255.255.255.255/32"),
            ("240.0.0.1", "reserved 240.0.0.0/4"),
            ("192.0.2.10", "documentation 192.0.2.0/24"),
            ("198.18.0.1", "benchmarking 198.18.0.0/15"),
            ("::1", "loopback ::1/128"),
            ("::", "unspecified ::/128"),
            ("fd00:ec2::254", "cloud metadata (AWS) fd00:ec2::254/128"),
            ("fd12:3456::1", "unique local fc00::/7"),
            ("fe80::1", "link-local fe80::/10"),
            ("fec0::1", "site-local (deprecated) fec0::/10"),
            ("ff02::1", "multicast ff00::/8"),
            ("2001:db8::1", "documentation 2001:db8::/32"),
            ("2001::1", "Teredo 2001::/32"),
            ("::7f00:1", "IPv4-compatible (deprecated) ::/96"),
            ("64:ff9b:1::1", "local-use NAT64 64:ff9b:1::/48"),
            // Carried IPv4 addresses are judged as IPv4.
            ("::ffff:127.0.0.1", "loopback 127.0.0.0/8"),
            (
                "::ffff:169.254.169.254",
                "cloud metadata 169.254.169.254/32",
            ),
            ("64:ff9b::a00:1", "private 10.0.0.0/8"),
            ("2002:7f00:1::1", "loopback 127.0.0.0/8"),
        ] {
            assert_eq!(range_of(addr).as_deref(), Some(expected), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(range_of(addr), None, "{addr}");
        }
    }

    #[test]
    fn allow_list_parses_and_prints() {
        let list: AllowList = " 127.0.0.1, 10.1.2.3/16,[::1], API.internal., *.svc.local "
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            list.to_string(),
            "127.0.0.1/32,10.1.0.0/16,::1/128,api.internal,*.svc.local"
        );
        assert!(list.allows_ip(ip("10.1.200.1")));
        assert!(!list.allows_ip(ip("10.2.0.1")));
        assert!(list.allows_ip(ip("::ffff:127.0.0.1")), "mapped form");
        assert!(list.allows_host("api.internal"));
        assert!(list.allows_host("API.Internal."));
        assert!(list.allows_host("a.svc.local"));
        assert!(list.allows_host("a.b.svc.local"));
        assert!(!list.allows_host("svc.local"), "the wildcard needs a label");
        assert!(!list.allows_host("evilsvc.local"));
        assert!(!list.allows_host("api.internal.evil"));
        assert_eq!("all".parse::<AllowList>().map(|l| l.allows_all()), Ok(true));
        assert_eq!("none".parse::<AllowList>(), Ok(AllowList::none()));
        assert_eq!("".parse::<AllowList>(), Ok(AllowList::none()));
        assert_eq!(AllowList::none().to_string(), "none");
        for bad in [
            "10.0.0.0/33",
            "none,127.0.0.1",
            "exa mple",
            "a..b",
            "*.",
            "http://x",
        ] {
            assert!(bad.parse::<AllowList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_list_lets_denied_addresses_through() {
        let list: AllowList = "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(list.check_ip("x", ip("127.0.0.1")), Ok(()));
        let denied = list
            .check_ip("localhost", ip("127.0.0.2"))
            .expect_err("outside the allowed CIDR");
        assert_eq!(denied.host, "localhost");
        assert_eq!(denied.range.name, "loopback");
        assert_eq!(list.check_ip("x", ip("8.8.8.8")), Ok(()));
    }

    #[test]
    fn odd_ipv4_notations_are_normalised_by_the_url_parser() {
        let guard = Guard::new(&AllowList::none()).unwrap_or_else(|| panic!("a guard"));
        for uri in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://0.0.0.0:5432/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://%31%32%37.0.0.1/",
        ] {
            let url = Url::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert!(guard.check_url(&url).is_err(), "{uri} -> {url}");
        }
        let url = Url::parse("http://localhost/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(guard.check_url(&url), Ok(()), "names go to the resolver");
    }

    #[test]
    fn denied_message_names_host_and_range() {
        let list = AllowList::none();
        let d = list
            .check_ip("metadata.internal", ip("169.254.169.254"))
            .expect_err("denied");
        let text = d.to_string();
        assert!(text.contains("metadata.internal"), "{text}");
        assert!(text.contains("cloud metadata 169.254.169.254/32"), "{text}");
        assert!(text.contains("allow_outbound"), "{text}");
    }
}
