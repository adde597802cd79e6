//! SCRAM-SHA-256 (and -PLUS with TLS) against the users of proxy.toml.
//! Unknown users go through the same exchange with a made-up verifier, so
//! they get the same answer as a wrong password. The salt a password user
//! and an unknown name get is the same keyed function of the name and the
//! ledger's secret: stable across attempts, reloads and restarts for both,
//! so no salt tells a real name from a made-up one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dpgate_config::{Config, Secret, Token};
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramSecret, SCRAM_ITERATIONS};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use ring::{digest, hmac};
use subtle::ConstantTimeEq;

/// Verifiers for every configured user, derived once at start.
#[derive(Debug)]
pub struct UserStore {
    verifiers: HashMap<String, Verifier>,
    salt_key: [u8; 32],
    /// SHA-256 digests of HTTP bearer tokens, with their users.
    tokens: Vec<([u8; 32], String)>,
    /// SHA-256 digest of the token `GET /metrics` needs, if any.
    metrics_token: Option<[u8; 32]>,
    /// Keyed digests of (user, password) pairs that passed: an HTTP client
    /// sends its password with every request, and PBKDF2 is slow on
    /// purpose. The key is random per store, so the set is worthless to
    /// anyone who reads memory without the passwords; it goes with the
    /// store on reload.
    passed: Mutex<HashSet<[u8; 32]>>,
    passed_key: hmac::Key,
}

/// Most (user, password) pairs remembered as verified.
const MAX_REMEMBERED_LOGINS: usize = 4096;

/// The salt `user` gets: a PRF (one round of PBKDF2-HMAC-SHA-256) of the
/// name keyed by the ledger's secret.
fn salt_for(salt_key: &[u8; 32], user: &str) -> Vec<u8> {
    let seed = format!("{}{user}", STANDARD.encode(salt_key));
    gen_salted_password(&seed, b"dpgate-salt", 1)[..16].to_vec()
}

#[derive(Debug, Clone)]
struct Verifier {
    salt: Vec<u8>,
    iterations: usize,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Verifier {
    fn secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }

    /// Whether `password` matches: SCRAM's StoredKey from it, compared
    /// in constant time.
    fn accepts(&self, password: &str) -> bool {
        let salted = gen_salted_password(password, &self.salt, self.iterations);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored = digest::digest(&digest::SHA256, client_key.as_ref());
        bool::from(stored.as_ref().ct_eq(&self.stored_key))
    }

    fn from_password(password: &str, salt: Vec<u8>) -> Verifier {
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        match ScramSecret::verifier_from_salted_password(salt, salted, SCRAM_ITERATIONS) {
            ScramSecret::Verifier {
                salt,
                iterations,
                stored_key,
                server_key,
            } => Verifier {
                salt,
                iterations,
                stored_key,
                server_key,
            },
            ScramSecret::SaltedPassword { .. } => {
                unreachable!("verifier_from_salted_password returns a verifier")
            }
        }
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            salt: STANDARD.decode(salt).ok()?,
            iterations: iterations.parse().ok()?,
            stored_key: STANDARD.decode(stored).ok()?,
            server_key: STANDARD.decode(server).ok()?,
        })
    }
}

impl UserStore {
    /// Derives verifiers for every user in `config`, salts from `salt_key`.
    pub fn new(config: &Config, salt_key: [u8; 32]) -> Result<UserStore, String> {
        let mut verifiers = HashMap::new();
        for u in &config.users {
            let v = match &u.secret {
                Secret::Password(p) => Verifier::from_password(p, salt_for(&salt_key, &u.name)),
                Secret::ScramVerifier(text) => Verifier::parse(text).ok_or_else(|| {
                    format!("users: the SCRAM verifier of {} does not decode", u.name)
                })?,
            };
            verifiers.insert(u.name.clone(), v);
        }
        let tokens: Vec<([u8; 32], String)> = config
            .users
            .iter()
            .filter_map(|u| Some((u.token?.0, u.name.clone())))
            .collect();
        let metrics_token = config
            .http
            .as_ref()
            .and_then(|h| h.metrics_token)
            .map(|t| t.0);
        Ok(UserStore {
            verifiers,
            salt_key,
            tokens,
            metrics_token,
            passed: Mutex::new(HashSet::new()),
            passed_key: hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
        })
    }

