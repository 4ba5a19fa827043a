//! The client's address behind a reverse proxy (`JANITOR_TRUSTED_PROXIES`).
//!
//! Failed logins and failed API authentications are limited per client
//! address ([`super::failures`]). Behind a reverse proxy every connection
//! comes from the proxy, so every client would share one allowance, and one
//! guesser would lock everybody out. A proxy says who its client was in
//! `X-Forwarded-For`, appending the address it saw to what it received.
//! Anyone can send that header, so it is believed only as far as trusted
//! proxies wrote it: when the connection comes from a trusted proxy, the
//! entries are read from the right, past every trusted proxy, and the first
//! other address is the client. What a client wrote itself is further left
//! and never reached. When the connection does not come from a trusted
//! proxy (or none is configured, the default), the header is ignored.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use super::failures::Source;

/// The header a proxy appends its client's address to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The addresses whose `X-Forwarded-For` is believed: IPs and CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<Net>,
}

/// One address block: an address with its host bits clear, and the length
/// of its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    base: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(raw: &str) -> anyhow::Result<Self> {
        let (addr, prefix) = match raw.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (raw, None),
        };
        let base: IpAddr = addr.parse().map_err(|_| anyhow::anyhow!("{raw:?} is not an IP address or CIDR block"))?;
        let base = base.to_canonical();
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => match prefix.parse::<u8>() {
                Ok(prefix) if prefix <= bits => prefix,
                _ => anyhow::bail!("{raw:?}: the prefix length must be a number from 0 to {bits}"),
            },
        };
        let net = Self { base, prefix };
        // A block written with host bits set (10.0.0.1/8) is ambiguous: a
        // single proxy meant, or its whole network? Trust is not guessed.
        anyhow::ensure!(mask(base, prefix) == bits_of(base), "{raw:?} has host bits set");
        Ok(net)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.base.is_ipv4() && mask(ip, self.prefix) == mask(self.base, self.prefix)
    }
}

/// An address as a 128-bit number (IPv4 in the low 32 bits).
fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(ip) => u128::from(u32::from(ip)),
        IpAddr::V6(ip) => u128::from(ip),
    }
}

/// The first `prefix` bits of an address, the rest cleared.
fn mask(ip: IpAddr, prefix: u8) -> u128 {
    let bits: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let host_bits = bits - u32::from(prefix);
    bits_of(ip) & u128::MAX.checked_shl(host_bits).unwrap_or(0)
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl TrustedProxies {
    /// A comma-separated list of IPs and CIDR blocks (`10.0.0.0/8, ::1`);
    /// empty trusts no proxy.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let nets = spec.split(',').map(str::trim).filter(|raw| !raw.is_empty()).map(Net::parse);
        Ok(Self { nets: nets.collect::<anyhow::Result<_>>()? })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted
    /// proxy; then the rightmost `X-Forwarded-For` entry that is not a
    /// trusted proxy (or the leftmost, if all are). An entry that is no
    /// address stops the search at the last address found, the peer's at
    /// worst: it came from the proxies, and a guess could be spoofed.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip().to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Several headers count as one list, in order (RFC 9110, 5.3).
        let entries: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }

    /// The address an audit row records: the peer's, or behind a trusted
    /// proxy the client's with the proxy after it
    /// (`203.0.113.7 via 10.0.0.2:51234`).
    pub fn audit_address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<String> {
        let peer = peer?;
        Some(match self.client(Some(peer), headers) {
            Some(client) if client != peer.ip().to_canonical() => format!("{client} via {peer}"),
            _ => peer.to_string(),
        })
    }

    /// The failure limit's [`Source`] of a request: its client's address.
    pub fn source(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Source {
        Source::of_ip(self.client(peer, headers))
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let ip = entry.parse::<IpAddr>().or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip())).ok()?;
    Some(ip.to_canonical())
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> = self.nets.iter().map(ToString::to_string).collect();
        f.write_str(&nets.join(","))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40_000))
    }

    fn ip(ip: &str) -> Option<IpAddr> {
        Some(ip.parse().unwrap())
    }

    #[test]
    fn lists_of_addresses_and_blocks_parse_and_mistakes_do_not() {
        let proxies = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,::1, fd00::/8,").unwrap();
        assert_eq!(proxies.to_string(), "10.0.0.0/8,192.168.1.7/32,::1/128,fd00::/8");
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/x", "proxy.internal", "fd00::1/8", "10.0.0.0/"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        assert!(proxies.trusts("10.200.3.4".parse().unwrap()));
        assert!(proxies.trusts("::ffff:10.1.2.3".parse().unwrap()), "an IPv4-mapped peer is its IPv4 address");
        assert!(proxies.trusts("fd12::9".parse().unwrap()));
        assert!(!proxies.trusts("11.0.0.1".parse().unwrap()));
        assert!(!proxies.trusts("192.168.1.8".parse().unwrap()));
        assert!(TrustedProxies::parse("0.0.0.0/0").unwrap().trusts("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let spoofed = headers(&["198.51.100.1"]);
        let none = TrustedProxies::default();
        assert_eq!(none.client(peer("10.0.0.5"), &spoofed), ip("10.0.0.5"));
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(proxies.client(peer("203.0.113.9"), &spoofed), ip("203.0.113.9"), "a client is no proxy");
        assert_eq!(proxies.client(peer("10.0.0.5"), &spoofed), ip("198.51.100.1"));
        assert_eq!(proxies.client(peer("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"), "no header: the proxy");
        assert_eq!(proxies.client(None, &spoofed), None);
    }

    #[test]
    fn the_rightmost_address_that_no_trusted_proxy_holds_is_the_client() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 2001:db8::/32").unwrap();
        // The client wrote the first two itself; the proxies appended the rest.
        let chain = headers(&["1.1.1.1, 2.2.2.2", "203.0.113.7, 10.0.0.9", "2001:db8::5"]);
        assert_eq!(proxies.client(peer("10.0.0.1"), &chain), ip("203.0.113.7"));
        // Only trusted proxies: the leftmost is as far as the chain goes.
        assert_eq!(proxies.client(peer("10.0.0.1"), &headers(&["10.0.0.3, 10.0.0.2"])), ip("10.0.0.3"));
        // Ports, brackets, mapped addresses.
        let ported = headers(&["[2001:db9::1]:4711"]);
        assert_eq!(proxies.client(peer("10.0.0.1"), &ported), ip("2001:db9::1"));
        assert_eq!(proxies.client(peer("10.0.0.1"), &headers(&["203.0.113.7:80"])), ip("203.0.113.7"));
        assert_eq!(proxies.client(peer("::ffff:10.0.0.1"), &headers(&["::ffff:203.0.113.7"])), ip("203.0.113.7"));
        // Garbage stops the search where it is, never past it.
        let garbled = headers(&["203.0.113.7, unknown, 10.0.0.2"]);
        assert_eq!(proxies.client(peer("10.0.0.1"), &garbled), ip("10.0.0.2"));
        assert_eq!(proxies.client(peer("10.0.0.1"), &headers(&["nonsense"])), ip("10.0.0.1"));
    }
}
