"""Dependencies of the routes as `Annotated` aliases: the state, the served model (503 until loaded), the bearer
keys (401 for a missing, repeated, malformed or wrong key) and `SingleValuedQuery`, which refuses a query parameter
given twice. Protected routers list their key first and `SingleValuedQuery` after it, so that a caller without a
valid key learns nothing of the API's shape: 401 comes before any 422. They only read memory and never block,
so they run on the event loop (a `def` dependency would cost every request a trip through the thread pool)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from model_consumer.api.state import ServiceState
from model_consumer.serving import LoadedModel
from model_consumer.settings import ConsumerSettings
from shared.http import REPEATED_AUTHORIZATION, CredentialError, bearer_credential, repeated_query_detail

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


async def get_model(state: State) -> LoadedModel:
    model = state.model
    if model is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not ready: no model is loaded yet (run "
                            "`gdrec-consumer distill`, then POST /v1/admin/reload)")
    return model


Model = Annotated[LoadedModel, Depends(get_model)]


def _same(presented: str, expected: SecretStr) -> bool:
    return hmac.compare_digest(presented.encode(), expected.get_secret_value().encode())


def matching_key(settings: ConsumerSettings, presented: str) -> str | None:
    """Which configured key `presented` is ("api" or "admin"), or None."""
    for name, expected in (("api", settings.api_key), ("admin", settings.admin_key)):
        if expected is not None and _same(presented, expected):
            return name
    return None


def _check(expected: SecretStr | None, request: Request, what: str) -> None:
    if expected is None:
        return
    try:
        presented = bearer_credential(request.headers.getlist("authorization"))
    except CredentialError as exc:
        detail = {"missing": f"missing {what}: send 'Authorization: Bearer <key>'", "repeated": REPEATED_AUTHORIZATION,
                  "malformed": "malformed Authorization header: send 'Authorization: Bearer <key>'"}[exc.problem]
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=_CHALLENGE) from None
    if not _same(presented, expected):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"invalid {what}", headers=_CHALLENGE)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]  # documents the scheme in OpenAPI


async def require_api_key(state: State, request: Request, _: Credentials) -> None:
    _check(state.settings.api_key, request, "API key")


async def require_admin_key(state: State, request: Request, _: Credentials) -> None:
    if state.settings.admin_key is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin routes are disabled: set GDREC_CONSUMER_ADMIN_KEY")
    _check(state.settings.admin_key, request, "admin key")


ApiKey = Depends(require_api_key)
AdminKey = Depends(require_admin_key)

REPEATABLE_QUERY = frozenset({"exclude"})  # query parameters a route reads as a list


async def single_valued_query(request: Request) -> None:
    """422 for a query parameter given more than once, except those read as lists (FastAPI would keep the last)."""
    detail = repeated_query_detail(request.query_params.multi_items(), REPEATABLE_QUERY)
    if detail is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


SingleValuedQuery = Depends(single_valued_query)
