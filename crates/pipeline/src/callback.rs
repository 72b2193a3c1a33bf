//! Callbacks: the uploader's URL, checked when the photo is uploaded and
//! again when a worker POSTs to it.
//!
//! A callback is a request Darkroom makes on an uploader's behalf, so it
//! must not reach what only Darkroom can reach: the cloud's metadata
//! service (169.254.169.254), loopback, private and link-local networks
//! (server-side request forgery). At upload an address written in the URL
//! is refused at once (400 `invalid_callback_url`); at delivery the name is
//! resolved by Darkroom's own resolver, which refuses a name that resolves
//! to such an address (a public name can point anywhere), and the client
//! connects only to the addresses that resolver returned, so the answer
//! cannot change between the check and the connection. Redirects are not
//! followed (a 3xx is a failed delivery), and no proxy from the
//! environment is used. `pipeline.callbacks.allow_private = true` turns the
//! address checks off, for tests and closed networks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use domain::stage::StageError;
use serde::{Deserialize, Serialize};

/// `[pipeline.callbacks]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackConfig {
    /// Allow callback URLs on loopback, private, link-local and other
    /// non-public addresses. Off: only for tests and closed networks.
    pub allow_private: bool,
}

/// Why `ip` is not a public address, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let v4_at = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("the unspecified address")
            } else if s[..6] == [0; 6] {
                // IPv4-compatible (::a.b.c.d, deprecated): the IPv4 inside decides.
                non_public_v4(v4_at(s[6], s[7]))
            } else if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
                // SIIT (::ffff:0:a.b.c.d).
                non_public_v4(v4_at(s[6], s[7]))
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
                // Well-known NAT64 (64:ff9b::a.b.c.d).
                non_public_v4(v4_at(s[6], s[7]))
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                Some("a local-use NAT64 address")
            } else if s[0] == 0x2002 {
                // 6to4 (2002:a.b.c.d::/48).
                non_public_v4(v4_at(s[1], s[2]))
            } else if s[0] == 0x2001 && s[1] == 0 {
                Some("a Teredo tunnel address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("a unique local (private) address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("a site-local address")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("a multicast address")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("a documentation address")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata services live there)")
    } else if ip.is_private() {
        Some("a private address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if a == 0 {
        Some("an address in 0.0.0.0/8")
    } else if a == 192 && b == 0 && c == 0 {
        Some("an IETF protocol address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("a benchmarking address")
    } else if ip.is_documentation() {
        Some("a documentation address")
    } else if a >= 224 {
        Some("a multicast or reserved address")
    } else {
        None
    }
}

/// Checks a callback URL at upload: an absolute `http` or `https` URL with
/// a host, at most 2,048 characters, and (unless `allow_private`) not an
/// address or a `localhost` name that only Darkroom's own network reaches.
/// Returns it as given.
pub fn check_callback_url(url: &str, config: &CallbackConfig) -> Result<String, String> {
    if url.len() > 2048 {
        return Err("longer than 2048 characters".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("scheme {:?}: use http or https", parsed.scheme()));
    }
    let host = match parsed.host() {
        Some(host) if !host.to_string().is_empty() => host,
        _ => return Err("no host".into()),
    };
    if config.allow_private {
        return Ok(url.to_string());
    }
    let refused = |what: String| {
        Err(format!(
            "{what}: callbacks go to public addresses only (pipeline.callbacks.allow_private = true allows others)"
        ))
    };
    match host {
        url::Host::Ipv4(v4) => match non_public(IpAddr::V4(v4)) {
            Some(why) => refused(format!("{v4} is {why}")),
            None => Ok(url.to_string()),
        },
        url::Host::Ipv6(v6) => match non_public(IpAddr::V6(v6)) {
            Some(why) => refused(format!("{v6} is {why}")),
            None => Ok(url.to_string()),
        },
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                refused(format!("{name} is this machine"))
            } else {
                Ok(url.to_string())
            }
        }
    }
}

/// A name that resolved to an address callbacks may not reach.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {ip}, {why}: callbacks go to public addresses only (pipeline.callbacks.allow_private = true allows others)")]
struct NonPublicAddress {
    host: String,
    ip: IpAddr,
    why: &'static str,
}

