//! Who sent a request: HTTP Basic against the same users and secrets as
//! the wire protocol (a password, or PostgreSQL's stored SCRAM verifier),
//! or a per-user bearer token. Every failure is the same 401; a password
//! is never read from the URL and never logged.
//!
//! A 401 invites `Bearer`, never `Basic`: a browser asked for Basic would
//! show its own dialog and then send the remembered password with every
//! other site's request to dpgate. Requests a browser marks as coming
//! from another site are refused outright.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::admission::Admission;
use crate::error::ApiError;
use crate::Api;

/// How long a request waits for a place to check a password.
const LOGIN_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The authenticated user of a request, which holds a connection slot
/// from then on. Extract it before the body: nothing is read for a
/// request that fails.
pub struct Caller(pub String);

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let user = user_of(api, &parts.headers).await?;
        if let Some(admission) = parts.extensions.get::<Arc<Admission>>() {
            admission.admit()?;
        }
        Ok(Caller(user))
    }
}

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
            StatusCode::FORBIDDEN,
            "42501",
            "requests from another web site are refused",
            "call the API from a program, or use the console dpgate serves at /",
        ));
    }
    Ok(())
}

/// The user a request authenticates as.
async fn user_of(api: &Api, headers: &HeaderMap) -> Result<String, ApiError> {
    refuse_cross_site(headers)?;
    let denied = ApiError::unauthorized;
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(denied)?;
    let (scheme, credentials) = value.trim().split_once(' ').ok_or_else(denied)?;
    let users = api.shared.users();
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
    if users.is_remembered(&user, &password) {
        return Ok(user);
    }
    // PBKDF2 takes milliseconds on purpose: off the async threads, and at
    // most `logins` at once, so a flood of made-up logins costs the
    // machine a bounded share of its cores.
    let permit = tokio::time::timeout(LOGIN_QUEUE_WAIT, api.logins.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::error::TOO_MANY_CONNECTIONS,
                "too many logins are being checked at once",
                "retry in a moment; programs should use a bearer token (users[].token), which costs one hash",
            )
        })?;
    let checked_user = user.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        users.check_password(&checked_user, &password)
    })
    .await
    .unwrap_or(false);
    if ok {
        Ok(user)
    } else {
        Err(denied())
    }
}

/// Whether the metrics token authorises this request.
pub fn is_metrics_request(api: &Api, headers: &HeaderMap) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .unwrap_or_default();
    refuse_cross_site(headers).is_ok() && api.shared.users().is_metrics_token(token.trim())
}