    /// The keyed digest a verified (user, password) pair is remembered by.
    fn pair_digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut pair = hmac::Context::with_key(&self.passed_key);
        pair.update(&(user.len() as u64).to_be_bytes());
        pair.update(user.as_bytes());
        pair.update(password.as_bytes());
        pair.sign().as_ref().try_into().expect("32 bytes")
    }

    /// Whether this (user, password) pair passed [`Self::check_password`]
    /// before (one HMAC; no PBKDF2).
    pub fn is_remembered(&self, user: &str, password: &str) -> bool {
        self.remembers(&self.pair_digest(user, password))
    }

    fn remembers(&self, pair: &[u8; 32]) -> bool {
        self.passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(pair)
    }

    /// Whether `password` is `user`'s (HTTP Basic). An unknown user costs
    /// the same work as a known one and gets the same `false`.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        let pair = self.pair_digest(user, password);
        if self.remembers(&pair) {
            return true;
        }
        let ok = match self.verifiers.get(user) {
            Some(v) => v.accepts(password),
            None => {
                // Same work as a real check, then no.
                let _ = self.decoy(user).accepts(password);
                false
            }
        };
        if ok {
            let mut passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
            if passed.len() >= MAX_REMEMBERED_LOGINS {
                passed.clear();
            }
            passed.insert(pair);
        }
        ok
    }

    /// The user whose HTTP bearer token this is, compared in constant
    /// time against every declared digest.
    pub fn user_of_token(&self, token: &str) -> Option<String> {
        let presented = Token::of(token).0;
        let mut found = None;
        for (digest, user) in &self.tokens {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(user.clone());
            }
        }
        found
    }

    /// Whether `token` is the metrics token (`None` configured: never).
    pub fn is_metrics_token(&self, token: &str) -> bool {
        self.metrics_token
            .is_some_and(|d| bool::from(d.ct_eq(&Token::of(token).0)))
    }

    /// A fake verifier for an unknown name: the salt a password user of
    /// that name would have, keys nobody can match.
    fn decoy(&self, user: &str) -> Verifier {
        Verifier {
            salt: salt_for(&self.salt_key, user),
            iterations: SCRAM_ITERATIONS,
            stored_key: rand::random::<[u8; 32]>().to_vec(),
            server_key: rand::random::<[u8; 32]>().to_vec(),
        }
    }
}

/// Connection ids (the process id of BackendKeyData) drawn at random, not
/// counted: a counter would tell every analyst how many logins there have
/// been. The cancel secret is random as before.
#[derive(Debug)]
pub struct RandomIds;

impl pgwire::api::PidSecretKeyGenerator for RandomIds {
    fn generate(
        &self,
        client: &dyn pgwire::api::ClientInfo,
    ) -> (i32, pgwire::messages::startup::SecretKey) {
        use pgwire::messages::startup::SecretKey;
        use pgwire::messages::ProtocolVersion;
        // Positive, as PostgreSQL's process ids are.
        let pid = (rand::random::<u32>() >> 1) as i32;
        let key = match client.protocol_version() {
            ProtocolVersion::PROTOCOL3_0 => SecretKey::I32(rand::random()),
            _ => SecretKey::Bytes(rand::random::<[u8; 32]>().to_vec().into()),
        };
        (pid.max(1), key)
    }
}

/// pgwire's view of the user store in force.
pub struct ScramSource(pub Arc<crate::Shared>);

impl std::fmt::Debug for ScramSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSource")
    }
}

#[async_trait]
impl AuthSource for ScramSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_owned(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        let users = self.0.users();
        let verifier = match users.verifiers.get(user) {
            Some(v) => v.clone(),
            None => users.decoy(user),
        };
        Ok((verifier.secret(), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_verifiers() {
        let v = Verifier::parse("SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy").unwrap();
        assert_eq!(v.salt, b"salt");
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.stored_key, b"stored");
        assert!(Verifier::parse("md5abc").is_none());
    }

    #[test]
    fn passwords_and_tokens_check_against_the_store() {
        let text = r#"
[backend]
url = "postgres://x@127.0.0.1/db"
[[users]]
name = "ana"
password = "env:PW"
token = "env:TOKEN"
epsilon_budget = 1
[[users]]
name = "bo"
password = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$AAAA:BBBB"
token = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
epsilon_budget = 1
"#;
        let env = |n: &str| match n {
            "PW" => Some("pässword".to_string()),
            "TOKEN" => Some("0123456789abcdef-token".to_string()),
            _ => None,
        };
        let config = Config::parse(text, &env).unwrap();
        let store = UserStore::new(&config, [7; 32]).unwrap();
        assert!(store.check_password("ana", "pässword"));
        // Remembered now; still right, and a wrong one is still wrong.
        assert!(store.check_password("ana", "pässword"));
        assert!(!store.check_password("ana", "password"));
        assert!(!store.check_password("nobody", "pässword"));
        assert!(!store.check_password("bo", "anything"));
        assert_eq!(
            store.user_of_token("0123456789abcdef-token").as_deref(),
            Some("ana")
        );
        // sha256("test")
        assert_eq!(store.user_of_token("test").as_deref(), Some("bo"));
        assert_eq!(store.user_of_token("0123456789abcdef-toke"), None);
    }

    #[test]
    fn a_stored_verifier_accepts_its_password() {
        // What PostgreSQL stores for password "secret" with this salt.
        let salt = b"0123456789abcdef".to_vec();
        let v = Verifier::from_password("secret", salt);
        assert!(v.accepts("secret"));
        assert!(!v.accepts("Secret"));
    }
}
