//! Secrets, on the ground floor: every module that holds one imports it from here. A secret is
//! only ever a reference in the config (`{env: NAME}` or `{file: PATH}`, never inline), resolved
//! at start into a [`Secret`] that has no `Display`, redacts its `Debug` and compares in
//! constant time. [`mask_url`] hides a URL's password for logs and errors.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::path::PathBuf;
use subtle::ConstantTimeEq;

/// Where a secret lives. Never the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "{{env: {n}}}"),
            SecretRef::File(p) => write!(f, "{{file: {}}}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretRefVisitor)
    }
}

struct SecretRefVisitor;

const INLINE_SECRET: &str = "inline secrets are not accepted: write {env: NAME} or {file: PATH}";

impl<'de> Visitor<'de> for SecretRefVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a secret reference, {env: NAME} or {file: PATH}")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretRef, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            env: Option<String>,
            file: Option<PathBuf>,
        }
        let raw = Raw::deserialize(de::value::MapAccessDeserializer::new(map))?;
        match (raw.env, raw.file) {
            (Some(n), None) if !n.is_empty() => Ok(SecretRef::Env(n)),
            (None, Some(p)) => Ok(SecretRef::File(p)),
            _ => Err(de::Error::custom("expected exactly one of `env: NAME` or `file: PATH`")),
        }
    }
}

impl SecretRef {
    /// Reads the secret. Errors name the variable or file, never a value.
    pub fn resolve(&self) -> Result<Secret, String> {
        let raw = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file {}: {}", path.display(), e.kind()))?,
        };
        let value = raw.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(format!("secret {self:?} is empty"));
        }
        Ok(Secret(value))
    }
}

/// A resolved secret. No `Display`; `Debug` is redacted; comparison is constant-time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A secret from a value the program already holds (tests, other secret stores).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        // Hash both sides so the comparison does not leak the secret's length.
        use sha2::{Digest, Sha256};
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(candidate);
        a.as_slice().ct_eq(b.as_slice()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A string that may be given inline or, when it holds a secret, by reference.
#[derive(Debug, Clone)]
pub enum Value {
    Plain(String),
    Secret(SecretRef),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, {env: NAME} or {file: PATH}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Plain(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
                SecretRefVisitor.visit_map(map).map(Value::Secret)
            }
        }
        d.deserialize_any(V)
    }
}

impl Value {
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Value::Plain(s) => Ok(s.clone()),
            Value::Secret(r) => r.resolve().map(|s| s.expose().to_string()),
        }
    }
}

/// A database URL with its password replaced by `****`, for logs and errors.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:****") } else { user.to_string() };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted_and_compare_works() {
        let s = Secret("tok-123".into());
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert!(s.ct_eq(b"tok-123"));
        assert!(!s.ct_eq(b"tok-124"));
        assert!(!s.ct_eq(b""));
    }

    #[test]
    fn masks_passwords_in_urls() {
        assert_eq!(mask_url("postgres://u:pw@h:5432/db?x=1"), "postgres://u:****@h:5432/db?x=1");
        assert_eq!(mask_url("sqlite://medic.db"), "sqlite://medic.db");
        assert_eq!(mask_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
