//! The Lambda event as an HTTP request, whatever front end delivered it.
//!
//! API Gateway REST APIs, HTTP APIs, function URLs and ALB target groups each
//! send their own JSON shape and percent-encode differently. [`HttpEvent::parse`]
//! reads the raw JSON, rather than a typed struct, so that a malformed event
//! still gets an HTTP response instead of an invocation error, and it decodes
//! the path and query exactly once:
//!
//! | front end                 | path parameter | raw path | query values |
//! |---------------------------|----------------|----------|--------------|
//! | REST API                  | encoded        | encoded  | decoded      |
//! | HTTP API, payload 1.0     | decoded        | encoded  | decoded      |
//! | HTTP API 2.0, function URL| decoded        | encoded  | `rawQueryString`, encoded |
//! | ALB                       | none           | encoded  | encoded      |

use std::str::Utf8Error;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

/// The front end that delivered the event; it decides the decoding and the response shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// API Gateway REST API, Lambda proxy integration.
    RestApi,
    /// API Gateway HTTP API with payload format 1.0.
    HttpApiV1,
    /// API Gateway HTTP API with payload format 2.0, or a Lambda function URL.
    HttpApiV2,
    /// Application Load Balancer target group.
    Alb,
}

impl FrontEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestApi => "rest_api",
            Self::HttpApiV1 => "http_api_v1",
            Self::HttpApiV2 => "http_api_v2",
            Self::Alb => "alb",
        }
    }
}

/// The target named by the path, with the user id decoded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathTarget {
    /// The path is `/learnings/users/{user_id}`. The value is an error when its
    /// percent-decoded bytes are not UTF-8.
    UserId(Result<String, Utf8Error>),
    /// Any other path.
    Other,
}

/// One query parameter, decoded once. The value is an error when its
/// percent-decoded bytes are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParam {
    pub name: String,
    pub value: Result<String, Utf8Error>,
}

/// The Authorization header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationHeader<'a> {
    Absent,
    Single(&'a str),
    /// Sent more than once. HTTP APIs join repeated headers with commas, which
    /// a single Bearer token never contains, so a comma counts as a repetition.
    Multiple,
}

/// The parts of a Lambda event that this operation reads.
#[derive(Debug, Clone)]
pub struct HttpEvent<'a> {
    pub front_end: FrontEnd,
    pub method: &'a str,
    pub target: PathTarget,
    pub query: Vec<QueryParam>,
    /// `requestContext`, which carries the authorizer's identity. None when absent or null.
    pub request_context: Option<&'a Map<String, Value>>,
    pub authorization: AuthorizationHeader<'a>,
    /// The shape of the response: an ALB target group with multi-value headers
    /// turned on accepts only `multiValueHeaders`.
    pub multi_value_headers: bool,
}

/// The path of this operation, before its one variable segment.
const ROUTE_PREFIX: &str = "/learnings/users/";

/// The route template of this operation, as API Gateway names it in
/// `resource` (REST API) and after the method in `routeKey` (HTTP API).
const ROUTE_TEMPLATE: &str = "/learnings/users/{user_id}";

/// Returned when the event is not an HTTP request of a known front end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event is not an API Gateway, function URL or ALB request")]
pub struct NotAnHttpEvent;

impl<'a> HttpEvent<'a> {
    /// Reads an HTTP request out of a Lambda event.
    pub fn parse(event: &'a Value) -> Result<Self, NotAnHttpEvent> {
        let event = event.as_object().ok_or(NotAnHttpEvent)?;
        let request_context = event.get("requestContext").and_then(Value::as_object);
        let front_end = detect_front_end(event, request_context).ok_or(NotAnHttpEvent)?;

        let method = match front_end {
            FrontEnd::HttpApiV2 => request_context
                .and_then(|context| context.get("http"))
                .and_then(|http| http.get("method"))
                .and_then(Value::as_str),
            FrontEnd::RestApi | FrontEnd::HttpApiV1 | FrontEnd::Alb => {
                event.get("httpMethod").and_then(Value::as_str)
            }
        }
        .ok_or(NotAnHttpEvent)?;

        Ok(Self {
            front_end,
            method,
            target: read_target(event, front_end, request_context)?,
            query: read_query(event, front_end),
            request_context,
            authorization: read_authorization(event),
            multi_value_headers: front_end == FrontEnd::Alb
                && event.get("multiValueHeaders").is_some(),
        })
    }
}