/// Resolves with the system's resolver and refuses any name with a
/// non-public address among its answers.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some((ip, why)) = addrs
                .iter()
                .find_map(|a| non_public(a.ip()).map(|why| (a.ip(), why)))
            {
                return Err(Box::new(NonPublicAddress { host, ip, why }) as _);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// POSTs photo records to callback URLs.
pub(crate) struct Deliverer {
    client: reqwest::Client,
    config: CallbackConfig,
}

impl Deliverer {
    pub(crate) fn new(timeout: Duration, config: CallbackConfig) -> Deliverer {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("darkroom/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !config.allow_private {
            builder = builder.dns_resolver(PublicOnly);
        }
        Deliverer {
            client: builder.build().expect("the callback HTTP client builds"),
            config,
        }
    }

    /// POSTs `body` to `url`; the HTTP status on a 2xx answer. A URL or a
    /// name that is not allowed is permanent; anything else is retried.
    pub(crate) async fn post(
        &self,
        url: &str,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
    ) -> Result<u16, StageError> {
        // Checked again: the record may predate the rule, or the config changed.
        check_callback_url(url, &self.config)
            .map_err(|reason| StageError::Permanent(format!("callback URL {url}: {reason}")))?;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-darkroom-event", event)
            .header("x-darkroom-delivery", delivery)
            .body(body)
            .send()
            .await
            .map_err(|e| match non_public_cause(&e) {
                Some(refused) => StageError::Permanent(format!("POST {url}: {refused}")),
                None => StageError::Transient(format!("POST {url}: {e}")),
            })?;
        let code = response.status();
        if !code.is_success() {
            return Err(StageError::Transient(format!("POST {url}: HTTP {code}")));
        }
        Ok(code.as_u16())
    }
}

/// Our resolver's refusal, if that is what failed the request.
fn non_public_cause(e: &reqwest::Error) -> Option<&NonPublicAddress> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<NonPublicAddress>() {
            return Some(refused);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: CallbackConfig = CallbackConfig {
        allow_private: false,
    };

    #[test]
    fn callback_urls_must_be_absolute_http_with_a_host() {
        assert!(check_callback_url("https://example.com/hook?x=1", &STRICT).is_ok());
        assert!(check_callback_url("http://93.184.215.14:9000/cb", &STRICT).is_ok());
        for bad in [
            "",
            "/relative",
            "ftp://example.com/x",
            "mailto:a@b.c",
            "http://",
            "not a url",
        ] {
            assert!(check_callback_url(bad, &STRICT).is_err(), "{bad:?} passed");
        }
        let long = format!("https://e.com/{}", "a".repeat(3000));
        assert!(check_callback_url(&long, &STRICT).is_err());
    }

    #[test]
    fn private_addresses_and_localhost_are_refused_unless_allowed() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:9000/cb",
            "http://10.1.2.3/cb",
            "http://172.16.0.1/cb",
            "http://192.168.1.1/cb",
            "http://100.64.0.1/cb",
            "http://0.0.0.0/cb",
            "http://[::1]/cb",
            "http://[fd00::1]/cb",
            "http://[fe80::1]/cb",
            "http://[::ffff:127.0.0.1]/cb",
            "http://[64:ff9b::a9fe:a9fe]/cb",
            "http://[::a9fe:a9fe]/cb",
            "http://[::ffff:0:a9fe:a9fe]/cb",
            "http://[2002:a9fe:a9fe::1]/cb",
            "http://[64:ff9b:1::1]/cb",
            "http://[fec0::1]/cb",
            "http://[2001:0:4136:e378::1]/cb",
            "http://localhost:8080/cb",
            "http://api.localhost/cb",
            "http://2130706433/cb",
            "http://0x7f.1/cb",
        ] {
            let refused = check_callback_url(url, &STRICT).unwrap_err();
            assert!(refused.contains("allow_private"), "{url}: {refused}");
            let open = CallbackConfig {
                allow_private: true,
            };
            assert!(check_callback_url(url, &open).is_ok(), "{url}");
        }
        for public in [
            "http://[2606:4700::1111]/cb",
            "http://[2002:5db8:d70e::1]/cb",
            "http://[64:ff9b::5db8:d70e]/cb",
        ] {
            assert!(check_callback_url(public, &STRICT).is_ok(), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_at_delivery() {
        // Straight to the client, past the upload check: the resolver itself
        // refuses a name whose address is loopback.
        let deliverer = Deliverer::new(Duration::from_secs(2), STRICT);
        let refused = deliverer
            .client
            .post("http://localhost:9/cb")
            .send()
            .await
            .unwrap_err();
        let cause = non_public_cause(&refused).unwrap_or_else(|| panic!("{refused:?}"));
        assert!(cause.to_string().contains("loopback"), "{cause}");
    }
}
