//! Bearer-token authentication: HS256 with a shared secret, or RS256/ES256 with keys from a
//! JWKS URL (cached, refreshed periodically and when an unknown `kid` shows up).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use stock_graphql::{Caller, Scope};
use tokio::sync::RwLock;

/// Why a request is not authenticated; the message goes into `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("a bearer token is required (Authorization: Bearer <JWT>)")]
    Missing,
    /// The token is not acceptable.
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

impl AuthError {
    /// The `WWW-Authenticate` header value (RFC 6750).
    pub fn www_authenticate(&self) -> String {
        match self {
            Self::Missing => "Bearer realm=\"wdt-gateway\"".into(),
            Self::Invalid(reason) => {
                format!(
                    "Bearer realm=\"wdt-gateway\", error=\"invalid_token\", error_description=\"{}\"",
                    reason.replace('"', "'")
                )
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    /// Required (checked by the validation; a NumericDate may have decimals); kept to bound the
    /// verified-token cache.
    exp: f64,
    sub: Option<String>,
    /// RFC 9068 / OAuth client-credential tokens name the client here when there is no `sub`.
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<serde_json::Value>,
    /// Checked by hand: the validation would accept an array here, which RFC 7519 §4.1.1 does
    /// not allow.
    #[serde(default)]
    iss: Option<serde_json::Value>,
    /// Issued-at: a token issued in the future (beyond the leeway) is refused.
    #[serde(default)]
    iat: Option<serde_json::Value>,
    /// The other claims, among them the tenant claim (its name is configured).
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// The tenant claim of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantClaim {
    /// No tenant claim: the `default` tenant.
    Absent,
    /// The tenant named.
    Named(Arc<str>),
    /// A claim that is not a string: no tenant.
    Invalid,
}

/// What a verified token says: the caller and its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Subject and scopes.
    pub caller: Caller,
    /// The tenant claim.
    pub tenant: TenantClaim,
    /// The token's `exp`, Unix seconds rounded down (it is accepted until then plus the
    /// leeway, [`Authenticator::leeway`]).
    pub expires_at: u64,
}

/// Refuses JOSE headers this verifier does not understand: `crit` names extensions that must be
/// understood (RFC 7515 §4.1.11) and none is; `b64` (RFC 7797) changes what was signed.
fn check_header(token: &str) -> Result<(), AuthError> {
    use base64::Engine as _;
    let malformed = || AuthError::Invalid("the token is malformed".into());
    let segment = token.split('.').next().ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| malformed())?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if header.contains_key("crit") {
        return Err(AuthError::Invalid(
            "the token's header lists critical extensions (crit) this gateway does not understand"
                .into(),
        ));
    }
    if header.contains_key("b64") {
        return Err(AuthError::Invalid(
            "the token uses the unencoded-payload option (b64), which is not accepted".into(),
        ));
    }
    Ok(())
}

/// `iss` must be a string (when present) and `iat` must not lie in the future beyond `leeway`.
fn check_claims(claims: &Claims, now: u64, leeway: u64) -> Result<(), AuthError> {
    match &claims.iss {
        None | Some(serde_json::Value::String(_)) => {}
        Some(_) => {
            return Err(AuthError::Invalid(
                "the token's issuer (iss) must be a string".into(),
            ));
        }
    }
    match &claims.iat {
        None => {}
        Some(serde_json::Value::Number(n)) => {
            let iat = n.as_f64().unwrap_or(f64::INFINITY);
            #[allow(clippy::cast_precision_loss, reason = "seconds since 1970 fit an f64")]
            let latest = now.saturating_add(leeway) as f64;
            if iat > latest {
                return Err(AuthError::Invalid(
                    "the token was issued in the future (iat); check the issuer's clock".into(),
                ));
            }
        }
        Some(_) => {
            return Err(AuthError::Invalid(
                "the token's issued-at time (iat) must be a number".into(),
            ));
        }
    }
    Ok(())
}

/// What a minted token says.
#[derive(Debug, Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Checks bearer tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    /// The claim naming the tenant.
    tenant_claim: String,
    /// Tokens verified lately, by their XXH3-128 (never the token itself), with their `exp`.
    verified: VerifiedTokens,
}

/// How long a verified token is trusted without checking its signature again. Short, so that a
/// key rotated out of the JWKS stops being accepted soon; the token's own `exp` still applies.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

