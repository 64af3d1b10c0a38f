"""Schemathesis checks for the statuses that this service documents beside the contract.

scripts/conformance.sh loads this file through SCHEMATHESIS_HOOKS. The contract,
api/delete-learning-user.openapi.yaml, documents 204, 401, 403, 422 and 500. README.md's status
table documents 400, 404 and 405 as well, with the same {detail, error_code} body as the
contract's error schemas. Schemathesis's own status_code_conformance check would report those
three as undocumented, and its response_schema_conformance check skips them, so the script
replaces the first with `status_documented` and adds `service_error_body_conformance`.
"""

from __future__ import annotations

import json

import jsonschema_rs
import schemathesis

# The statuses of README.md's table that the contract does not list.
SERVICE_STATUSES = frozenset({400, 404, 405})


def is_emulator_preflight(case, response):
    """Return True for cargo lambda watch's own response to an OPTIONS request.

    cargo lambda watch 1.9.2 serves the function URL behind a permissive CORS layer, which
    responds to every OPTIONS request with an empty 200 and never invokes the function. When
    the function itself receives OPTIONS, it returns 405, as for every method except DELETE.
    """
    return (
        case.method.upper() == "OPTIONS"
        and response.status_code == 200
        and not response.content
        and "access-control-allow-credentials" in response.headers
    )


@schemathesis.check
def status_documented(ctx, response, case):
    """Fail on a status that neither the contract nor README.md documents."""
    if is_emulator_preflight(case, response):
        return None
    documented = case.operation.responses.status_codes
    if str(response.status_code) in documented or response.status_code in SERVICE_STATUSES:
        return None
    allowed = sorted({*documented, *map(str, SERVICE_STATUSES)})
    raise AssertionError(
        f"Undocumented status {response.status_code}. "
        f"The contract and README.md document {', '.join(allowed)}."
    )


@schemathesis.check
def service_error_body_conformance(ctx, response, case):
    """Validate a 400, 404 or 405 body against every error schema of the operation."""
    if response.status_code not in SERVICE_STATUSES:
        return None

    content_types = response.headers.get("content-type", [])
    if not any(value.split(";")[0].strip() == "application/json" for value in content_types):
        raise AssertionError(
            f"Status {response.status_code} has content-type {content_types or 'none'}, "
            "expected application/json."
        )
    try:
        body = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"Status {response.status_code} has a body that is not JSON: {error}") from None

    schemas = _error_schemas(case.operation)
    if not schemas:
        raise AssertionError(f"{case.operation.label} documents no JSON error schema to validate against.")
    for name, schema in schemas.items():
        errors = [error.message for error in jsonschema_rs.validator_for(schema).iter_errors(body)]
        if errors:
            raise AssertionError(
                f"Status {response.status_code} body {body!r} does not match {name}: {'; '.join(errors)}"
            )
    return None


def _error_schemas(operation):
    """Return the application/json schemas of the operation's 4xx and 5xx responses, by name.

    NOTE: a $ref inside a component schema is not resolved. The contract's error schemas have
    none, and a new one would make jsonschema_rs raise, so the check errors instead of passing.
    """
    raw = operation.schema.raw_schema
    responses = raw["paths"][operation.path][operation.method.lower()]["responses"]
    schemas = {}
    for status, definition in responses.items():
        if not status.startswith(("4", "5")):
            continue
        schema = definition.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            continue
        name = f"the {status} schema"
        reference = schema.get("$ref", "")
        if reference.startswith("#/components/schemas/"):
            name = reference.rsplit("/", 1)[1]
            schema = raw["components"]["schemas"][name]
        schemas[name] = schema
    return schemas
