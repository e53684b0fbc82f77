//! The tenants file: one `[tenants.<name>]` table per ERP account, read and checked whole.
//!
//! ```toml
//! [tenants.acme]
//! flagship_url = "http://wdt.wangdian.cn/openapi"
//! sid = "acme"
//! appkey = "acme-key"
//! appsecret = "secret:salt"          # or appsecret_file = "/run/secrets/acme-flagship"
//! enterprise_url = "https://api.wangdian.cn/openapi2/"
//! enterprise_sid = "acme-e"
//! enterprise_appkey = "acme-ekey"
//! enterprise_appsecret = "esecret"   # or enterprise_appsecret_file
//! vendor_calls_per_minute = 600      # optional; the global default otherwise
//! ```
//!
//! Unknown keys are refused; a secret file's path is relative to the tenants file's folder.
//! Nothing here ever prints a secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::Account;

/// Longest tenant name.
pub const MAX_NAME: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenants: BTreeMap<String, Entry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Entry {
    flagship_url: Option<String>,
    sid: Option<String>,
    appkey: Option<String>,
    appsecret: Option<SecretString>,
    appsecret_file: Option<PathBuf>,
    enterprise_url: Option<String>,
    enterprise_sid: Option<String>,
    enterprise_appkey: Option<String>,
    enterprise_appsecret: Option<SecretString>,
    enterprise_appsecret_file: Option<PathBuf>,
    vendor_calls_per_minute: Option<u32>,
}

/// One tenant: its name, its ERP account(s) and its quota.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    /// The name tokens carry in their tenant claim.
    pub name: String,
    /// Flagship credentials.
    pub flagship: Option<Account>,
    /// Enterprise credentials.
    pub enterprise: Option<Account>,
    /// Calls per minute per vendor method; `None`: the global `vendor.calls_per_minute`.
    pub vendor_calls_per_minute: Option<u32>,
}

impl TenantSpec {
    /// A digest of everything that makes the tenant (secrets included; it never leaves the
    /// process): an unchanged digest keeps the tenant's service and caches on reload.
    pub fn fingerprint(&self) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut part = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        part(self.name.as_bytes());
        for account in [&self.flagship, &self.enterprise] {
            match account {
                None => part(b"-"),
                Some(a) => {
                    for field in [&a.url, &a.sid, &a.appkey] {
                        part(field.as_bytes());
                    }
                    part(a.appsecret.expose_secret().as_bytes());
                }
            }
        }
        part(&self.vendor_calls_per_minute.unwrap_or(0).to_le_bytes());
        h.digest128()
    }

    /// What names the ERP account in shared state (Redis keys): the tenant's name and a
    /// digest of its endpoints and seller accounts, never a secret.
    pub fn account_id(&self) -> String {
        let mut id = String::new();
        for account in [&self.flagship, &self.enterprise] {
            for part in account.iter().flat_map(|a| [&a.url, &a.sid, &a.appkey]) {
                id.push_str(part);
                id.push('\u{0}');
            }
            id.push('\u{1}');
        }
        format!(
            "{}:{:016x}",
            self.name,
            xxhash_rust::xxh3::xxh3_64(id.as_bytes())
        )
    }
}

/// Whether `name` can name a tenant: 1 to 64 ASCII letters, digits, `.`, `_` or `-`, starting
/// with a letter or digit (it appears in Redis keys, metrics and logs).
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Reads and checks the tenants file at `path`.
///
/// # Errors
/// What is wrong, naming the tenant and key (never a secret).
pub fn read(path: &Path) -> Result<Vec<TenantSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the tenants file {}: {}",
            path.display(),
            e.kind()
        )
    })?;
    parse(&text, path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("the tenants file {}: {e}", path.display()))
}

/// Parses and checks a tenants file's text; secret files are read relative to `dir`.
///
/// # Errors
/// What is wrong, naming the tenant and key (never a secret).
pub fn parse(text: &str, dir: &Path) -> Result<Vec<TenantSpec>, String> {
    use figment::providers::Format;
    let file: File = figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())?;
    let mut specs = Vec::with_capacity(file.tenants.len());
    for (name, entry) in file.tenants {
        if !valid_name(&name) {
            return Err(format!(
                "[tenants.{name:?}]: a tenant name is 1 to {MAX_NAME} ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
            ));
        }
        specs.push(spec(name, entry, dir)?);
    }
    check_accounts_are_distinct(&specs)?;
    Ok(specs)
}

