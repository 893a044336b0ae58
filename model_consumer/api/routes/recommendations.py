"""Top-K recommendations for user tokens. The caller may name items to leave out (only it knows the user's
history); the owner's remote evaluation does not: it asks for more items and filters locally.

The answers are JSON bytes built once from plain lists (`pydantic_core.to_json`, the serializer the response models
use, so the bytes are those of `RecommendationList` / `BatchRecommendations`); the models stay the documented
`response_model` of each route.

The batch route reads its JSON body itself, after the key was checked (a body parameter would be read and parsed
by the framework before any dependency runs): a caller without a valid key learns nothing of the body's shape."""

from __future__ import annotations

from email.message import Message
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError
from pydantic_core import to_json

from model_consumer.api.deps import ApiKey, Model, SingleValuedQuery, State
from model_consumer.serving import Ranking
from shared.schemas import (
    MAX_EXCLUDED_ITEMS,
    SCHEMA_VERSION,
    BatchRecommendationRequest,
    BatchRecommendations,
    ErrorResponse,
    ExcludedItem,
    NoQuery,
    RecommendationList,
)

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"], dependencies=[ApiKey, SingleValuedQuery])

ERRORS = {
    401: {"model": ErrorResponse, "description": "missing, repeated, malformed or invalid API key"},
    404: {"model": ErrorResponse, "description": "unknown user token"},
    422: {"model": ErrorResponse, "description": "k out of range or malformed request"},
    503: {"model": ErrorResponse, "description": "no model loaded yet"},
}
BATCH_ERRORS = {
    400: {"model": ErrorResponse, "description": "the request body is not UTF-8 text"},
    422: {"model": ErrorResponse, "description": "the body is not a JSON object of the schema (with Content-Type: "
                                                 "application/json), k is out of range or there are too many tokens"},
}


class KQuery(NoQuery):
    k: int = Field(10, ge=1, description="how many items (at most the service's max_k)")


class RecommendQuery(KQuery):
    exclude: list[ExcludedItem] = Field(default_factory=list, max_length=MAX_EXCLUDED_ITEMS,
                                        description="item ids to leave out (repeatable)")


def _listing(token: str, ranking: Ranking, model_version: str) -> dict:
    """A `RecommendationList` as plain data, its fields in the model's order."""
    return {"schema_version": SCHEMA_VERSION, "token": token,
            "items": [{"item_id": item, "score": score}
                      for item, score in zip(ranking.item_ids, ranking.scores, strict=True)],
            "model_version": model_version}


def _json_response(payload: dict) -> Response:
    return Response(to_json(payload), media_type="application/json")


def check_k(k: int, max_k: int, where: str = "query parameter 'k'") -> None:
    if k > max_k:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{where}: must be at most {max_k} (got {k})")


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    header = Message()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def batch_request(request: Request) -> BatchRecommendationRequest:
    """The body of POST /batch: a JSON object (Content-Type: application/json) of `BatchRecommendationRequest`."""
    content_type = request.headers.get("content-type")
    if not _is_json(content_type):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "request body: expected a JSON object "
                            f"(Content-Type: application/json), got Content-Type {content_type or 'none'!r}")
    raw = await request.body()  # at most the service's max_body_bytes: the body limit has seen to it
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"request body is not UTF-8 text (byte {exc.start} "
                            "cannot be decoded): send JSON encoded as UTF-8") from None
    try:
        return BatchRecommendationRequest.model_validate_json(text)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


BatchRequest = Annotated[BatchRecommendationRequest, Depends(batch_request)]


# Before `router` in the app, and without a key like every other 405: the methods are in the public schema anyway.
batch_methods = APIRouter(prefix="/v1/recommendations", tags=["recommendations"])


@batch_methods.api_route("/batch", methods=["GET", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False)
def batch_needs_post() -> None:
    """Without this route, GET /batch would be read as a lookup of the user token "batch" and OPTIONS would name
    GET as the batch route's method."""
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED, "the batch route takes POST with a JSON body "
                        '{"tokens": [...], "k": 10}; GET /v1/recommendations/<token> serves one user',
                        headers={"Allow": "POST"})


@router.get("/{token}", response_model=RecommendationList, responses=ERRORS,
            summary="the top-k catalog items for one user token, best first")
async def recommend(token: str, state: State, model: Model, query: Annotated[RecommendQuery, Query()]
                    ) -> Response:
    k, exclude = query.k, query.exclude
    check_k(k, state.settings.max_k)
    if token not in model.token_index:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user token {token[:12]}...: the served model "
                            f"({model.version}) was trained on export {model.card.export_id[:12]}, which does not "
                            "list it")
    if model.precomputed(k, exclude):  # a slice of a precomputed row: no need for the thread pool
        ranking = model.recommend([token], k, exclude)[0]
    else:  # scoring the catalog must not block the event loop
        ranking = (await anyio.to_thread.run_sync(model.recommend, [token], k, exclude))[0]
    return _json_response(_listing(token, ranking, model.version))


BATCH_BODY = {"required": True, "content": {"application/json": {
    "schema": BatchRecommendationRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}


@router.post("/batch", response_model=BatchRecommendations, responses={**ERRORS, **BATCH_ERRORS},
             openapi_extra={"requestBody": BATCH_BODY},
             summary="top-k for many tokens at once; unknown tokens are listed, not an error")
def recommend_batch(body: BatchRequest, state: State, model: Model) -> Response:
    check_k(body.k, state.settings.max_k, "body parameter 'k'")
    if len(body.tokens) > state.settings.max_batch:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"body 'tokens': at most "
                            f"{state.settings.max_batch} per request (got {len(body.tokens)})")
    known = [t for t in dict.fromkeys(body.tokens) if t in model.token_index]
    unknown = [t for t in dict.fromkeys(body.tokens) if t not in model.token_index]
    lists = model.recommend(known, body.k, body.exclude) if known else []
    return _json_response({
        "schema_version": SCHEMA_VERSION,
        "results": [_listing(t, ranking, model.version) for t, ranking in zip(known, lists, strict=True)],
        "unknown_tokens": unknown, "model_version": model.version})
