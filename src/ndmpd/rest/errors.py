"""ONTAP error envelope and the one table of every error code the REST API returns.

ONTAP clients (the `netapp-ontap` library, Ansible, Harvest) surface `error.message` and tests
read `error.code` and `error.target`, so codes, statuses and message shapes live here only:
handlers raise a named constructor and never spell a code themselves.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Code(IntEnum):
    """ONTAP error codes we use: the generic ones of spec §3.9 and the NDMP ones of §6."""

    DUPLICATE_ENTRY = 1
    INVALID_ARGUMENT = 2
    NOT_SUPPORTED = 3
    ENTRY_NOT_FOUND = 4
    PERMISSION_DENIED = 6
    RESOURCE_LIMIT = 7
    RESOURCE_IN_USE = 8
    INTERNAL_ERROR = 262145
    TOO_MANY_REQUESTS = 262160
    VALUE_MISSING = 262177
    UNEXPECTED_ARGUMENT = 262179
    INVALID_VALUE = 262185
    INVALID_COMBINATION = 262186
    DUPLICATE_FIELD = 262188
    NO_VALUES = 262190
    FIELD_NOT_SETTABLE = 262196
    INVALID_FIELD_VALUE = 262197
    BODY_NOT_ALLOWED = 262198
    MALFORMED_BODY = 262199
    SECRET_IN_URL = 262202
    REQUIRED_VALUE_MISSING = 262212
    DUPLICATE_VALUE = 262222
    FIELD_NOT_READABLE = 262249
    FILTER_NOT_READABLE = 262250
    ARRAY_EXPECTED = 262254
    ARRAY_UNEXPECTED = 262255
    ORDER_BY_NOT_ALLOWED = 262268
    MISMATCHED_BRACES = 262286
    # NDMP-specific (spec §6); statuses are our choice, following ONTAP's usual mapping.
    NDMP_USER_REQUIRED = 68812800
    NDMP_NODE_OP_IN_SVM_MODE = 68812801
    NDMP_INVALID_UUID = 68812802
    NDMP_SVM_NAME_UNRESOLVED = 68812803
    NDMP_NODE_NAME_UNRESOLVED = 68812804
    NDMP_MODE_UNKNOWN = 68812805
    NDMP_SESSION_KEY_REQUIRED = 68812806
    NDMP_NODE_SCOPE_UNSUPPORTED = 68812807
    NDMP_SVM_AWARE_DISABLED = 65601536
    NDMP_SSO_NOT_EXCLUSIVE = 65601551
    NDMP_SSO_NO_PASSWORD = 65601560
    NDMP_NODE_SCOPE_FSX = 65601575
    NDMP_PLATFORM_UNSUPPORTED = 65601587


class RestError(Exception):
    """An error answered as ONTAP's `{"error": {...}}` envelope with an HTTP status."""

    def __init__(
        self, status: int, code: str | int, message: str, target: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = str(int(code)) if isinstance(code, int) else code
        self.message = message
        self.target = target

    def __repr__(self) -> str:
        return (
            f"RestError(status={self.status}, code={self.code!r}, "
            f"message={self.message!r}, target={self.target!r})"
        )

    def envelope(self) -> dict[str, Any]:
        """The JSON body; `code` is a string of digits as ONTAP sends it."""
        error: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.target is not None:
            error["target"] = self.target
        return {"error": error}

    # -- generic codes (§3.9) -------------------------------------------------------------

    @classmethod
    def duplicate_entry(cls, target: str | None = None) -> RestError:
        return cls(409, Code.DUPLICATE_ENTRY, "An entry with the same key already exists.", target)

    @classmethod
    def invalid_argument(cls, message: str, target: str | None = None) -> RestError:
        """Code 2: a malformed key or value, e.g. a bad UUID in a path or filter."""
        return cls(400, Code.INVALID_ARGUMENT, message, target)

    @classmethod
    def not_supported(cls, message: str = "Operation not supported.") -> RestError:
        return cls(405, Code.NOT_SUPPORTED, message)

    @classmethod
    def not_found(cls, target: str | None = None) -> RestError:
        return cls(404, Code.ENTRY_NOT_FOUND, "entry doesn't exist", target)

    @classmethod
    def permission_denied(cls, target: str | None = None) -> RestError:
        return cls(403, Code.PERMISSION_DENIED, "not authorized for that command", target)

    @classmethod
    def resource_in_use(cls, message: str, target: str | None = None) -> RestError:
        return cls(409, Code.RESOURCE_IN_USE, message, target)

    @classmethod
    def too_many_requests(cls) -> RestError:
        return cls(429, Code.TOO_MANY_REQUESTS, "Too many requests are already in progress.")

    @classmethod
    def internal(cls, message: str = "Internal error.") -> RestError:
        return cls(500, Code.INTERNAL_ERROR, message)

    @classmethod
    def unexpected_argument(cls, name: str) -> RestError:
        """262179: an unknown query parameter, filter field or body field."""
        return cls(400, Code.UNEXPECTED_ARGUMENT, f'Unexpected argument "{name}".', name)

    @classmethod
    def invalid_value(cls, value: object, target: str, reason: str | None = None) -> RestError:
        """262185: a query parameter, filter or body value that cannot be used."""
        text = value if isinstance(value, str) else repr(value)
        message = f'Invalid value "{text}" for "{target}".'
        if reason:
            message = f"{message} {reason}"
        return cls(400, Code.INVALID_VALUE, message, target)

    @classmethod
    def duplicate_field(cls, name: str) -> RestError:
        return cls(400, Code.DUPLICATE_FIELD, f'Field "{name}" was specified twice.', name)

    @classmethod
    def no_values(cls) -> RestError:
        return cls(400, Code.NO_VALUES, "No values were specified to apply.")

    @classmethod
    def field_not_settable(cls, name: str) -> RestError:
        """262196: a read-only field in a PATCH body."""
        return cls(
            400,
            Code.FIELD_NOT_SETTABLE,
            f'Field "{name}" cannot be set in this operation.',
            name,
        )

    @classmethod
    def invalid_field_value(cls, value: str, field: str) -> RestError:
        """262197, worded as ONTAP words a bad `fields=` entry."""
        return cls(
            400,
            Code.INVALID_FIELD_VALUE,
            f'The value "{value}" is invalid for field "{field}"',
            field,
        )

    @classmethod
    def body_not_allowed(cls) -> RestError:
        return cls(400, Code.BODY_NOT_ALLOWED, "A request body is not allowed on this method.")

    @classmethod
    def malformed_body(cls, reason: str = "The request body is not a JSON object.") -> RestError:
        return cls(400, Code.MALFORMED_BODY, reason)

    @classmethod
    def secret_in_url(cls, name: str) -> RestError:
        return cls(
            400, Code.SECRET_IN_URL, f'Field "{name}" is secret and cannot be in the URL.', name
        )

    @classmethod
    def required_value_missing(cls, name: str, message: str | None = None) -> RestError:
        return cls(
            400,
            Code.REQUIRED_VALUE_MISSING,
            message or f'A value for "{name}" is required.',
            name,
        )

    @classmethod
    def filter_required(cls) -> RestError:
        """Collection PATCH/DELETE with neither a filter nor `records` (spec §3.7, quirk Q2)."""
        return cls(
            400,
            Code.REQUIRED_VALUE_MISSING,
            'At least one field filter or a "records" array is required '
            "for an operation on a collection.",
        )

    @classmethod
    def duplicate_value(cls, value: object, target: str) -> RestError:
        return cls(
            400, Code.DUPLICATE_VALUE, f'The value "{value}" is listed twice in "{target}".', target
        )

    @classmethod
    def field_not_readable(cls, name: str) -> RestError:
        """262249: a write-only field named in `fields=`."""
        return cls(400, Code.FIELD_NOT_READABLE, f'Field "{name}" cannot be read.', "fields")

    @classmethod
    def filter_not_readable(cls, name: str) -> RestError:
        """262250: a write-only field used as a query filter."""
        return cls(
            400,
            Code.FILTER_NOT_READABLE,
            f'Field "{name}" cannot be read, so it cannot be used as a filter.',
            name,
        )

    @classmethod
    def array_expected(cls, target: str) -> RestError:
        return cls(400, Code.ARRAY_EXPECTED, f'Field "{target}" expects an array.', target)

    @classmethod
    def array_unexpected(cls, target: str) -> RestError:
        return cls(400, Code.ARRAY_UNEXPECTED, f'Field "{target}" does not take an array.', target)

    @classmethod
    def order_by_not_allowed(cls, name: str) -> RestError:
        return cls(
            400,
            Code.ORDER_BY_NOT_ALLOWED,
            f'Field "{name}" is not allowed in "order_by".',
            "order_by",
        )

    @classmethod
    def mismatched_braces(cls, value: str) -> RestError:
        return cls(
            400, Code.MISMATCHED_BRACES, f'Mismatched braces in "fields" value "{value}".', "fields"
        )

    # -- NDMP codes (§6) ------------------------------------------------------------------

    @classmethod
    def ndmp_user_required(cls) -> RestError:
        return cls(
            400,
            Code.NDMP_USER_REQUIRED,
            "NDMP cannot be enabled on the node until an NDMP user is configured.",
            "enabled",
        )

    @classmethod
    def ndmp_node_op_in_svm_mode(cls) -> RestError:
        return cls(
            400,
            Code.NDMP_NODE_OP_IN_SVM_MODE,
            "Node-scoped NDMP operations are not allowed while NDMP is in SVM-scope mode.",
        )

    @classmethod
    def ndmp_invalid_uuid(cls, target: str = "uuid") -> RestError:
        return cls(400, Code.NDMP_INVALID_UUID, "The specified UUID is not valid.", target)

    @classmethod
    def ndmp_svm_name_unresolved(cls, target: str = "owner.uuid") -> RestError:
        return cls(
            404,
            Code.NDMP_SVM_NAME_UNRESOLVED,
            "Failed to find an SVM name for the specified SVM UUID.",
            target,
        )

    @classmethod
    def ndmp_node_name_unresolved(cls, target: str = "node.uuid") -> RestError:
        return cls(
            404,
            Code.NDMP_NODE_NAME_UNRESOLVED,
            "Failed to find a node name for the specified node UUID.",
            target,
        )

    @classmethod
    def ndmp_mode_unknown(cls) -> RestError:
        return cls(500, Code.NDMP_MODE_UNKNOWN, "Failed to determine the current NDMP mode.")

    @classmethod
    def ndmp_session_key_required(cls) -> RestError:
        return cls(
            400,
            Code.NDMP_SESSION_KEY_REQUIRED,
            "Both an owner UUID and a session ID are required.",
        )

    @classmethod
    def ndmp_node_scope_unsupported(cls) -> RestError:
        return cls(
            400,
            Code.NDMP_NODE_SCOPE_UNSUPPORTED,
            "Node-scope NDMP mode is not supported on this platform.",
            "mode",
        )

    @classmethod
    def ndmp_svm_aware_disabled(cls) -> RestError:
        return cls(
            400,
            Code.NDMP_SVM_AWARE_DISABLED,
            "SVM-aware NDMP is disabled (NDMP is in node-scope mode); "
            "SVM-scoped NDMP operations are not allowed.",
        )

    @classmethod
    def ndmp_sso_not_exclusive(cls) -> RestError:
        return cls(
            400,
            Code.NDMP_SSO_NOT_EXCLUSIVE,
            '"plaintext_sso" cannot be combined with other authentication types.',
            "authentication_types",
        )

    @classmethod
    def ndmp_sso_no_password(cls) -> RestError:
        return cls(
            400,
            Code.NDMP_SSO_NO_PASSWORD,
            "No NDMP-specific password can be generated while the authentication type is "
            '"plaintext_sso".',
        )

    @classmethod
    def ndmp_node_scope_fsx(cls) -> RestError:
        return cls(
            400,
            Code.NDMP_NODE_SCOPE_FSX,
            "Node-scope NDMP mode is not supported in FSx for ONTAP.",
            "mode",
        )

    @classmethod
    def ndmp_platform_unsupported(cls) -> RestError:
        return cls(400, Code.NDMP_PLATFORM_UNSUPPORTED, "NDMP is not supported on this platform.")