fn detect_front_end(
    event: &Map<String, Value>,
    request_context: Option<&Map<String, Value>>,
) -> Option<FrontEnd> {
    if request_context.is_some_and(|context| context.contains_key("elb")) {
        return Some(FrontEnd::Alb);
    }

    match event.get("version").and_then(Value::as_str) {
        Some("2.0") => Some(FrontEnd::HttpApiV2),
        Some("1.0") => Some(FrontEnd::HttpApiV1),
        _ if event.contains_key("httpMethod") => Some(FrontEnd::RestApi),
        _ => None,
    }
}

fn read_target(
    event: &Map<String, Value>,
    front_end: FrontEnd,
    request_context: Option<&Map<String, Value>>,
) -> Result<PathTarget, NotAnHttpEvent> {
    // API Gateway matched this operation's route and extracted the parameter
    // itself. Another route may name a parameter user_id too, so the route's
    // template must be this operation's.
    let route_template = match front_end {
        FrontEnd::HttpApiV2 => event
            .get("routeKey")
            .and_then(Value::as_str)
            .and_then(|route_key| route_key.split_once(' '))
            .map(|(_, template)| template),
        FrontEnd::RestApi | FrontEnd::HttpApiV1 | FrontEnd::Alb => {
            event.get("resource").and_then(Value::as_str)
        }
    };
    let path_parameter = event
        .get("pathParameters")
        .and_then(|parameters| parameters.get("user_id"))
        .and_then(Value::as_str)
        .filter(|_| route_template == Some(ROUTE_TEMPLATE));
    if let Some(user_id) = path_parameter {
        let user_id = match front_end {
            FrontEnd::RestApi | FrontEnd::Alb => decode(user_id),
            // NOTE: payload 1.0 of an HTTP API is taken to decode path
            // parameters as payload 2.0 does; no live 1.0 event confirmed it.
            FrontEnd::HttpApiV1 | FrontEnd::HttpApiV2 => Ok(user_id.to_owned()),
        };
        return Ok(PathTarget::UserId(user_id));
    }

    // Function URLs, ALBs, and catch-all routes have no path parameters.
    let raw_path = match front_end {
        FrontEnd::HttpApiV2 => event.get("rawPath"),
        FrontEnd::RestApi | FrontEnd::HttpApiV1 | FrontEnd::Alb => event.get("path"),
    }
    .and_then(Value::as_str)
    .ok_or(NotAnHttpEvent)?;

    // An HTTP API stage other than $default prefixes rawPath with its name.
    let stage = request_context
        .and_then(|context| context.get("stage"))
        .and_then(Value::as_str)
        .filter(|stage| {
            front_end == FrontEnd::HttpApiV2 && *stage != "$default" && !stage.is_empty()
        });
    let path = match stage {
        Some(stage) => raw_path
            .strip_prefix('/')
            .and_then(|rest| rest.strip_prefix(stage))
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(raw_path),
        None => raw_path,
    };

    Ok(match path.strip_prefix(ROUTE_PREFIX) {
        Some(segment) if !segment.contains('/') => PathTarget::UserId(decode(segment)),
        _ => PathTarget::Other,
    })
}

/// Reads the Authorization header from `multiValueHeaders` when present, and
/// from `headers` otherwise. Header names match without regard to case.
fn read_authorization(event: &Map<String, Value>) -> AuthorizationHeader<'_> {
    let is_authorization = |name: &String| name.eq_ignore_ascii_case("authorization");

    let values: Vec<&str> = match event.get("multiValueHeaders").and_then(Value::as_object) {
        Some(headers) => headers
            .iter()
            .filter(|(name, _)| is_authorization(name))
            .flat_map(|(_, values)| match values {
                Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
                Value::String(value) => vec![value.as_str()],
                _ => Vec::new(),
            })
            .collect(),
        None => event
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(name, _)| is_authorization(name))
            .filter_map(|(_, value)| value.as_str())
            .collect(),
    };

    match values.as_slice() {
        [] => AuthorizationHeader::Absent,
        [value] if !value.contains(',') => AuthorizationHeader::Single(value),
        _ => AuthorizationHeader::Multiple,
    }
}

fn read_query(event: &Map<String, Value>, front_end: FrontEnd) -> Vec<QueryParam> {
    match front_end {
        FrontEnd::HttpApiV2 => match event.get("rawQueryString").and_then(Value::as_str) {
            Some(raw) => parse_query_string(raw),
            None => read_comma_joined(event.get("queryStringParameters")),
        },
        FrontEnd::RestApi | FrontEnd::HttpApiV1 => read_parameter_maps(event, false),
        FrontEnd::Alb => read_parameter_maps(event, true),
    }
}