fn spec(name: String, e: Entry, dir: &Path) -> Result<TenantSpec, String> {
    let at = |key: &str| format!("[tenants.{name}] {key}");
    let flagship = account(
        &name,
        [
            ("flagship_url", e.flagship_url),
            ("sid", e.sid),
            ("appkey", e.appkey),
        ],
        secret(&at("appsecret"), e.appsecret, e.appsecret_file, dir)?,
        "appsecret",
    )?;
    let enterprise = account(
        &name,
        [
            ("enterprise_url", e.enterprise_url),
            ("enterprise_sid", e.enterprise_sid),
            ("enterprise_appkey", e.enterprise_appkey),
        ],
        secret(
            &at("enterprise_appsecret"),
            e.enterprise_appsecret,
            e.enterprise_appsecret_file,
            dir,
        )?,
        "enterprise_appsecret",
    )?;
    if flagship.is_none() && enterprise.is_none() {
        return Err(format!(
            "[tenants.{name}] names no ERP account: give flagship_url, sid, appkey and appsecret, and/or enterprise_url, enterprise_sid, enterprise_appkey and enterprise_appsecret"
        ));
    }
    if let Some(a) = &flagship {
        wdt_client::FlagshipCredentials::new(&a.url, &a.sid, &a.appkey, &a.appsecret)
            .map_err(|e| format!("[tenants.{name}] flagship: {e}"))?;
    }
    if let Some(a) = &enterprise {
        wdt_client::EnterpriseCredentials::new(&a.url, &a.sid, &a.appkey, &a.appsecret)
            .map_err(|e| format!("[tenants.{name}] enterprise: {e}"))?;
    }
    if e.vendor_calls_per_minute == Some(0) {
        return Err(format!(
            "{} must be greater than 0 (leave it out for the global vendor.calls_per_minute)",
            at("vendor_calls_per_minute")
        ));
    }
    Ok(TenantSpec {
        name,
        flagship,
        enterprise,
        vendor_calls_per_minute: e.vendor_calls_per_minute,
    })
}

/// A secret given inline or in a file (read now; a trailing newline is not part of it).
fn secret(
    key: &str,
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    dir: &Path,
) -> Result<Option<SecretString>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("{key}: give the secret or {key}_file, not both")),
        (Some(s), None) => Ok(Some(s)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let path = dir.join(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{key}_file: cannot read {}: {}", path.display(), e.kind()))?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if value.trim().is_empty() {
                return Err(format!("{key}_file: {} is empty", path.display()));
            }
            Ok(Some(SecretString::from(value.to_owned())))
        }
    }
}

/// One family's credentials: all of them, or none.
fn account(
    tenant: &str,
    fields: [(&str, Option<String>); 3],
    secret: Option<SecretString>,
    secret_key: &str,
) -> Result<Option<Account>, String> {
    let given = fields.iter().any(|(_, v)| v.is_some()) || secret.is_some();
    if !given {
        return Ok(None);
    }
    let names = fields
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ");
    let missing = |key: &str| {
        format!("[tenants.{tenant}] {key} is missing: {names} and {secret_key} go together")
    };
    let [(k0, url), (k1, sid), (k2, appkey)] = fields;
    let text =
        |v: Option<String>, k: &str| v.filter(|s| !s.trim().is_empty()).ok_or_else(|| missing(k));
    Ok(Some(Account {
        url: text(url, k0)?,
        sid: text(sid, k1)?,
        appkey: text(appkey, k2)?,
        appsecret: secret
            .filter(|s| !s.expose_secret().is_empty())
            .ok_or_else(|| missing(secret_key))?,
    }))
}

/// Two tenants on one ERP account would share its per-minute quota at the vendor while each
/// believed it had it whole, and their writes could collide: refused.
fn check_accounts_are_distinct(specs: &[TenantSpec]) -> Result<(), String> {
    let mut seen: BTreeMap<(u8, &str, &str), &str> = BTreeMap::new();
    for spec in specs {
        for (family, account) in [(0, &spec.flagship), (1, &spec.enterprise)] {
            let Some(a) = account else { continue };
            if let Some(other) = seen.insert((family, a.url.as_str(), a.sid.as_str()), &spec.name) {
                let family = if family == 0 {
                    "flagship"
                } else {
                    "enterprise"
                };
                return Err(format!(
                    "tenants {other} and {} name the same {family} account (URL and sid): one ERP account, one tenant",
                    spec.name
                ));
            }
        }
    }
    Ok(())
}

