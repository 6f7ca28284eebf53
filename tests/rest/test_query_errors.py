"""The error envelope and the code/status table of the REST API."""

from __future__ import annotations

import pytest

from ndmpd.rest.errors import Code, RestError


def test_envelope_shape() -> None:
    e = RestError(404, 4, "entry doesn't exist", "uuid")
    assert e.envelope() == {
        "error": {"message": "entry doesn't exist", "code": "4", "target": "uuid"}
    }
    assert RestError(400, "262179", "x").envelope() == {"error": {"message": "x", "code": "262179"}}
    assert str(e) == "entry doesn't exist" and "404" in repr(e)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (RestError.duplicate_entry(), 409, 1),
        (RestError.invalid_argument("bad uuid", "svm.uuid"), 400, 2),
        (RestError.not_supported(), 405, 3),
        (RestError.not_found("uuid"), 404, 4),
        (RestError.permission_denied(), 403, 6),
        (RestError.resource_in_use("busy"), 409, 8),
        (RestError.internal(), 500, 262145),
        (RestError.too_many_requests(), 429, 262160),
        (RestError.unexpected_argument("x"), 400, 262179),
        (RestError.invalid_value("v", "f"), 400, 262185),
        (RestError.duplicate_field("f"), 400, 262188),
        (RestError.no_values(), 400, 262190),
        (RestError.field_not_settable("f"), 400, 262196),
        (RestError.invalid_field_value("size", "fields"), 400, 262197),
        (RestError.body_not_allowed(), 400, 262198),
        (RestError.malformed_body(), 400, 262199),
        (RestError.secret_in_url("password"), 400, 262202),
        (RestError.required_value_missing("x"), 400, 262212),
        (RestError.filter_required(), 400, 262212),
        (RestError.duplicate_value("a", "f"), 400, 262222),
        (RestError.field_not_readable("password"), 400, 262249),
        (RestError.filter_not_readable("password"), 400, 262250),
        (RestError.array_expected("f"), 400, 262254),
        (RestError.array_unexpected("f"), 400, 262255),
        (RestError.order_by_not_allowed("f"), 400, 262268),
        (RestError.mismatched_braces("a{"), 400, 262286),
        (RestError.ndmp_user_required(), 400, 68812800),
        (RestError.ndmp_node_op_in_svm_mode(), 400, 68812801),
        (RestError.ndmp_invalid_uuid(), 400, 68812802),
        (RestError.ndmp_svm_name_unresolved(), 404, 68812803),
        (RestError.ndmp_node_name_unresolved(), 404, 68812804),
        (RestError.ndmp_mode_unknown(), 500, 68812805),
        (RestError.ndmp_session_key_required(), 400, 68812806),
        (RestError.ndmp_node_scope_unsupported(), 400, 68812807),
        (RestError.ndmp_svm_aware_disabled(), 400, 65601536),
        (RestError.ndmp_sso_not_exclusive(), 400, 65601551),
        (RestError.ndmp_sso_no_password(), 400, 65601560),
        (RestError.ndmp_node_scope_fsx(), 400, 65601575),
        (RestError.ndmp_platform_unsupported(), 400, 65601587),
    ],
)
def test_named_constructors(error: RestError, status: int, code: int) -> None:
    assert error.status == status
    assert error.code == str(code) and int(error.code) in set(Code)
    body = error.envelope()["error"]
    assert body["code"] == str(code) and body["message"]


def test_ontap_wordings() -> None:
    assert RestError.not_found().message == "entry doesn't exist"
    assert RestError.invalid_field_value("size", "fields").envelope() == {
        "error": {
            "message": 'The value "size" is invalid for field "fields"',
            "code": "262197",
            "target": "fields",
        }
    }
