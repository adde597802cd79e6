//! Who sent a request: HTTP Basic against the same users and secrets as
//! the wire protocol (a password, or PostgreSQL's stored SCRAM verifier),
//! or a per-user bearer token. Every failure is the same 401; a password
//! is never read from the URL and never logged.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dpgate_server::Shared;

use crate::error::ApiError;

/// The header the console sends so that a 401 does not open the browser's
/// own login dialog (the console has its form).
pub const CONSOLE_HEADER: &str = "x-dpgate-console";

/// The user a request authenticates as.
pub async fn user_of(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let challenge = !headers.contains_key(CONSOLE_HEADER);
    let denied = || ApiError::unauthorized(challenge);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(denied)?;
    let (scheme, credentials) = value.trim().split_once(' ').ok_or_else(denied)?;
    let users = shared.users();
    if scheme.eq_ignore_ascii_case("bearer") {
        return users.user_of_token(credentials.trim()).ok_or_else(denied);
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(denied());
    }
    let decoded = STANDARD
        .decode(credentials.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(denied)?;
    let (user, password) = decoded.split_once(':').ok_or_else(denied)?;
    let (user, password) = (user.to_string(), password.to_string());
    // PBKDF2 takes milliseconds on purpose: off the async threads.
    let checked_user = user.clone();
    let ok = tokio::task::spawn_blocking(move || users.check_password(&checked_user, &password))
        .await
        .unwrap_or(false);
    if ok {
        Ok(user)
    } else {
        Err(denied())
    }
}