struct VerifiedTokens(moka::sync::Cache<u128, (Verified, u64)>);

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("entries", &self.0.entry_count())
            .finish()
    }
}

impl VerifiedTokens {
    fn new() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(VERIFIED_TTL)
                .build(),
        )
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

enum Keys {
    Secret(DecodingKey),
    Jwks(JwksKeys),
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::Jwks(j) => f
                .debug_struct("Jwks")
                .field("url", &j.url)
                .finish_non_exhaustive(),
        }
    }
}

type KeyMap = HashMap<String, (DecodingKey, Algorithm)>;

struct JwksKeys {
    url: String,
    http: reqwest::Client,
    /// Keys by id, and when they were fetched.
    keys: RwLock<(KeyMap, Option<Instant>)>,
    /// Held while fetching on demand; the time of the last on-demand attempt.
    fetch_lock: tokio::sync::Mutex<Option<Instant>>,
}

/// The shortest time between two JWKS fetches caused by unknown key ids.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);

impl Authenticator {
    /// HS256 with a shared secret; the tenant is named by the claim `tenant_claim`.
    pub fn secret(
        secret: &SecretString,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: u64,
        tenant_claim: &str,
    ) -> Self {
        let keys = Keys::Secret(DecodingKey::from_secret(secret.expose_secret().as_bytes()));
        Self {
            inner: Arc::new(Inner {
                keys,
                issuer,
                audience,
                leeway,
                tenant_claim: tenant_claim.to_owned(),
                verified: VerifiedTokens::new(),
            }),
        }
    }

    /// RS256/ES256 keys from `url`. Keys are fetched on first use and every `refresh`; the
    /// tenant is named by the claim `tenant_claim`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn jwks(
        url: String,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: u64,
        refresh: Duration,
        tenant_claim: &str,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {}", e.without_url()))?;
        let keys = Keys::Jwks(JwksKeys {
            url,
            http,
            keys: RwLock::new((HashMap::new(), None)),
            fetch_lock: tokio::sync::Mutex::new(None),
        });
        let this = Self {
            inner: Arc::new(Inner {
                keys,
                issuer,
                audience,
                leeway,
                tenant_claim: tenant_claim.to_owned(),
                verified: VerifiedTokens::new(),
            }),
        };
        let weak = Arc::downgrade(&this.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { break };
                if let Keys::Jwks(j) = &inner.keys {
                    match j.refresh().await {
                        // Keys may have been withdrawn: verify every token again.
                        Ok(()) => inner.verified.0.invalidate_all(),
                        Err(e) => tracing::warn!(
                            error = %e,
                            "JWKS refresh failed; keeping the keys we have"
                        ),
                    }
                }
                drop(inner);
                tokio::time::sleep(refresh).await;
            }
        });
        Ok(this)
    }

    /// The clock leeway allowed past `exp` (and before `nbf`), seconds.
    pub fn leeway(&self) -> u64 {
        self.inner.leeway
    }

    /// The caller a request's `Authorization` header proves.
    ///
    /// # Errors
    /// [`AuthError::Missing`] or [`AuthError::Invalid`].
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Verified, AuthError> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let value = value
            .to_str()
            .map_err(|_| AuthError::Invalid("the Authorization header is not ASCII".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AuthError::Invalid("use the Bearer scheme: Authorization: Bearer <JWT>".into())
            })?;
        self.verify(token).await
    }

    /// Verifies a token and reads its subject, scopes and tenant.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] with the reason.
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        // A token verified in the last minute is trusted until its `exp` (with the leeway):
        // the same checks would give the same answer, minus the signature's cost.
        let key = xxhash_rust::xxh3::xxh3_128(token.as_bytes());
        if let Some((caller, exp)) = self.inner.verified.0.get(&key)
            && unix_now() <= exp.saturating_add(self.inner.leeway)
        {
            return Ok(caller);
        }
        let (caller, exp) = self.verify_signature(token).await?;
        self.inner.verified.0.insert(key, (caller.clone(), exp));
        Ok(caller)
    }

    async fn verify_signature(&self, token: &str) -> Result<(Verified, u64), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(reason(&e)))?;
        check_header(token)?;
        let (keys, alg) = match &self.inner.keys {
            Keys::Secret(key) => (vec![(key.clone(), Algorithm::HS256)], Algorithm::HS256),
            Keys::Jwks(j) => (
                j.keys_for(header.kid.as_deref(), header.alg).await?,
                header.alg,
            ),
        };
        if header.alg != alg || keys.iter().any(|(_, a)| *a != alg) {
            return Err(AuthError::Invalid(format!(
                "the {:?} algorithm is not accepted here",
                header.alg
            )));
        }
        let mut validation = Validation::new(alg);
        let mut required = vec!["exp"];
        if self.inner.issuer.is_some() {
            required.push("iss");
        }
        if self.inner.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = self.inner.leeway;
        validation.validate_nbf = true;
        if let Some(iss) = &self.inner.issuer {
            validation.set_issuer(&[iss]);
        }
        match &self.inner.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let mut outcome = Err(AuthError::Invalid("the token cannot be verified".into()));
        for (key, _) in &keys {
            outcome = jsonwebtoken::decode::<Claims>(token, key, &validation)
                .map_err(|e| AuthError::Invalid(reason(&e)));
            if outcome.is_ok() {
                break;
            }
        }
        let data = outcome?;
        let claims = data.claims;
        check_claims(&claims, unix_now(), self.inner.leeway)?;
        let mut names: Vec<String> = claims
            .scope
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        match claims.scp {
            Some(serde_json::Value::Array(list)) => names.extend(
                list.into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            ),
            Some(serde_json::Value::String(s)) => {
                names.extend(s.split_whitespace().map(str::to_owned))
            }
            _ => {}
        }
        let scopes: BTreeSet<Scope> = names.iter().filter_map(|n| Scope::parse(n)).collect();
        // The subject keys the per-client rate limit and the logs: a token must name one.
        let subject = [claims.sub, claims.client_id, claims.azp]
            .into_iter()
            .flatten()
            .find(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                AuthError::Invalid("the token names no subject (sub or client_id)".into())
            })?;
        // Whole seconds, rounded down: the cache never outlives the token.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a validated exp is a positive time"
        )]
        let exp = claims.exp.max(0.0).floor() as u64;
        let tenant = match claims.other.get(&self.inner.tenant_claim) {
            None => TenantClaim::Absent,
            Some(serde_json::Value::String(name)) => TenantClaim::Named(Arc::from(name.as_str())),
            Some(_) => TenantClaim::Invalid,
        };
        Ok((
            Verified {
                caller: Caller { subject, scopes },
                tenant,
                expires_at: exp,
            },
            exp,
        ))
    }
}

