"""Dependencies of the routes as `Annotated` aliases: the state, the served model (503 until loaded) and the
bearer keys (401 for a missing or wrong key)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from model_consumer.api.state import ServiceState
from model_consumer.serving import LoadedModel

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


def get_model(state: State) -> LoadedModel:
    model = state.model
    if model is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not ready: no model is loaded yet (run "
                            "`gdrec-consumer distill`, then POST /v1/admin/reload)")
    return model


Model = Annotated[LoadedModel, Depends(get_model)]


def _check(expected: SecretStr | None, request: Request, credentials: HTTPAuthorizationCredentials | None,
           what: str) -> None:
    if expected is None:
        return
    if credentials is None:
        problem = "malformed Authorization header" if request.headers.get("authorization") else f"missing {what}"
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{problem}: send 'Authorization: Bearer <key>'",
                            headers=_CHALLENGE)
    if not hmac.compare_digest(credentials.credentials.encode(), expected.get_secret_value().encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"invalid {what}", headers=_CHALLENGE)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require_api_key(state: State, request: Request, credentials: Credentials) -> None:
    _check(state.settings.api_key, request, credentials, "API key")


def require_admin_key(state: State, request: Request, credentials: Credentials) -> None:
    if state.settings.admin_key is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin routes are disabled: set GDREC_CONSUMER_ADMIN_KEY")
    _check(state.settings.admin_key, request, credentials, "admin key")


ApiKey = Depends(require_api_key)
AdminKey = Depends(require_admin_key)
