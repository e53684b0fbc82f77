//! The guard against webhooks aimed inside the operator's network (SSRF): an endpoint's URL
//! must resolve to public addresses only, checked when it is registered and again at every
//! connection (a resolver that keeps public addresses only, so a name that changes its
//! answer later reaches nothing private either). Operators may allow private networks
//! (`WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Longest URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// Whether an address is reachable on the public internet: not loopback, private, shared
/// (CGNAT), link-local, unspecified, broadcast, multicast, documentation or otherwise reserved
/// (IPv4-mapped and -compatible IPv6 addresses are judged as the IPv4 address they carry).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (b & 0xc0) == 64) // shared address space (CGNAT), 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18/15
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0064 && segments[1] == 0xff9b) // NAT64, carries IPv4
        || segments[..6].iter().all(|s| *s == 0)) // IPv4-compatible (deprecated)
}

/// Why an address may not be used, in words for the partner.
fn kind_of(ip: IpAddr) -> &'static str {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "a loopback address",
        IpAddr::V6(v6) if v6.is_loopback() => "a loopback address",
        IpAddr::V4(v4) if v4.is_private() => "a private address",
        IpAddr::V6(v6) if v6.is_unique_local() => "a private address",
        IpAddr::V4(v4) if v4.is_link_local() => "a link-local address",
        IpAddr::V6(v6) if v6.is_unicast_link_local() => "a link-local address",
        _ => "not a public address",
    }
}

/// An endpoint URL that may not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(pub String);

/// Checks a URL given for an endpoint: http or https, a host, no user name or password, at most
/// [`MAX_URL_CHARS`]; with `allow_private` false, every address its host resolves to now must
/// be public.
///
/// # Errors
/// What is wrong, in words that say what to fix.
pub async fn check_url(text: &str, allow_private: bool) -> Result<Url, BadUrl> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(BadUrl(format!(
            "url is longer than {MAX_URL_CHARS} characters"
        )));
    }
    let url = Url::parse(text).map_err(|e| {
        BadUrl(format!(
            "url is not an absolute URL ({e}): give one like https://partner.example.com/hooks"
        ))
    })?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(BadUrl(format!(
            "url has the scheme {}: only https (or http) URLs can receive webhooks",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BadUrl(
            "url carries a user name or password: put credentials in the path or query, or better, verify the signature"
                .into(),
        ));
    }
    if url.fragment().is_some() {
        return Err(BadUrl(
            "url has a fragment (#…), which is never sent".into(),
        ));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match url.host() {
        None => return Err(BadUrl("url has no host".into())),
        Some(Host::Ipv4(v4)) => vec![IpAddr::V4(v4)],
        Some(Host::Ipv6(v6)) => vec![IpAddr::V6(v6)],
        Some(Host::Domain(name)) => {
            if allow_private {
                // Resolving is only needed to refuse; an unresolvable name may be fixed later.
                return Ok(url);
            }
            let found = tokio::net::lookup_host((name, port)).await.map_err(|e| {
                BadUrl(format!(
                    "url's host {name} cannot be resolved ({e}): give a host with a public DNS name"
                ))
            })?;
            found.map(|a| a.ip()).collect()
        }
    };
    if !allow_private && let Some(bad) = addresses.iter().find(|ip| !is_public(**ip)) {
        return Err(BadUrl(format!(
            "url's host resolves to {bad}, {}: webhooks go to public addresses only (operators may allow private networks with WDT_GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS)",
            kind_of(*bad)
        )));
    }
    Ok(url)
}

/// The address a URL names literally, if it does.
pub(crate) fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        Host::Domain(_) => None,
    }
}

/// A resolver for the delivery client that keeps public addresses only: a name that
/// resolves to nothing public cannot be connected to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (webhooks go to public addresses only)"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_reserved_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip(s)), "{s}");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "11.0.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(s)), "{s}");
        }
    }

    #[tokio::test]
    async fn urls_must_be_http_and_public_unless_private_networks_are_allowed() {
        let refused = |r: Result<Url, BadUrl>| r.unwrap_err().0;
        assert!(refused(check_url("http://127.0.0.1:9/h", false).await).contains("loopback"));
        assert!(refused(check_url("http://[::1]/h", false).await).contains("loopback"));
        assert!(refused(check_url("http://10.0.0.5/h", false).await).contains("private"));
        assert!(
            refused(check_url("http://169.254.169.254/latest", false).await).contains("link-local")
        );
        assert!(refused(check_url("http://localhost:8080/h", false).await).contains("loopback"));
        assert!(
            refused(check_url("http://[::ffff:192.168.0.1]/", false).await).contains("private")
        );
        assert!(
            refused(check_url("http://0x7f000001/", false).await).contains("loopback"),
            "hexadecimal IPv4 is parsed as an address"
        );
        assert!(refused(check_url("ftp://example.com/h", false).await).contains("scheme"));
        assert!(refused(check_url("https://u:p@example.com/h", false).await).contains("password"));
        assert!(refused(check_url("not a url", false).await).contains("absolute"));
        assert!(refused(check_url("https://example.com/#x", false).await).contains("fragment"));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(refused(check_url(&long, false).await).contains("longer"));
        // Public literals pass without DNS; private ones pass when allowed.
        assert!(check_url("https://8.8.8.8/h", false).await.is_ok());
        assert!(check_url("http://127.0.0.1:9/h", true).await.is_ok());
        assert!(check_url("http://localhost:9/h", true).await.is_ok());
    }
}