fn reason(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::InvalidAudience => "the token is for another audience (aud)".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer (iss)".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the algorithm is not accepted".into()
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "the token is malformed".into(),
        _ => "the token cannot be verified".into(),
    }
}

impl JwksKeys {
    async fn refresh(&self) -> Result<(), String> {
        let set = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("cannot fetch the JWKS: {}", e.without_url()))?
            .bytes()
            .await
            .map_err(|e| format!("cannot read the JWKS: {}", e.without_url()))?;
        let set: JwkSet =
            serde_json::from_slice(&set).map_err(|e| format!("the JWKS is not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let alg = match jwk.common.key_algorithm.map(|a| a.to_string()).as_deref() {
                Some("RS256") => Algorithm::RS256,
                Some("ES256") => Algorithm::ES256,
                Some(_) => continue,
                None => match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => continue,
                },
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(
                    jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}")),
                    (key, alg),
                );
            }
        }
        *self.keys.write().await = (keys, Some(Instant::now()));
        Ok(())
    }

    /// The keys that may have signed a token: the one with its `kid`, or, without a `kid`,
    /// every key of its algorithm. An unknown key id fetches the JWKS again, at most once per
    /// `JWKS_MIN_REFETCH` however many requests ask (failed fetches count too).
    async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<(DecodingKey, Algorithm)>, AuthError> {
        if !matches!(alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Invalid(format!(
                "the {alg:?} algorithm is not accepted here; use RS256 or ES256"
            )));
        }
        let lookup = |map: &KeyMap| -> Vec<(DecodingKey, Algorithm)> {
            match kid {
                Some(kid) => map.get(kid).cloned().into_iter().collect(),
                None => map.values().filter(|(_, a)| *a == alg).cloned().collect(),
            }
        };
        let found = lookup(&self.keys.read().await.0);
        if !found.is_empty() {
            return Ok(found);
        }
        {
            let mut last_attempt = self.fetch_lock.lock().await;
            // Someone else may have fetched while we waited.
            let found = lookup(&self.keys.read().await.0);
            if !found.is_empty() {
                return Ok(found);
            }
            if last_attempt.is_none_or(|t| t.elapsed() >= JWKS_MIN_REFETCH) {
                *last_attempt = Some(Instant::now());
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "JWKS fetch failed");
                    return Err(AuthError::Invalid(
                        "the signing keys cannot be fetched right now".into(),
                    ));
                }
            }
        }
        let found = lookup(&self.keys.read().await.0);
        if found.is_empty() {
            return Err(AuthError::Invalid(
                "the token's key id (kid) is not in the JWKS".into(),
            ));
        }
        Ok(found)
    }
}

