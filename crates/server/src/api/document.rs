//! Completes the OpenAPI document with what every operation shares: the bearer scheme, and
//! the error responses its extractors can give (no login, a malformed body or query, an
//! internal error), each with the `{"error", "message"}` body. An operation's own errors
//! (not found, conflict, its role) are in its `#[utoipa::path]`.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// The schema of every error body (`postern_protocol::api::ApiError`).
const ERROR_SCHEMA: &str = "ApiError";

pub fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    for item in doc.paths.paths.values_mut() {
        let operations = [
            (&mut item.get, true),
            (&mut item.head, true),
            (&mut item.put, false),
            (&mut item.post, false),
            (&mut item.patch, false),
            (&mut item.delete, false),
        ];
        for (operation, safe) in operations {
            if let Some(operation) = operation {
                add_shared_errors(operation, safe);
            }
        }
    }
}

fn add_shared_errors(operation: &mut Operation, safe: bool) {
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_parameters = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Path));
    let has_body = operation.request_body.is_some();
    let mut shared: Vec<(&str, &str)> = Vec::new();
    if authenticated {
        shared.push(("401", "Not logged in, or the login has expired"));
        if !safe {
            shared.push((
                "403",
                "A change authenticated by the session cookie alone, without the \
                 x-postern-csrf header",
            ));
        }
    }
    if has_parameters {
        shared.push((
            "400",
            "A parameter is malformed (a path segment that is not UTF-8, a query value of the \
             wrong type or out of range)",
        ));
    }
    if has_body {
        shared.push(("400", "The body is not valid JSON"));
        shared.push(("413", "The body is larger than 64 KiB"));
        shared.push(("415", "The body is not declared as application/json"));
        shared.push((
            "422",
            "The body is not a JSON object of the documented shape",
        ));
    }
    if authenticated || has_body {
        // The login lookup and every use case go through the store; its failures are
        // 503 or 507 (`ApiError::storage`), anything else 500.
        shared.push(("500", "An internal error (logged on the server)"));
        shared.push((
            "503",
            "The server's storage is unavailable; try again later",
        ));
        shared.push(("507", "The server's storage is full"));
    }
    for (status, description) in shared {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    }
    // Every error response carries the error body, however its annotation described it.
    for (status, response) in operation.responses.responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (is_error, response)
            && response.content.is_empty()
        {
            response
                .content
                .insert("application/json".to_owned(), error_content());
        }
    }
}

fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(ERROR_SCHEMA)))
        .build()
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", error_content())
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::auth::{MAX_USER_NAME_LEN, MIN_PASSWORD_CHARS};
    use crate::tokens::{MAX_TTL, MAX_USES};

    /// The limits in the document's schemas are literals (utoipa takes no constants): they
    /// must be the ones the server enforces.
    #[test]
    fn the_documented_limits_are_the_enforced_ones() {
        let doc = serde_json::to_value(super::super::openapi()).unwrap();
        let schema = |name: &str, field: &str| {
            doc["components"]["schemas"][name]["properties"][field].clone()
        };
        let number = |v: &Value| v.as_f64().unwrap();
        assert_eq!(
            number(&schema("CreateUserRequest", "password")["minLength"]),
            MIN_PASSWORD_CHARS as f64
        );
        assert_eq!(
            number(&schema("PasswordRequest", "password")["minLength"]),
            MIN_PASSWORD_CHARS as f64
        );
        assert_eq!(
            number(&schema("CreateUserRequest", "name")["maxLength"]),
            MAX_USER_NAME_LEN as f64
        );
        assert_eq!(
            number(&schema("CreateTokenRequest", "ttl_secs")["maximum"]),
            MAX_TTL.as_secs() as f64
        );
        assert_eq!(
            number(&schema("CreateTokenRequest", "uses")["maximum"]),
            f64::from(MAX_USES)
        );
    }

    #[test]
    fn every_error_response_has_the_error_body() {
        let doc = serde_json::to_value(super::super::openapi()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ApiError",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }
}
