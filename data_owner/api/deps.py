"""Dependencies of the routes, as `Annotated` aliases: the loaded state (503 until ready), the caller's API key
(401 / 403) and the served export (403 for another consumer's key); and `SingleValuedQuery`, which refuses a
query parameter given twice. A protected router lists its key first and `SingleValuedQuery` after it, so that a
caller without a valid key learns nothing of the API's shape: 401 comes before any 422."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from data_owner.api.state import ServedExport, ServiceState
from data_owner.audit import AuditLog
from data_owner.keys import ApiKey, Scope
from shared.http import REPEATED_AUTHORIZATION, CredentialError, bearer_credential, repeated_query_detail

_bearer = HTTPBearer(auto_error=False, description="a consumer API key: `Authorization: Bearer gdr_<id>_<secret>`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None or not getattr(request.app.state, "ready", False):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not ready: the export is not loaded yet")
    return state


State = Annotated[ServiceState, Depends(get_state)]


_CREDENTIAL_PROBLEMS = {
    "missing": "missing API key: send 'Authorization: Bearer <key>'",
    "repeated": REPEATED_AUTHORIZATION,
    "malformed": "malformed Authorization header: expected 'Bearer <key>'",
}


KEY_CHECK = "gdrec_key_check"  # request state: (presented key, its AuthResult), set by the rate limiter's `identify`


def authenticate(
    request: Request, state: State, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> ApiKey:
    try:
        presented = bearer_credential(request.headers.getlist("authorization"))
    except CredentialError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, _CREDENTIAL_PROBLEMS[exc.problem],
                            headers=_CHALLENGE) from None
    checked = getattr(request.state, KEY_CHECK, None)  # the rate limiter's check of the same request
    result = checked[1] if checked is not None and checked[0] == presented else state.keys.authenticate(presented)
    if result.unavailable:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, result.reason, headers={"Retry-After": "30"})
    if result.key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, result.reason, headers=_CHALLENGE)
    return result.key


def require_scope(scope: Scope):
    def dependency(key: Annotated[ApiKey, Depends(authenticate)]) -> ApiKey:
        if scope.value not in key.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"API key {key.key_id} lacks the '{scope.value}' scope "
                                f"(it has: {', '.join(key.scopes)})")
        return key

    return dependency


export_key = require_scope(Scope.export)
admin_key = require_scope(Scope.admin)
ExportKey = Annotated[ApiKey, Depends(export_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]

REPEATABLE_QUERY: frozenset[str] = frozenset()  # query parameters a route reads as a list


def single_valued_query(request: Request) -> None:
    """422 for a query parameter given more than once (FastAPI would silently keep the last)."""
    detail = repeated_query_detail(request.query_params.multi_items(), REPEATABLE_QUERY)
    if detail is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


SingleValuedQuery = Depends(single_valued_query)


def served_export(state: State, key: ExportKey) -> ServedExport:
    """The export, for a key of the consumer it was built for (tokens are pseudonyms per consumer)."""
    if key.consumer != state.export.consumer_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"API key {key.key_id} belongs to consumer '{key.consumer}'; "
                            f"the export served here was built for consumer '{state.export.consumer_id}'")
    return state.export


Export = Annotated[ServedExport, Depends(served_export)]


def audit_log(state: State) -> AuditLog:
    return state.audit


Audit = Annotated[AuditLog, Depends(audit_log)]
