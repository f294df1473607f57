//! Where a webhook may be sent: an `http` or `https` URL whose host is not
//! a private, loopback or link-local address (nor any address a name
//! resolves to), so that a tenant cannot make the service call into its own
//! network (SSRF). Checked when an endpoint is saved, and again at each
//! delivery against the addresses the name resolves to then (a name may be
//! rebound to an inner address after it was saved). `WEBHOOK_ALLOW_PRIVATE`
//! lifts the address rule for local runs and tests.

use std::net::{IpAddr, SocketAddr};

/// Why a destination is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    InvalidUrl(String),
    #[error("{0}")]
    Private(String),
}

/// The URL checked, with the addresses its host resolves to now.
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: url::Url,
    pub addrs: Vec<SocketAddr>,
}

/// Checks `raw` as a webhook destination: its form always, and unless
/// `allow_private` the addresses its host resolves to.
pub async fn check(raw: &str, allow_private: bool) -> Result<Destination, Refused> {
    let url = url::Url::parse(raw).map_err(|e| Refused::InvalidUrl(format!("`url` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::InvalidUrl("`url` must be an `http://` or `https://` URL".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::InvalidUrl("`url` must not carry credentials".to_owned()));
    }
    let host = url.host_str().ok_or_else(|| Refused::InvalidUrl("`url` has no host".to_owned()))?.to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let name = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addrs: Vec<SocketAddr> = match name.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|e| Refused::InvalidUrl(format!("`url`'s host `{host}` does not resolve: {e}")))?
            .collect(),
    };
    if !allow_private {
        if let Some(inner) = addrs.iter().find(|a| !public(a.ip())) {
            return Err(Refused::Private(format!(
                "`url`'s host `{host}` is (or resolves to) {}, a private, loopback or link-local address",
                inner.ip()
            )));
        }
    }
    Ok(Destination { url, addrs })
}

/// Whether an address is one the service may send to.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // carrier-grade NAT, 100.64.0.0/10
                || (a == 100 && (64..128).contains(&b))
                // "this network", 0.0.0.0/8
                || a == 0)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inner_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "https://10.1.2.3/hook",
            "http://192.168.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://localhost/hook",
        ] {
            assert!(matches!(check(url, false).await, Err(Refused::Private(_))), "{url}");
            assert!(check(url, true).await.is_ok(), "{url} when private destinations are allowed");
        }
        assert!(check("https://93.184.216.34/hook", false).await.is_ok());
        for bad in ["ftp://93.184.216.34/", "not a url", "https://user:pw@93.184.216.34/", "file:///etc/passwd"] {
            assert!(matches!(check(bad, true).await, Err(Refused::InvalidUrl(_))), "{bad}");
        }
    }
}
