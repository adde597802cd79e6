//! `[[users]]`: names, passwords or stored SCRAM verifiers, budgets.

use super::*;

pub(super) fn validate_users(
    c: &mut Collector,
    raw: Vec<RawUser>,
    env: &dyn Fn(&str) -> Option<String>,
    privacy: &Privacy,
    defaults: &Budget,
) -> Vec<User> {
    if raw.is_empty() {
        c.err(
            "users",
            "no users are declared, so nobody can connect",
            "add a [[users]] entry with name, password and epsilon_budget",
        );
    }
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let path = format!("users[{i}]");
        if u.name.is_empty() {
            c.err(
                format!("{path}.name"),
                "the name is empty",
                "write the login name",
            );
        } else if u.name == crate::SYNTHETIC_ACCOUNT {
            c.err(
                format!("{path}.name"),
                format!("{:?} is the ledger account of synthetic-data fits", u.name),
                "choose another login name",
            );
        } else if !seen.insert(u.name.clone()) {
            c.err(
                format!("{path}.name"),
                format!("user {:?} is declared twice", u.name),
                "remove or rename one of them",
            );
        }
        let secret = match u.password.as_deref() {
            None => {
                c.err(
                    format!("{path}.password"),
                    "no password",
                    "write password = \"env:VARIABLE\" or a SCRAM-SHA-256 verifier",
                );
                Secret::Password(String::new())
            }
            Some(p) if p.starts_with("env:") => match env(&p[4..]) {
                Some(v) if !v.is_empty() => Secret::Password(v),
                _ => {
                    c.err(
                        format!("{path}.password"),
                        format!("environment variable {} is not set", &p[4..]),
                        format!("export {}=... before starting dpgate", &p[4..]),
                    );
                    Secret::Password(String::new())
                }
            },
            Some(p) if p.starts_with("SCRAM-SHA-256$") => {
                if !looks_like_verifier(p) {
                    c.err(format!("{path}.password"), "the SCRAM verifier is malformed", "copy it from pg_authid.rolpassword: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>");
                }
                Secret::ScramVerifier(p.to_string())
            }
            Some(_) => {
                c.err(format!("{path}.password"), "cleartext passwords are not accepted in proxy.toml", "write password = \"env:VARIABLE\" and export the password in that variable, or paste a SCRAM-SHA-256 verifier");
                Secret::Password(String::new())
            }
        };
        let epsilon_budget = c.epsilon(
            &format!("{path}.epsilon_budget"),
            u.epsilon_budget,
            f64::NAN,
        );
        // The [privacy] default is checked where it is written.
        let max_epsilon_per_query = match u.max_epsilon_per_query {
            Some(v) => c.epsilon(&format!("{path}.max_epsilon_per_query"), Some(v), v),
            None => privacy.max_epsilon_per_query,
        };
        let budget = Budget {
            epsilon: epsilon_budget,
            delta: c.delta_budget(
                &format!("{path}.delta_budget"),
                u.delta_budget,
                defaults.delta,
            ),
            refresh: match u.refresh.as_deref() {
                Some("never") => None,
                Some(r) => c.duration(&format!("{path}.refresh"), Some(r)),
                None => defaults.refresh,
            },
        };
        let token = u
            .token
            .as_deref()
            .and_then(|t| validate_token(c, &format!("{path}.token"), t, env));
        if let Some(t) = token {
            if let Some(other) = users.iter().find(|o: &&User| o.token == Some(t)) {
                c.err(
                    format!("{path}.token"),
                    format!("{} has the same token", other.name),
                    "give each user a token of their own (a shared one would charge whichever user is declared last)",
                );
            }
        }
        users.push(User {
            name: u.name,
            secret,
            budget,
            max_epsilon_per_query,
            token,
        });
    }
    users
}

/// `token = "env:VARIABLE"` or `token = "sha256:<64 hex digits>"`.
pub(super) fn validate_token(
    c: &mut Collector,
    path: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Token> {
    let fix = "write token = \"env:VARIABLE\" (at least 16 characters in it) or token = \"sha256:<hex digest of the token>\"";
    if let Some(name) = text.strip_prefix("env:") {
        return match env(name) {
            Some(v) if v.len() >= 16 => Some(Token::of(&v)),
            Some(_) => {
                c.err(
                    path,
                    format!("the token in {name} is shorter than 16 characters"),
                    "use a long random token, e.g. from openssl rand -hex 32",
                );
                None
            }
            None => {
                c.err(
                    path,
                    format!("environment variable {name} is not set"),
                    format!("export {name}=... before starting dpgate"),
                );
                None
            }
        };
    }
    if let Some(hex) = text.strip_prefix("sha256:") {
        let digest = (hex.len() == 64 && hex.is_ascii())
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten();
        return match digest {
            Some(d) => Some(Token(d.try_into().expect("32 bytes"))),
            None => {
                c.err(path, "the digest is not 64 hexadecimal digits", fix);
                None
            }
        };
    }
    c.err(path, "cleartext tokens are not accepted in proxy.toml", fix);
    None
}

pub(super) fn looks_like_verifier(v: &str) -> bool {
    let rest = &v["SCRAM-SHA-256$".len()..];
    let Some((iter_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iters, salt)) = iter_salt.split_once(':') else {
        return false;
    };
    iters.parse::<u32>().is_ok() && !salt.is_empty() && keys.split(':').count() == 2
}