/// What a minted token says besides its subject and scopes.
#[derive(Debug, Clone, Copy, Default)]
pub struct MintOptions<'a> {
    /// `iss`.
    pub issuer: Option<&'a str>,
    /// `aud`.
    pub audience: Option<&'a str>,
    /// The tenant (the claim `tenant`); `None`: the `default` tenant.
    pub tenant: Option<&'a str>,
}

/// Mints an HS256 token (for `wdt-gateway token` and demo mode).
///
/// # Errors
/// When signing fails.
pub fn mint(
    secret: &SecretString,
    subject: &str,
    scopes: &[&str],
    ttl: Duration,
    options: MintOptions<'_>,
) -> Result<String, String> {
    let MintOptions {
        issuer,
        audience,
        tenant,
    } = options;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = MintClaims {
        sub: subject,
        scope: scopes.join(" "),
        tenant,
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
        iss: issuer,
        aud: audience,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("0123456789abcdef0123456789abcdef")
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_their_scopes() {
        let auth = Authenticator::secret(&secret(), None, None, 0, "tenant");
        let token = mint(
            &secret(),
            "alice",
            &["stock:read", "unknown:scope"],
            Duration::from_secs(60),
            MintOptions {
                issuer: None,
                audience: None,
                tenant: None,
            },
        )
        .unwrap();
        let verified = auth.verify(&token).await.unwrap();
        assert_eq!(verified.tenant, TenantClaim::Absent);
        let caller = verified.caller;
        assert_eq!(caller.subject, "alice");
        assert!(caller.has(Scope::StockRead) && !caller.has(Scope::StockWrite));
    }

    #[tokio::test]
    async fn the_tenant_comes_from_the_configured_claim() {
        let hs = serde_json::json!({ "alg": "HS256", "typ": "JWT" });
        let exp = unix_now() + 60;
        let token = |claims: serde_json::Value| raw_token(&hs, &claims);
        let auth = Authenticator::secret(&secret(), None, None, 0, "tenant");
        let named = token(serde_json::json!({ "sub": "a", "exp": exp, "tenant": "acme" }));
        assert_eq!(
            auth.verify(&named).await.unwrap().tenant,
            TenantClaim::Named("acme".into())
        );
        let number = token(serde_json::json!({ "sub": "a", "exp": exp, "tenant": 7 }));
        assert_eq!(
            auth.verify(&number).await.unwrap().tenant,
            TenantClaim::Invalid
        );
        // Another claim name: `tenant` is then an ordinary claim.
        let custom = Authenticator::secret(&secret(), None, None, 0, "https://example.com/org");
        let both = token(
            serde_json::json!({ "sub": "a", "exp": exp, "tenant": "acme", "https://example.com/org": "globex" }),
        );
        assert_eq!(
            custom.verify(&both).await.unwrap().tenant,
            TenantClaim::Named("globex".into())
        );
        assert_eq!(
            custom.verify(&named).await.unwrap().tenant,
            TenantClaim::Absent
        );
        let minted = mint(
            &secret(),
            "a",
            &[],
            Duration::from_secs(60),
            MintOptions {
                tenant: Some("acme"),
                ..MintOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            auth.verify(&minted).await.unwrap().tenant,
            TenantClaim::Named("acme".into())
        );
    }

    /// An HS256 token with exactly this header and these claims.
    fn raw_token(header: &serde_json::Value, claims: &serde_json::Value) -> String {
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let input = format!("{}.{}", b64(header), b64(claims));
        let key = EncodingKey::from_secret(secret().expose_secret().as_bytes());
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{input}.{signature}")
    }

    #[tokio::test]
    async fn headers_and_claims_it_does_not_understand_are_refused() {
        let auth = Authenticator::secret(&secret(), Some("idp".into()), None, 30, "tenant");
        let now = unix_now();
        let good = serde_json::json!({"sub": "a", "iss": "idp", "exp": now + 60, "iat": now});
        let hs = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        assert!(
            auth.verify(&raw_token(&hs, &good)).await.is_ok(),
            "the control token verifies"
        );
        let cases = [
            (
                serde_json::json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
                good.clone(),
                "crit",
            ),
            (
                serde_json::json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
                good.clone(),
                "crit",
            ),
            (
                serde_json::json!({"alg": "HS256", "b64": true}),
                good.clone(),
                "b64",
            ),
            (
                hs.clone(),
                serde_json::json!({"sub": "a", "iss": ["idp"], "exp": now + 60}),
                "iss",
            ),
            (
                hs.clone(),
                serde_json::json!({"sub": "a", "iss": "idp", "exp": now + 600, "iat": now + 120}),
                "iat",
            ),
            (
                hs.clone(),
                serde_json::json!({"sub": "a", "iss": "idp", "exp": now + 600, "iat": "yesterday"}),
                "iat",
            ),
        ];
        for (header, claims, needle) in cases {
            let token = raw_token(&header, &claims);
            let error = auth.verify(&token).await.unwrap_err().to_string();
            assert!(error.contains(needle), "{header} {claims}: {error}");
        }
        // Within the leeway, a clock a little ahead is fine.
        let skewed =
            serde_json::json!({"sub": "a", "iss": "idp", "exp": now + 600, "iat": now + 20});
        assert!(auth.verify(&raw_token(&hs, &skewed)).await.is_ok());
    }

    #[tokio::test]
    async fn verified_tokens_are_remembered_until_their_exp() {
        let auth = Authenticator::secret(&secret(), None, None, 5, "tenant");
        let token = mint(
            &secret(),
            "bob",
            &["stock:read"],
            Duration::from_secs(60),
            MintOptions {
                issuer: None,
                audience: None,
                tenant: None,
            },
        )
        .unwrap();
        let caller = auth.verify(&token).await.unwrap();
        let key = xxhash_rust::xxh3::xxh3_128(token.as_bytes());
        let (cached, exp) = auth.inner.verified.0.get(&key).expect("remembered");
        assert_eq!(cached, caller);
        assert!(exp > unix_now() + 50 && exp <= unix_now() + 60);
        // A forged token is refused; had it been remembered, it would be answered from memory,
        // but only until its exp (plus leeway).
        let forged = format!("{}x", &token[..token.len() - 1]);
        assert!(auth.verify(&forged).await.is_err());
        let forged_key = xxhash_rust::xxh3::xxh3_128(forged.as_bytes());
        auth.inner
            .verified
            .0
            .insert(forged_key, (caller.clone(), unix_now() + 60));
        assert!(auth.verify(&forged).await.is_ok(), "the cache is consulted");
        auth.inner
            .verified
            .0
            .insert(forged_key, (caller, unix_now() - 6));
        assert!(
            auth.verify(&forged).await.is_err(),
            "past its exp and leeway, a remembered token is verified again"
        );
    }

    #[tokio::test]
    async fn refusals() {
        let auth = Authenticator::secret(
            &secret(),
            Some("issuer-a".into()),
            Some("aud-a".into()),
            0,
            "tenant",
        );
        let good = mint(
            &secret(),
            "a",
            &[],
            Duration::from_secs(60),
            MintOptions {
                issuer: Some("issuer-a"),
                audience: Some("aud-a"),
                tenant: None,
            },
        )
        .unwrap();
        assert!(auth.verify(&good).await.is_ok());
        let other_aud = mint(
            &secret(),
            "a",
            &[],
            Duration::from_secs(60),
            MintOptions {
                issuer: Some("issuer-a"),
                audience: Some("aud-b"),
                tenant: None,
            },
        )
        .unwrap();
        assert_eq!(
            auth.verify(&other_aud).await,
            Err(AuthError::Invalid(
                "the token is for another audience (aud)".into()
            ))
        );
        let other_iss = mint(
            &secret(),
            "a",
            &[],
            Duration::from_secs(60),
            MintOptions {
                issuer: Some("issuer-b"),
                audience: Some("aud-a"),
                tenant: None,
            },
        )
        .unwrap();
        assert!(
            matches!(auth.verify(&other_iss).await, Err(AuthError::Invalid(m)) if m.contains("issuer"))
        );
        let wrong_key = mint(
            &SecretString::from("another-secret-another-secret-xx"),
            "a",
            &[],
            Duration::from_secs(60),
            MintOptions {
                issuer: Some("issuer-a"),
                audience: Some("aud-a"),
                tenant: None,
            },
        )
        .unwrap();
        assert!(
            matches!(auth.verify(&wrong_key).await, Err(AuthError::Invalid(m)) if m.contains("signature"))
        );
        assert!(auth.verify("not.a.token").await.is_err());
        let headers = HeaderMap::new();
        assert_eq!(auth.authenticate(&headers).await, Err(AuthError::Missing));
    }

    /// Any JSON value, a few levels deep, with the claim names the verifier reads.
    fn claim_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::String),
            (-100i64..100).prop_map(|d| serde_json::Value::from(unix_now().cast_signed() + d)),
        ];
        leaf.prop_recursive(2, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn claims() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let name = prop_oneof![
            proptest::sample::select(vec![
                "exp",
                "sub",
                "client_id",
                "azp",
                "scope",
                "scp",
                "iss",
                "iat",
                "nbf",
                "aud",
                "tenant",
            ])
            .prop_map(str::to_owned),
            "[a-z]{1,6}",
        ];
        proptest::collection::btree_map(name, claim_json(), 0..8)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A refusal carries a reason that fits in `WWW-Authenticate` as it is.
    fn clear(refusal: &AuthError) -> Result<(), proptest::test_runner::TestCaseError> {
        let AuthError::Invalid(reason) = refusal else {
            return Err(proptest::test_runner::TestCaseError::fail(format!(
                "{refusal:?}: a token is refused as invalid"
            )));
        };
        proptest::prop_assert!(!reason.trim().is_empty());
        proptest::prop_assert!(
            axum::http::HeaderValue::from_str(&refusal.www_authenticate()).is_ok(),
            "{refusal:?}"
        );
        Ok(())
    }

    proptest::proptest! {
        /// Any claims, correctly signed, are accepted or refused with a clear reason, never a
        /// panic; what is accepted has a numeric `exp` still to come and names a subject.
        #[test]
        fn arbitrary_claims_are_accepted_or_refused_clearly(claims in claims(), iss in proptest::bool::ANY) {
            let auth = Authenticator::secret(&secret(), iss.then(|| "idp".into()), None, 0, "tenant");
            let hs = serde_json::json!({ "alg": "HS256", "typ": "JWT" });
            let token = raw_token(&hs, &claims);
            match runtime().block_on(auth.verify(&token)) {
                Ok(verified) => {
                    let exp = claims["exp"].as_f64().unwrap_or(-1.0);
                    proptest::prop_assert!(exp >= unix_now() as f64 - 1.0, "{}", claims);
                    proptest::prop_assert!(!verified.caller.subject.trim().is_empty());
                    proptest::prop_assert!(!iss || claims["iss"] == "idp", "{}", claims);
                }
                Err(refusal) => clear(&refusal)?,
            }
        }

        /// Any text as a token, including three base64 segments of anything, is refused with a
        /// clear reason and never panics.
        #[test]
        fn arbitrary_tokens_are_refused_clearly(
            text in "\\PC{0,80}",
            parts in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 1..5),
        ) {
            use base64::Engine as _;
            let auth = Authenticator::secret(&secret(), None, None, 0, "tenant");
            let dotted = parts
                .iter()
                .map(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(p))
                .collect::<Vec<_>>()
                .join(".");
            let rt = runtime();
            for token in [text.as_str(), dotted.as_str()] {
                let refusal = rt.block_on(auth.verify(token)).unwrap_err();
                clear(&refusal)?;
                let mut headers = HeaderMap::new();
                if let Ok(value) = axum::http::HeaderValue::from_str(&format!("Bearer {}", token)) {
                    headers.insert(axum::http::header::AUTHORIZATION, value);
                    let refusal = rt.block_on(auth.authenticate(&headers)).unwrap_err();
                    clear(&refusal)?;
                }
            }
        }
    }
}