/// Parses `a=1&b=2` with form-encoding rules: `+` is a space, and `%XX` is decoded once.
pub fn parse_query_string(raw: &str) -> Vec<QueryParam> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            QueryParam {
                name: decode_form(name).unwrap_or_else(|_| lossy_decode_form(name)),
                value: decode_form(value),
            }
        })
        .collect()
}

/// Reads `multiValueQueryStringParameters` when present, which keeps every
/// repetition, and falls back to `queryStringParameters`.
fn read_parameter_maps(event: &Map<String, Value>, encoded: bool) -> Vec<QueryParam> {
    let decode_value = |value: &str| {
        if encoded {
            decode_form(value)
        } else {
            Ok(value.to_owned())
        }
    };
    let decode_name = |name: &str| {
        if encoded {
            decode_form(name).unwrap_or_else(|_| lossy_decode_form(name))
        } else {
            name.to_owned()
        }
    };

    if let Some(multi) = event
        .get("multiValueQueryStringParameters")
        .and_then(Value::as_object)
    {
        return multi
            .iter()
            .flat_map(|(name, values)| {
                let values: Vec<&str> = match values {
                    Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
                    Value::String(value) => vec![value.as_str()],
                    _ => Vec::new(),
                };
                values.into_iter().map(move |value| QueryParam {
                    name: decode_name(name),
                    value: decode_value(value),
                })
            })
            .collect();
    }

    event
        .get("queryStringParameters")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| {
            value.as_str().map(|value| QueryParam {
                name: decode_name(name),
                value: decode_value(value),
            })
        })
        .collect()
}

/// Reads HTTP API 2.0 `queryStringParameters`, where API Gateway joins
/// repeated values with commas. Only used when `rawQueryString` is missing,
/// because a comma inside one value cannot be distinguished from a repetition.
fn read_comma_joined(parameters: Option<&Value>) -> Vec<QueryParam> {
    parameters
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| value.as_str().map(|value| (name, value)))
        .flat_map(|(name, value)| {
            value.split(',').map(move |part| QueryParam {
                name: name.clone(),
                value: Ok(part.to_owned()),
            })
        })
        .collect()
}

fn decode(value: &str) -> Result<String, Utf8Error> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
}

fn decode_form(value: &str) -> Result<String, Utf8Error> {
    decode(&value.replace('+', " "))
}

