//! Secrets and signatures, as the Standard Webhooks specification has them: secrets are
//! `whsec_` and the base64 of random bytes; each attempt is signed with HMAC-SHA256 over
//! `<webhook-id>.<webhook-timestamp>.<body>`, sent as `webhook-signature: v1,<base64>` (several,
//! space-separated, while a rotated secret still signs). The signing is the specification's own
//! Rust library.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Random bytes in a secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A signing secret, `whsec_…`. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// The secret's text, to give the partner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `v1,<signature>` of a message.
    fn sign(&self, id: &str, timestamp: i64, body: &str) -> Option<String> {
        let webhook = standardwebhooks::Webhook::new(&self.0).ok()?;
        webhook.sign(id, timestamp, body.as_bytes()).ok()
    }
}

/// The `webhook-signature` header of a message: one `v1,…` per secret that signs now.
pub(crate) fn signature(secrets: &[&Secret], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .filter_map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_whsec_and_32_random_bytes_and_never_debugged() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        let raw = a.expose().strip_prefix("whsec_").unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap()
                .len(),
            32
        );
        assert_eq!(format!("{a:?}"), "Secret(…)");
    }

    #[test]
    fn signatures_match_the_specification_vector() {
        // The vector of the specification's libraries.
        let secret = Secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into());
        let body = r#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            signature(
                &[&secret],
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                body
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        let other = Secret::generate();
        let both = signature(
            &[&secret, &other],
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            body,
        );
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert!(parts[1].starts_with("v1,"));
    }
}
