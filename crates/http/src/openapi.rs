//! `GET /v1/openapi.json`: an OpenAPI 3 document of the routes. A test
//! checks that it names exactly [`ROUTES`] and that each answers.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Every documented route: method and path.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/query"),
    ("post", "/v1/explain"),
    ("get", "/v1/budget"),
    ("get", "/v1/queries"),
    ("get", "/v1/tables"),
    ("get", "/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/metrics"),
];

/// `GET /v1/openapi.json`.
pub async fn document() -> Response {
    Json(spec()).into_response()
}

fn error_responses() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let body = |description: &str| json!({"description": description, "content": {"application/json": {"schema": error}}});
    json!({
        "400": body("refused or malformed SQL, or a malformed request (code: the SQLSTATE)"),
        "401": body("no login, or a wrong one (the same answer for an unknown user)"),
        "403": body("the user is no longer declared"),
        "413": body("the body is larger than http.max_body_kib"),
        "429": body("the privacy budget is exhausted (the body adds `remaining`)"),
        "503": body("the backend or the ledger is unavailable, or too many connections"),
    })
}

/// The document.
pub fn spec() -> Value {
    let request = json!({"$ref": "#/components/schemas/QueryRequest"});
    let with_body = |summary: &str, response: Value| {
        let mut responses = error_responses();
        responses["200"] =
            json!({"description": "OK", "content": {"application/json": {"schema": response}}});
        json!({
            "summary": summary,
            "security": [{"basic": []}, {"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
            "responses": responses,
        })
    };
    let read = |summary: &str, response: Value, secured: bool| {
        let mut responses = if secured {
            error_responses()
        } else {
            json!({})
        };
        responses["200"] =
            json!({"description": "OK", "content": {"application/json": {"schema": response}}});
        let mut op = json!({"summary": summary, "responses": responses});
        if secured {
            op["security"] = json!([{"basic": []}, {"bearer": []}]);
        }
        op
    };
    let object = json!({"type": "object"});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "dpgate HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Differentially private SQL over HTTP: the same users, budgets, planner, cache and audit log as dpgate's PostgreSQL protocol. Every answer says what it cost and how accurate it is.",
        },
        "paths": {
            "/v1/query": {"post": with_body("Answer one SQL statement privately (charges the budget unless it repeats a kept release)", json!({"$ref": "#/components/schemas/Answer"}))},
            "/v1/explain": {"post": with_body("The plan of a private query: cost, noise, intervals; nothing is run or charged", json!({"$ref": "#/components/schemas/Plan"}))},
            "/v1/budget": {"get": read("The user's budget: spent, limit, remaining, refresh window", object.clone(), true)},
            "/v1/queries": {"get": {
                "summary": "The user's own audit entries, newest first",
                "security": [{"basic": []}, {"bearer": []}],
                "parameters": [
                    {"name": "since", "in": "query", "schema": {"type": "integer"}, "description": "milliseconds since 1970"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                ],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": object.clone()}}}},
            }},
            "/v1/tables": {"get": read("The declared tables, columns, types, bounds, domains and privacy units (nothing from the data)", object.clone(), true)},
            "/v1/openapi.json": {"get": read("This document", object.clone(), false)},
            "/healthz": {"get": read("Up", object.clone(), false)},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (needs http.metrics_token as a bearer token)",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }},
        },
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "QueryRequest": {
                    "type": "object",
                    "required": ["sql"],
                    "additionalProperties": false,
                    "properties": {
                        "sql": {"type": "string", "description": "one SQL statement"},
                        "params": {"type": "array", "description": "values of $1, $2, …", "items": {}},
                        "epsilon": {"type": "number", "description": "ε this query spends (default privacy.default_epsilon)"},
                        "target_error": {"description": "instead of epsilon: the 95% half-width wanted, a number for the first aggregate or 'count:50, avg:2'", "oneOf": [{"type": "number"}, {"type": "string"}]},
                        "mechanism": {"type": "string", "enum": ["auto", "laplace", "gaussian"]},
                        "split": {"type": "string", "enum": ["optimal", "equal"]},
                    },
                },
                "Answer": {
                    "type": "object",
                    "properties": {
                        "columns": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}},
                        "rows": {"type": "array", "items": {"type": "array", "items": {}}},
                        "accuracy": {"type": "array", "items": {"type": "object", "properties": {
                            "column": {"type": "string"}, "half_width": {"type": "number"},
                            "half_widths": {"type": "array", "items": {"type": "number", "nullable": true}},
                            "confidence": {"type": "number"}}}},
                        "cost": {"type": "object", "properties": {"epsilon": {"type": "number"}, "delta": {"type": "number"}, "rho": {"type": "number"}}},
                        "remaining": {"type": "object", "nullable": true},
                        "repeat": {"type": "boolean"},
                        "synthetic": {"type": "boolean"},
                        "query_id": {"type": "string", "nullable": true},
                    },
                },
                "Plan": {
                    "type": "object",
                    "properties": {
                        "cost": {"type": "object"}, "mechanism": {"type": "string"}, "bounding": {"type": "string"},
                        "columns": {"type": "array", "items": {"type": "object"}}, "confidence": {"type": "number"},
                        "lines": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["code", "message", "hint"],
                    "properties": {
                        "code": {"type": "string", "description": "SQLSTATE"},
                        "message": {"type": "string"},
                        "hint": {"type": "string"},
                        "remaining": {"type": "object", "description": "with code 53000: the budget left"},
                    },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_exactly_the_routes() {
        let spec = spec();
        let mut documented: Vec<(String, String)> = spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