fn lossy_decode_form(value: &str) -> String {
    percent_decode_str(&value.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// An HTTP response before it is shaped for a front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HttpResponse {
    /// Shapes the response as the front end expects it.
    ///
    /// Every front end accepts `statusCode`, `headers`, `body` and
    /// `isBase64Encoded`. An ALB also needs `statusDescription`, and takes
    /// `multiValueHeaders` instead of `headers` when its target group has
    /// multi-value headers turned on.
    pub fn into_lambda_response(
        self,
        front_end: Option<FrontEnd>,
        multi_value_headers: bool,
    ) -> Value {
        let mut response = Map::new();
        response.insert("statusCode".to_owned(), json!(self.status));

        let headers: Map<String, Value> = if multi_value_headers {
            self.headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), json!([value])))
                .collect()
        } else {
            self.headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), json!(value)))
                .collect()
        };
        let headers_key = if multi_value_headers {
            "multiValueHeaders"
        } else {
            "headers"
        };
        response.insert(headers_key.to_owned(), Value::Object(headers));

        // Payload 2.0 responses may set cookies. Some tools that read this
        // shape, cargo lambda watch among them, require the field.
        if front_end == Some(FrontEnd::HttpApiV2) {
            response.insert("cookies".to_owned(), json!([]));
        }

        if front_end == Some(FrontEnd::Alb) {
            response.insert(
                "statusDescription".to_owned(),
                json!(format!("{} {}", self.status, reason_phrase(self.status))),
            );
        }

        response.insert("body".to_owned(), json!(self.body));
        response.insert("isBase64Encoded".to_owned(), json!(false));
        Value::Object(response)
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Content",
        500 => "Internal Server Error",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_id(event: &Value) -> String {
        match HttpEvent::parse(event).unwrap().target {
            PathTarget::UserId(Ok(user_id)) => user_id,
            other => panic!("expected a user id, got {other:?}"),
        }
    }

    fn query_values(event: &Value, name: &str) -> Vec<String> {
        HttpEvent::parse(event)
            .unwrap()
            .query
            .into_iter()
            .filter(|param| param.name == name)
            .map(|param| param.value.unwrap())
            .collect()
    }

    #[test]
    fn rest_path_parameter_is_decoded_once() {
        let event = json!({
            "httpMethod": "DELETE",
            "resource": "/learnings/users/{user_id}",
            "path": "/learnings/users/a%2525b",
            "pathParameters": {"user_id": "a%2525b"},
            "requestContext": {}
        });

        assert_eq!(user_id(&event), "a%25b");
    }

    #[test]
    fn rest_encoded_pipe_is_decoded() {
        let event = json!({
            "httpMethod": "DELETE",
            "resource": "/learnings/users/{user_id}",
            "pathParameters": {"user_id": "idp%7Cuser-c"},
            "requestContext": {}
        });

        assert_eq!(user_id(&event), "idp|user-c");
    }

    #[test]
    fn http_api_path_parameter_is_not_decoded_again() {
        let event = json!({
            "version": "2.0",
            "routeKey": "DELETE /learnings/users/{user_id}",
            "rawPath": "/learnings/users/a%2525b",
            "rawQueryString": "",
            "pathParameters": {"user_id": "a%25b"},
            "requestContext": {"http": {"method": "DELETE"}, "stage": "$default"}
        });

        assert_eq!(user_id(&event), "a%25b");
    }

    #[test]
    fn function_url_raw_path_is_decoded_once() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/learnings/users/idp%7Cuser-c",
            "rawQueryString": "",
            "requestContext": {"http": {"method": "DELETE"}, "stage": "$default"}
        });

        assert_eq!(user_id(&event), "idp|user-c");
    }

    #[test]
    fn named_stage_prefix_is_stripped() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/prod/learnings/users/user-a",
            "rawQueryString": "",
            "requestContext": {"http": {"method": "DELETE"}, "stage": "prod"}
        });

        assert_eq!(user_id(&event), "user-a");
    }

    #[test]
    fn alb_path_and_query_are_decoded_once() {
        let event = json!({
            "httpMethod": "DELETE",
            "path": "/learnings/users/a%2525b",
            "queryStringParameters": {"learning_type": "entity%5Fmemory"},
            "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/t/1"}}
        });

        assert_eq!(user_id(&event), "a%25b");
        assert_eq!(query_values(&event, "learning_type"), ["entity_memory"]);
    }

    #[test]
    fn other_paths_are_not_the_route() {
        for path in [
            "/learnings/users",
            "/learnings/users/a/b",
            "/learnings",
            "/",
            "/learnings/users/a/",
        ] {
            let event = json!({
                "version": "2.0",
                "rawPath": path,
                "rawQueryString": "",
                "requestContext": {"http": {"method": "DELETE"}, "stage": "$default"}
            });
            assert_eq!(
                HttpEvent::parse(&event).unwrap().target,
                PathTarget::Other,
                "{path}"
            );
        }
    }

    #[test]
    fn other_route_template_is_not_matched() {
        let rest = json!({
            "httpMethod": "DELETE",
            "resource": "/admin/users/{user_id}",
            "path": "/admin/users/user-f",
            "pathParameters": {"user_id": "user-f"},
            "requestContext": {}
        });
        let http_api = json!({
            "version": "2.0",
            "routeKey": "DELETE /admin/users/{user_id}",
            "rawPath": "/admin/users/user-f",
            "rawQueryString": "",
            "pathParameters": {"user_id": "user-f"},
            "requestContext": {"http": {"method": "DELETE"}, "stage": "$default"}
        });

        assert_eq!(HttpEvent::parse(&rest).unwrap().target, PathTarget::Other);
        assert_eq!(
            HttpEvent::parse(&http_api).unwrap().target,
            PathTarget::Other
        );
    }

    #[test]
    fn any_method_route_key_is_the_route() {
        let event = json!({
            "version": "2.0",
            "routeKey": "ANY /learnings/users/{user_id}",
            "rawPath": "/prod/learnings/users/a%2525b",
            "rawQueryString": "",
            "pathParameters": {"user_id": "a%25b"},
            "requestContext": {"http": {"method": "DELETE"}, "stage": "prod"}
        });

        assert_eq!(user_id(&event), "a%25b");
    }

    #[test]
    fn encoded_slash_stays_in_user_id() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/learnings/users/a%2Fb",
            "rawQueryString": "",
            "requestContext": {"http": {"method": "DELETE"}, "stage": "$default"}
        });

        assert_eq!(user_id(&event), "a/b");
    }

    #[test]
    fn raw_query_string_keeps_repetitions() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/learnings/users/a",
            "rawQueryString": "learning_type=a&learning_type=b&x=%2C",
            "queryStringParameters": {"learning_type": "a,b", "x": ","},
            "requestContext": {"http": {"method": "DELETE"}, "stage": "$default"}
        });

        assert_eq!(query_values(&event, "learning_type"), ["a", "b"]);
        assert_eq!(query_values(&event, "x"), [","]);
    }

    #[test]
    fn comma_joined_values_are_repetitions() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/learnings/users/a",
            "queryStringParameters": {"learning_type": "a,b"},
            "requestContext": {"http": {"method": "DELETE"}, "stage": "$default"}
        });

        assert_eq!(query_values(&event, "learning_type"), ["a", "b"]);
    }

    #[test]
    fn rest_multi_value_map_keeps_repetitions() {
        let event = json!({
            "httpMethod": "DELETE",
            "resource": "/learnings/users/{user_id}",
            "pathParameters": {"user_id": "a"},
            "queryStringParameters": {"db_id": "b"},
            "multiValueQueryStringParameters": {"db_id": ["a", "b"]},
            "requestContext": {}
        });

        assert_eq!(query_values(&event, "db_id"), ["a", "b"]);
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/learnings/users/%FF",
            "rawQueryString": "learning_type=%FE",
            "requestContext": {"http": {"method": "DELETE"}, "stage": "$default"}
        });

        let parsed = HttpEvent::parse(&event).unwrap();

        assert!(matches!(parsed.target, PathTarget::UserId(Err(_))));
        assert!(parsed.query[0].value.is_err());
    }

    #[test]
    fn authorization_header_is_read() {
        let single = json!({"version": "2.0", "rawPath": "/", "headers": {"authorization": "Bearer a.b.c"},
            "requestContext": {"http": {"method": "DELETE"}}});
        let joined = json!({"version": "2.0", "rawPath": "/", "headers": {"authorization": "Bearer a.b.c,Bearer d.e.f"},
            "requestContext": {"http": {"method": "DELETE"}}});
        let repeated = json!({"httpMethod": "DELETE", "path": "/",
            "headers": {"Authorization": "Bearer d.e.f"},
            "multiValueHeaders": {"Authorization": ["Bearer a.b.c", "Bearer d.e.f"]}});
        let absent = json!({"httpMethod": "DELETE", "path": "/", "headers": null});

        assert_eq!(
            HttpEvent::parse(&single).unwrap().authorization,
            AuthorizationHeader::Single("Bearer a.b.c")
        );
        assert_eq!(
            HttpEvent::parse(&joined).unwrap().authorization,
            AuthorizationHeader::Multiple
        );
        assert_eq!(
            HttpEvent::parse(&repeated).unwrap().authorization,
            AuthorizationHeader::Multiple
        );
        assert_eq!(
            HttpEvent::parse(&absent).unwrap().authorization,
            AuthorizationHeader::Absent
        );
    }

    #[test]
    fn non_http_events_are_rejected() {
        for event in [
            json!(null),
            json!([]),
            json!("x"),
            json!({}),
            json!({"Records": []}),
        ] {
            assert!(HttpEvent::parse(&event).is_err(), "{event}");
        }
    }

    #[test]
    fn payload_v2_response_has_cookies() {
        let response = HttpResponse {
            status: 204,
            headers: Vec::new(),
            body: String::new(),
        };

        let shaped = response.into_lambda_response(Some(FrontEnd::HttpApiV2), false);

        assert_eq!(shaped["cookies"], json!([]));
        assert_eq!(shaped["statusCode"], 204);
    }

    #[test]
    fn alb_response_has_status_description() {
        let response = HttpResponse {
            status: 204,
            headers: Vec::new(),
            body: String::new(),
        };

        let shaped = response.into_lambda_response(Some(FrontEnd::Alb), true);

        assert_eq!(shaped["statusDescription"], "204 No Content");
        assert!(shaped["multiValueHeaders"].is_object());
        assert!(shaped.get("headers").is_none());
    }
}
