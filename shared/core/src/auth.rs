//! API keys and tenants: who may call the API, and whose jobs are whose.
//!
//! A key is `lts_<id>_<secret>`: `id` (12 hex digits) names it in lists and
//! revocations, `secret` (64 hex digits from two random v4 UUIDs and a
//! SHA-256) is never stored. Stores keep only the SHA-256 of the whole key,
//! so a leaked database or table gives no key; a key is found by its hash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::validation::ValidationError;

/// A tenant: the owner of jobs, named by the key that submitted them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

impl Tenant {
    /// The tenant of every job on a server without keys.
    pub const DEFAULT_NAME: &'static str = "default";

    /// Validate a name: 1 to 64 of `a-z`, `0-9`, `-` and `_`, starting with a
    /// letter or digit.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError(format!(
                "a tenant is 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit; got '{s}'"
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Self(Self::DEFAULT_NAME.to_owned())
    }
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Tenant {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> Self {
        t.0
    }
}

/// A stored key: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The public part of the key, which names it.
    pub id: String,
    /// Whose key it is.
    pub tenant: Tenant,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who makes a request: the tenant, and the key's id when keys are on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    /// Whose request.
    pub tenant: Tenant,
    /// The public id of the key it came with.
    pub key_id: Option<String>,
}

/// The SHA-256 of a key, hex: what stores keep and look keys up by.
pub fn key_hash(key: &str) -> String {
    crate::digest::sha256_hex(key.as_bytes())
}

/// A new key for `tenant`: the key (shown once) and its record.
pub fn new_key(tenant: Tenant, now: DateTime<Utc>) -> (String, ApiKeyRecord) {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let mut h = Sha256::new();
    h.update(uuid::Uuid::new_v4().as_bytes());
    h.update(uuid::Uuid::new_v4().as_bytes());
    let secret = crate::digest::hex(&h.finalize());
    let key = format!("lts_{id}_{secret}");
    (
        key,
        ApiKeyRecord {
            id,
            tenant,
            created_at: now,
            revoked_at: None,
        },
    )
}

/// Whether a string has a key's shape (checked before any store lookup).
pub fn looks_like_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("lts_") else {
        return false;
    };
    let Some((id, secret)) = rest.split_once('_') else {
        return false;
    };
    id.len() == 12
        && secret.len() == 64
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_validated() {
        assert!(Tenant::parse("acme-2").is_ok());
        assert!(Tenant::parse("a_b").is_ok());
        for bad in ["", "Acme", "-x", "a b", "é", &"x".repeat(65)] {
            assert!(Tenant::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Tenant::default().as_str(), "default");
    }

    #[test]
    fn keys_have_their_shape_and_are_stored_as_hashes() {
        let (key, rec) = new_key(Tenant::parse("acme").expect("tenant"), Utc::now());
        assert!(looks_like_key(&key), "{key}");
        assert!(key.starts_with(&format!("lts_{}_", rec.id)));
        let hash = key_hash(&key);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&key[17..]), "the hash is not the secret");
        let (other, _) = new_key(Tenant::default(), Utc::now());
        assert_ne!(key, other);
        assert_ne!(hash, key_hash(&other));
        assert!(!looks_like_key("lts_short_x"));
        assert!(!looks_like_key(&key.replace("lts_", "xyz_")));
    }
}
