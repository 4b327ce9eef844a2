//! Lifecycle events and signed webhooks: the event a job's change sends, its
//! signature, and the guard on callback addresses.
//!
//! Signature: `Lotsawa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<raw body>")>`. A receiver recomputes the HMAC over the raw body it
//! got and refuses a `t` too far from its clock (replays).
//!
//! Address guard: a callback URL is `http` or `https`, without credentials,
//! and its host must not be (or resolve to) a private, loopback, link-local,
//! multicast, metadata or otherwise non-public address, unless an operator
//! allows it. It is checked at submission and again before every delivery
//! (DNS can change), each time against every address the name resolves to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::job::{Job, JobStatus};

/// The header a delivery carries.
pub const SIGNATURE_HEADER: &str = "Lotsawa-Signature";

/// A lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Stored and queued.
    Created,
    /// Its first chunk started.
    Started,
    /// Completed.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl EventKind {
    /// The event's name (`job.completed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "job.created",
            Self::Started => "job.started",
            Self::Completed => "job.completed",
            Self::Failed => "job.failed",
            Self::Cancelled => "job.cancelled",
        }
    }

    /// The event a status change makes: `job.created` for a new job
    /// (`from` pending, `to` pending), `job.started` for a claim, the
    /// terminal event for an end; none for a retry or requeue.
    pub fn of_change(from: JobStatus, to: JobStatus) -> Option<Self> {
        match (from, to) {
            (JobStatus::Pending, JobStatus::Pending) => Some(Self::Created),
            (JobStatus::Pending, JobStatus::Processing) => Some(Self::Started),
            (_, to) if from != to => Self::terminal(to),
            _ => None,
        }
    }

    /// The terminal event of a job in `status`, if it ended.
    pub fn terminal(status: JobStatus) -> Option<Self> {
        match status {
            JobStatus::Completed => Some(Self::Completed),
            JobStatus::Failed => Some(Self::Failed),
            JobStatus::Cancelled => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// The error code at the head of a job's error (`provider_unavailable: …`).
fn error_code(error: &str) -> &str {
    error.split(':').next().unwrap_or(error).trim()
}

/// An event's body: ids, counts, the error code, timestamps and links;
/// never the texts.
pub fn job_event(kind: EventKind, job: &Job) -> Value {
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let id = job.id.to_string();
    json!({
        "type": kind.as_str(),
        "jobId": id,
        "tenant": job.tenant.as_str(),
        "batchId": job.batch.map(|b| b.id.to_string()),
        "jobType": job.kind.as_str(),
        "status": job.status.as_str(),
        "chunksCompleted": job.chunks_completed,
        "chunksTotal": job.chunks_total,
        "attempts": job.run,
        "errorCode": job.error.as_deref().map(error_code),
        "createdAt": ts(Some(job.created_at)),
        "startedAt": ts(job.started_at),
        "completedAt": ts(job.completed_at),
        "cancelledAt": ts(job.cancelled_at),
        "links": {
            "job": format!("/api/jobs/{id}"),
            "result": (job.status == JobStatus::Completed).then(|| format!("/api/jobs/{id}")),
        },
    })
}

/// The `Source` of every lifecycle event on an event bus.
pub const EVENT_SOURCE: &str = "lotsawa";

/// The `batch.completed` event: a batch's summary once every item ended
/// (its status says how), never the texts.
pub fn batch_event(batch: &crate::batch::Batch, summary: &crate::batch::Summary) -> Value {
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let id = batch.id.to_string();
    json!({
        "type": "batch.completed",
        "batchId": id,
        "tenant": batch.tenant.as_str(),
        "status": summary.status.as_str(),
        "total": batch.items.len(),
        "counts": summary.counts,
        "createdAt": ts(Some(batch.created_at)),
        "completedAt": ts(summary.finished_at),
        "links": { "batch": format!("/api/batches/{id}") },
    })
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `Lotsawa-Signature` value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", crate::digest::hex(&tag))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=…,v1=…`.
    #[error("the signature header is malformed")]
    Malformed,
    /// `t` is too far from now.
    #[error("the signature is too old or from the future")]
    Stale,
    /// No `v1` matches.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Check a `Lotsawa-Signature` header against the raw body (what a
/// receiver does): some `v1` must match, and `t` be within `tolerance_s`
/// of `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let mut t: Option<i64> = None;
    let mut tags: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => t = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => {
                if v.len() != 64 || !v.is_ascii() {
                    return Err(SignatureError::Malformed);
                }
                let bytes = (0..64)
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&v[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| SignatureError::Malformed)?;
                tags.push(bytes);
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > tolerance_s {
        return Err(SignatureError::Stale);
    }
    // Constant-time comparison through the MAC itself.
    if tags
        .iter()
        .any(|tag| mac(secret, t, body).verify_slice(tag).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Why an address may not receive callbacks, or `None` when it may.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(169, 254, 170, 2) {
        return Some("a cloud metadata address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_private() {
        return Some("a private address");
    }
    if ip.is_link_local() {
        return Some("a link-local address");
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    if ip.is_broadcast() || a >= 240 {
        return Some("a reserved address");
    }
    if a == 0 {
        return Some("an unspecified address");
    }
    if a == 100 && (64..128).contains(&b) {
        return Some("a shared (carrier-grade NAT) address");
    }
    if (a, b, c) == (192, 0, 0) || (a == 198 && (b == 18 || b == 19)) {
        return Some("a reserved address");
    }
    if ip.is_documentation() {
        return Some("a documentation address");
    }
    None
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some("a cloud metadata address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some("a private (unique local) address");
    }
    if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        return Some("a link-local address");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("a documentation address");
    }
    // NAT64 (64:ff9b::/96) and IPv4-compatible addresses carry an IPv4
    // address: judge that one.
    if (s[0], s[1], s[2], s[3], s[4], s[5]) == (0x64, 0xff9b, 0, 0, 0, 0)
        || s[..6].iter().all(|x| *x == 0)
    {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return forbidden_v4(v4);
    }
    None
}

/// Who may receive callbacks beyond public addresses.
#[derive(Debug, Clone, Default)]
pub struct CallbackPolicy {
    /// Loopback receivers are allowed (the local form).
    pub allow_loopback: bool,
    /// Host names allowed whatever they resolve to (lower case).
    pub allow_hosts: Vec<String>,
    /// Networks allowed (`LOTSAWA_WEBHOOK_ALLOW` entries that are
    /// addresses or CIDR blocks).
    pub allow_nets: Vec<ipnet::IpNet>,
}

impl CallbackPolicy {
    /// A policy from `LOTSAWA_WEBHOOK_ALLOW`: comma-separated host names,
    /// addresses and CIDR blocks.
    pub fn with_allow_list(allow_loopback: bool, list: &str) -> Result<Self, String> {
        let mut policy = Self {
            allow_loopback,
            ..Self::default()
        };
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<ipnet::IpNet>() {
                policy.allow_nets.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                policy.allow_nets.push(ipnet::IpNet::from(ip));
            } else if entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            {
                policy.allow_hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "'{entry}' in LOTSAWA_WEBHOOK_ALLOW is not a host name, address or CIDR block"
                ));
            }
        }
        Ok(policy)
    }

    fn allows(&self, ip: IpAddr) -> Result<(), String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allow_nets.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if self.allow_loopback && ip.is_loopback() {
            return Ok(());
        }
        match forbidden(ip) {
            Some(why) => Err(format!("callbackUrl resolves to {ip}, {why}")),
            None => Ok(()),
        }
    }
}

/// Name resolution for the guard (a stub in tests; DNS in the product).
#[async_trait]
pub trait Resolver: Send + Sync {
    /// Every address `host` resolves to.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String>;
}

/// What a deployment does with callback URLs: the guard it checks them
/// with, or why it takes none.
#[derive(Clone)]
pub struct Callbacks {
    policy: CallbackPolicy,
    resolver: std::sync::Arc<dyn Resolver>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Callbacks {
    /// Callbacks checked against `policy`, names resolved by `resolver`.
    pub fn new(policy: CallbackPolicy, resolver: std::sync::Arc<dyn Resolver>) -> Self {
        Self { policy, resolver }
    }

    /// Check a callback URL (at submission, and before each delivery).
    pub async fn check(&self, raw: &str) -> Result<CheckedUrl, String> {
        check_callback(raw, &self.policy, &*self.resolver).await
    }
}

/// Longest callback URL accepted.
pub const MAX_CALLBACK_URL: usize = 2048;

/// A callback URL that passed the guard, with the addresses it was checked
/// on (empty when its host is allowed by name): a delivery connects to
/// these, so a name that changes between the check and the connection
/// cannot redirect it.
#[derive(Debug, Clone)]
pub struct CheckedUrl {
    /// The URL.
    pub url: url::Url,
    /// The addresses checked, with the URL's port.
    pub addrs: Vec<std::net::SocketAddr>,
}

/// Check a callback URL against the policy; the parsed URL and the
/// addresses it may be delivered to.
pub async fn check_callback(
    raw: &str,
    policy: &CallbackPolicy,
    resolver: &dyn Resolver,
) -> Result<CheckedUrl, String> {
    if raw.len() > MAX_CALLBACK_URL {
        return Err(format!(
            "callbackUrl is longer than {MAX_CALLBACK_URL} bytes"
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("callbackUrl is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("callbackUrl must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "callbackUrl must not carry credentials; the signature authenticates deliveries".into(),
        );
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if policy.allow_hosts.contains(&name) {
                return Ok(CheckedUrl {
                    url,
                    addrs: Vec::new(),
                });
            }
            if name == "localhost" || name.ends_with(".localhost") {
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
            } else {
                resolver
                    .resolve(&name, port)
                    .await
                    .map_err(|e| format!("callbackUrl's host {name} does not resolve: {e}"))?
            }
        }
        None => return Err("callbackUrl has no host".into()),
    };
    if addrs.is_empty() {
        return Err("callbackUrl's host resolves to no address".into());
    }
    // Every address: a name that answers one public and one private address
    // could be sent to either.
    for ip in &addrs {
        policy.allows(*ip)?;
    }
    let addrs = addrs
        .into_iter()
        .map(|ip| std::net::SocketAddr::new(ip, port))
        .collect();
    Ok(CheckedUrl { url, addrs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Answers from a table; never touches the network.
    struct Stub(HashMap<&'static str, Vec<IpAddr>>);

    #[async_trait]
    impl Resolver for Stub {
        async fn resolve(&self, host: &str, _: u16) -> Result<Vec<IpAddr>, String> {
            self.0
                .get(host)
                .cloned()
                .ok_or_else(|| "no such host".to_owned())
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn stub() -> Stub {
        Stub(HashMap::from([
            ("hooks.example.org", vec![ip("93.184.215.14")]),
            ("internal.example.org", vec![ip("10.1.2.3")]),
            (
                "rebind.example.org",
                vec![ip("93.184.215.14"), ip("169.254.169.254")],
            ),
            ("v6.example.org", vec![ip("2606:4700::6810:84e5")]),
            ("ula.example.org", vec![ip("fd12:3456::1")]),
        ]))
    }

    #[test]
    fn non_public_addresses_are_refused_with_a_reason() {
        for (addr, reason) in [
            ("10.0.0.1", "private"),
            ("172.16.5.4", "private"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "metadata"),
            ("169.254.170.2", "metadata"),
            ("169.254.1.1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("240.0.0.1", "reserved"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "carrier-grade"),
            ("198.18.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "metadata"),
            ("fc00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::a00:1", "private"),
            ("2001:db8::1", "documentation"),
        ] {
            let why = forbidden(ip(addr)).unwrap_or_else(|| panic!("{addr} allowed"));
            assert!(why.contains(reason), "{addr}: {why}");
        }
        for addr in [
            "93.184.215.14",
            "8.8.8.8",
            "2606:4700::6810:84e5",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(forbidden(ip(addr)), None, "{addr}");
        }
    }

    #[tokio::test]
    async fn callback_urls_are_checked_on_every_address_they_resolve_to() {
        let r = stub();
        let cloud = CallbackPolicy::default();
        let ok = |u: &'static str| {
            let (r, p) = (&r, &cloud);
            async move { check_callback(u, p, r).await }
        };
        assert!(ok("https://hooks.example.org/lotsawa").await.is_ok());
        assert!(ok("http://v6.example.org:8443/x").await.is_ok());
        assert!(ok("https://93.184.215.14/x").await.is_ok());
        for (u, part) in [
            ("https://internal.example.org/x", "private"),
            ("https://rebind.example.org/x", "metadata"),
            ("https://ula.example.org/x", "unique local"),
            ("http://169.254.169.254/latest/meta-data", "metadata"),
            ("http://[::1]:9000/x", "loopback"),
            ("http://localhost:9000/x", "loopback"),
            ("http://127.0.0.1:9000/x", "loopback"),
            ("ftp://hooks.example.org/x", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("https://user:pw@hooks.example.org/x", "credentials"),
            ("https://nowhere.example.org/x", "does not resolve"),
            ("not a url", "not a URL"),
        ] {
            let e = ok(u).await.expect_err(u);
            assert!(e.contains(part), "{u}: {e}");
        }
        let long = format!("https://hooks.example.org/{}", "a".repeat(MAX_CALLBACK_URL));
        assert!(check_callback(&long, &cloud, &r).await.is_err());
    }

    #[tokio::test]
    async fn operators_may_allow_loopback_networks_and_hosts() {
        let r = stub();
        let local = CallbackPolicy::with_allow_list(true, "").expect("policy");
        assert!(
            check_callback("http://127.0.0.1:9000/x", &local, &r)
                .await
                .is_ok()
        );
        assert!(
            check_callback("http://localhost:9000/x", &local, &r)
                .await
                .is_ok()
        );
        assert!(
            check_callback("http://[::1]:9000/x", &local, &r)
                .await
                .is_ok()
        );
        // Loopback allowed is not private allowed.
        assert!(
            check_callback("https://internal.example.org/x", &local, &r)
                .await
                .is_err()
        );
        let listed =
            CallbackPolicy::with_allow_list(false, "10.0.0.0/8, internal.example.org,192.168.7.7")
                .expect("policy");
        assert!(
            check_callback("https://10.9.9.9/x", &listed, &r)
                .await
                .is_ok()
        );
        assert!(
            check_callback("https://192.168.7.7/x", &listed, &r)
                .await
                .is_ok()
        );
        assert!(
            check_callback("https://192.168.7.8/x", &listed, &r)
                .await
                .is_err()
        );
        assert!(
            check_callback("https://Internal.Example.org./x", &listed, &r)
                .await
                .is_ok()
        );
        assert!(
            check_callback("http://169.254.169.254/", &listed, &r)
                .await
                .is_err()
        );
        assert!(CallbackPolicy::with_allow_list(false, "a b").is_err());
    }

    #[test]
    fn signatures_verify_and_refuse_tampering_staleness_and_garbage() {
        let body = br#"{"type":"job.completed"}"#;
        let header = signature(b"s3cret", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(verify(b"s3cret", &header, body, 1_700_000_100, 300), Ok(()));
        assert_eq!(
            verify(b"s3cret", &header, b"{}", 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &header, body, 1_700_001_000, 300),
            Err(SignatureError::Stale)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz"] {
            assert_eq!(
                verify(b"s3cret", bad, body, 1, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        // The known answer, computed independently:
        // printf '1700000000.{"type":"job.completed"}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            &header["t=1700000000,v1=".len()..],
            KNOWN_TAG,
            "HMAC-SHA256 over \"<t>.<body>\""
        );
    }

    #[test]
    fn events_carry_the_summary_and_never_the_texts() {
        let new = crate::job::NewJob {
            trace: None,
            tenant: crate::auth::Tenant::default(),
            kind: crate::job::JobType::Translation,
            source: crate::job::SourceText::parse("བྱང་ཆུབ་སེམས་དཔའ། secret-source".into())
                .expect("text"),
            config: crate::job::JobConfig::default(),
        };
        let engine = crate::job::EngineName::parse("echo").expect("engine");
        let (mut job, _) = crate::pipeline::new_job(new, engine, chrono::Utc::now());
        job.status = JobStatus::Failed;
        job.error = Some("provider_unavailable: the provider answered HTTP 503".into());
        let e = job_event(EventKind::terminal(job.status).expect("terminal"), &job);
        assert_eq!(e["type"], "job.failed");
        assert_eq!(e["jobId"], job.id.to_string());
        assert_eq!(e["errorCode"], "provider_unavailable");
        assert_eq!(e["links"]["result"], Value::Null);
        let text = e.to_string();
        assert!(
            !text.contains("secret-source") && !text.contains("བྱང"),
            "{text}"
        );
        assert_eq!(EventKind::terminal(JobStatus::Processing), None);
    }

    const KNOWN_TAG: &str = "20ca7f183c6cd9a54b1cc29dacda7d148ede7d219201305c76a4f8196f56cb2d";
}
