//! Who sent a request: HTTP Basic against the same users and secrets as
//! the wire protocol (a password, or PostgreSQL's stored SCRAM verifier),
//! or a per-user bearer token. Every failure is the same 401; a password
//! is never read from the URL and never logged.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dpgate_server::Shared;

use crate::error::ApiError;

/// A browser that once logged in through its own Basic dialog sends those
/// credentials with any site's request to dpgate, so a page elsewhere
/// could spend an analyst's budget by posting a form. Browsers say where
/// a request comes from (`Origin`, `Sec-Fetch-Site`); a request from
/// another site is refused. Clients that are not browsers send neither.
fn refuse_cross_site(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text("host").unwrap_or_default();
    let cross_origin = text("origin").is_some_and(|origin| {
        let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
        origin == "null" || !authority.eq_ignore_ascii_case(host)
    });
    let cross_site = text("sec-fetch-site").is_some_and(|s| s == "cross-site");
    if cross_origin || cross_site {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "42501",
            "requests from another web site are refused",
            "call the API from a program, or use the console dpgate serves at /",
        ));
    }
    Ok(())
}

/// The header the console sends so that a 401 does not open the browser's
/// own login dialog (the console has its form).
pub const CONSOLE_HEADER: &str = "x-dpgate-console";

/// The user a request authenticates as.
pub async fn user_of(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    refuse_cross_site(headers)?;
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