/// Checks that the tenants of the file and the `fixed` tenants of the settings (the `default`
/// tenant of the single-account settings, when there is one) can be served together.
///
/// # Errors
/// What to fix.
pub fn check_with_fixed(specs: &[TenantSpec], fixed: &[TenantSpec]) -> Result<(), String> {
    if let Some(twice) = fixed
        .iter()
        .find(|f| specs.iter().any(|s| s.name == f.name))
    {
        return Err(format!(
            "the tenant {:?} is defined twice: by the single-account settings (WDT_SID, WDT_ENTERPRISE_SID, …) and in the tenants file; remove one",
            twice.name
        ));
    }
    if specs.is_empty() && fixed.is_empty() {
        return Err(
            "no tenant: the tenants file defines none and no single account (WDT_SID, …) is configured"
                .into(),
        );
    }
    let all: Vec<TenantSpec> = specs.iter().chain(fixed).cloned().collect();
    check_accounts_are_distinct(&all)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    const ACME: &str = r#"
[tenants.acme]
flagship_url = "http://wdt.example/openapi"
sid = "acme"
appkey = "acme-key"
appsecret = "hunter2:salt"
enterprise_url = "https://api.example/openapi2/"
enterprise_sid = "acme-e"
enterprise_appkey = "acme-ekey"
enterprise_appsecret = "esecret"
vendor_calls_per_minute = 600
"#;

    #[test]
    fn a_tenant_with_both_families() {
        let specs = parse(ACME, Path::new(".")).unwrap();
        assert_eq!(specs.len(), 1);
        let acme = &specs[0];
        assert_eq!(acme.name, "acme");
        assert_eq!(acme.vendor_calls_per_minute, Some(600));
        assert_eq!(acme.flagship.as_ref().unwrap().sid, "acme");
        assert_eq!(acme.enterprise.as_ref().unwrap().appkey, "acme-ekey");
        assert!(
            !format!("{specs:?}").contains("hunter2"),
            "no secret in Debug"
        );
        assert!(acme.account_id().starts_with("acme:"));
    }

    #[test]
    fn secrets_come_from_files_relative_to_the_tenants_file() {
        let dir = std::env::temp_dir().join(format!("wdt-tenants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("acme.secret"), "from-file:salt\n").unwrap();
        let text = r#"
[tenants.acme]
flagship_url = "http://wdt.example/openapi"
sid = "acme"
appkey = "k"
appsecret_file = "acme.secret"
"#;
        let specs = parse(text, &dir).unwrap();
        let secret = specs[0]
            .flagship
            .as_ref()
            .unwrap()
            .appsecret
            .expose_secret()
            .to_owned();
        assert_eq!(secret, "from-file:salt");
        let missing = parse(&text.replace("acme.secret", "nope.secret"), &dir).unwrap_err();
        assert!(
            missing.contains("appsecret_file") && missing.contains("not found"),
            "{missing}"
        );
        let both = parse(
            &text.replace("appkey = \"k\"", "appkey = \"k\"\nappsecret = \"x\""),
            &dir,
        )
        .unwrap_err();
        assert!(both.contains("not both"), "{both}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mistakes_are_refused_with_what_to_fix() {
        let dir = Path::new(".");
        for (text, says) in [
            (
                ACME.replace("appkey = \"acme-key\"", "app_key = \"x\""),
                "app_key",
            ),
            (
                ACME.replace("sid = \"acme\"\n", ""),
                "[tenants.acme] sid is missing",
            ),
            (
                ACME.replace("600", "0"),
                "vendor_calls_per_minute must be greater than 0",
            ),
            (ACME.replace("600", "\"many\""), "vendor_calls_per_minute"),
            (
                ACME.replace("[tenants.acme]", "[tenants.\"a b\"]"),
                "tenant name",
            ),
            (
                ACME.replace("http://wdt.example/openapi", "wdt.example"),
                "[tenants.acme] flagship",
            ),
            ("[tenants.empty]\n".to_owned(), "names no ERP account"),
            ("[tenant.acme]\nsid = \"x\"\n".to_owned(), "tenant"),
            ("not toml at all = = =".to_owned(), ""),
        ] {
            let refused = parse(&text, dir).unwrap_err();
            assert!(refused.contains(says), "{refused:?} should say {says:?}");
            assert!(!refused.contains("hunter2"), "{refused}");
        }
        let twice = format!(
            "{ACME}{}",
            ACME.replace("[tenants.acme]", "[tenants.other]")
        );
        let refused = parse(&twice, dir).unwrap_err();
        assert!(refused.contains("same flagship account"), "{refused}");
    }

    #[test]
    fn the_default_tenant_cannot_be_defined_twice() {
        let specs = parse(ACME, Path::new(".")).unwrap();
        let mut default = specs[0].clone();
        default.name = "default".into();
        assert!(
            check_with_fixed(&specs, std::slice::from_ref(&default))
                .unwrap_err()
                .contains("same flagship account")
        );
        let mut named = specs[0].clone();
        named.flagship = None;
        named.enterprise = None;
        assert!(
            check_with_fixed(&specs, &[named])
                .unwrap_err()
                .contains("defined twice")
        );
        assert!(check_with_fixed(&[], &[]).is_err());
        assert!(valid_name("acme-2.eu_west"));
        assert!(!valid_name("-acme") && !valid_name("") && !valid_name("a}b"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn the_fingerprint_changes_with_any_field_and_the_secret() {
        let a = parse(ACME, Path::new(".")).unwrap().remove(0);
        let rotated = parse(&ACME.replace("hunter2", "hunter3"), Path::new("."))
            .unwrap()
            .remove(0);
        assert_ne!(a.fingerprint(), rotated.fingerprint());
        assert_eq!(
            a.account_id(),
            rotated.account_id(),
            "same account, same keys"
        );
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    /// A change to one line of a good file: left out, its value replaced, its key misspelled.
    #[derive(Debug, Clone)]
    enum Change {
        Drop,
        Value(&'static str),
        Rename,
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Change::Drop),
            Just(Change::Rename),
            proptest::sample::select(vec![
                "0",
                "-1",
                "\"\"",
                "\" \"",
                "true",
                "[]",
                "{}",
                "\"x\"",
                "1.5",
                "\"nocolon\"",
            ])
            .prop_map(Change::Value),
        ]
    }

    proptest::proptest! {
        /// Any text is read or refused, never a panic; a refusal says something and never
        /// shows a secret.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}|(\\[tenants\\.[a-z]{1,3}\\]\n([a-z_]{1,24} = (\"[ -~]{0,12}\"|[0-9]{1,4}|true)\n){0,6}){0,3}") {
            let dir = Path::new("/nonexistent-tenants-dir");
            if let Err(refused) = parse(&text, dir) {
                proptest::prop_assert!(!refused.trim().is_empty());
            }
        }

        /// One line of a good file changed: the refusal names the key to fix (or the tenant and
        /// family whose account is incomplete) and never shows the secrets.
        #[test]
        fn a_changed_line_is_refused_naming_its_key(line in 0usize..10, change in change()) {
            let lines: Vec<&str> = ACME.lines().filter(|l| l.contains(" = ")).collect();
            let target = lines[line % lines.len()];
            let key = target.split(" = ").next().unwrap_or_default();
            let changed: String = ACME
                .lines()
                .filter_map(|l| {
                    if l != target {
                        return Some(l.to_owned());
                    }
                    match &change {
                        Change::Drop => None,
                        Change::Value(v) => Some(format!("{} = {}", key, v)),
                        Change::Rename => Some(format!("{}x = \"x\"", key)),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            if let Err(refused) = parse(&changed, Path::new(".")) {
                let family = if key.starts_with("enterprise") { "enterprise" } else { "flagship" };
                proptest::prop_assert!(
                    refused.contains(key) || refused.contains(&format!("[tenants.acme] {family}")),
                    "{}\n{:?} should name {}", changed, refused, key
                );
                proptest::prop_assert!(!refused.contains("hunter2") && !refused.contains("esecret"), "{}", refused);
            }
        }
    }
}
