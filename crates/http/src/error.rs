//! Errors as JSON: `{"code": SQLSTATE, "message", "hint"}` with an HTTP
//! status chosen from the SQLSTATE, so a service gets the same codes as a
//! psql user, and a status its HTTP library understands.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dpgate_sql::{sqlstate, Refusal};
use serde_json::{json, Value};

/// SQLSTATE of a request that is not valid JSON of the documented shape.
pub const MALFORMED_REQUEST: &str = "08P01";
/// SQLSTATE of a missing or wrong login.
pub const BAD_LOGIN: &str = "28P01";
/// SQLSTATE of too many open connections.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// SQLSTATE of a body over `http.max_body_kib`.
pub const BODY_TOO_LARGE: &str = "54000";

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// SQLSTATE.
    pub code: String,
    /// Why.
    pub message: String,
    /// What to do instead.
    pub hint: String,
    /// More fields for the body (the remaining budget of a refusal for
    /// an exhausted budget).
    pub extra: Option<Value>,
    /// Whether to send `WWW-Authenticate` (a 401).
    pub challenge: bool,
}

impl ApiError {
    /// An error with an explicit status.
    pub fn new(
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            hint: hint.into(),
            extra: None,
            challenge: false,
        }
    }

    /// A request body that is not what the route reads.
    pub fn malformed(message: impl Into<String>, hint: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, MALFORMED_REQUEST, message, hint)
    }

    /// The one answer to a missing, unknown or wrong login.
    pub fn unauthorized() -> ApiError {
        ApiError {
            challenge: true,
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                BAD_LOGIN,
                "the user name and password, or the token, were not accepted",
                "send Authorization: Basic with a user of proxy.toml, or Authorization: Bearer with the user's token",
            )
        }
    }
}

/// The HTTP status of a refusal with this SQLSTATE.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        sqlstate::BUDGET_EXHAUSTED => StatusCode::TOO_MANY_REQUESTS,
        sqlstate::INVALID_AUTHORIZATION => StatusCode::FORBIDDEN,
        sqlstate::BACKEND_FAILED | sqlstate::LEDGER_FAILED => StatusCode::SERVICE_UNAVAILABLE,
        sqlstate::INTERNAL_ERROR => StatusCode::INTERNAL_SERVER_ERROR,
        sqlstate::NOT_READY => StatusCode::SERVICE_UNAVAILABLE,
        // Connection and resource classes: the service cannot take it now.
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        // Everything else is about the SQL or the values sent.
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        ApiError::new(status_of(&r.code), &r.code, r.message, r.hint)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            map.extend(extra);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                // Bearer, not Basic: a browser asked for Basic shows a
                // dialog and then sends the password to dpgate with other
                // sites' requests. Programs send Basic unasked.
                HeaderValue::from_static("Bearer realm=\"dpgate\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_sqlstate_class() {
        assert_eq!(status_of("53000"), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status_of("42601"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of("0A000"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of("58000"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of("58030"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of("28000"), StatusCode::FORBIDDEN);
        assert_eq!(status_of("XX000"), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
