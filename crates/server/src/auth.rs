//! SCRAM-SHA-256 (and -PLUS with TLS) against the users of proxy.toml.
//! Unknown users go through the same exchange with a made-up verifier, so
//! they get the same answer as a wrong password. The salt a password user
//! and an unknown name get is the same keyed function of the name and the
//! ledger's secret: stable across attempts, reloads and restarts for both,
//! so no salt tells a real name from a made-up one.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dpgate_config::{Config, Secret};
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramSecret, SCRAM_ITERATIONS};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};

/// Verifiers for every configured user, derived once at start.
#[derive(Debug)]
pub struct UserStore {
    verifiers: HashMap<String, Verifier>,
    salt_key: [u8; 32],
}

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
        Ok(UserStore {
            verifiers,
            salt_key,
        })
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
}
