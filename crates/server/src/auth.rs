//! SCRAM-SHA-256 against the users of proxy.toml. Unknown users go through
//! the same exchange with a made-up verifier, so they get the same answer
//! as a wrong password and user names cannot be probed.

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
    decoy_key: [u8; 32],
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

    fn from_password(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::random();
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        match ScramSecret::verifier_from_salted_password(salt.to_vec(), salted, SCRAM_ITERATIONS) {
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
    /// Derives verifiers for every user in `config`.
    pub fn new(config: &Config) -> Result<UserStore, String> {
        let mut verifiers = HashMap::new();
        for u in &config.users {
            let v = match &u.secret {
                Secret::Password(p) => Verifier::from_password(p),
                Secret::ScramVerifier(text) => Verifier::parse(text).ok_or_else(|| {
                    format!("users: the SCRAM verifier of {} does not decode", u.name)
                })?,
            };
            verifiers.insert(u.name.clone(), v);
        }
        Ok(UserStore {
            verifiers,
            decoy_key: rand::random(),
        })
    }

    /// A stable fake verifier for an unknown name: same salt on every
    /// attempt (as a real user would have), keys nobody can match.
    fn decoy(&self, user: &str) -> Verifier {
        let seed = format!("{}{user}", STANDARD.encode(self.decoy_key));
        let salted = gen_salted_password(&seed, b"dpgate-decoy", 1);
        Verifier {
            salt: salted[..16].to_vec(),
            iterations: SCRAM_ITERATIONS,
            stored_key: rand::random::<[u8; 32]>().to_vec(),
            server_key: rand::random::<[u8; 32]>().to_vec(),
        }
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
