"""Top-K recommendations for user tokens. The caller may name items to leave out (only it knows the user's
history); the owner's remote evaluation does not: it asks for more items and filters locally."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import Field

from model_consumer.api.deps import ApiKey, Model, State
from shared.schemas import (
    BatchRecommendationRequest,
    BatchRecommendations,
    ErrorResponse,
    NoQuery,
    RecommendationList,
)

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"], dependencies=[ApiKey])

ERRORS = {
    401: {"model": ErrorResponse, "description": "missing or invalid API key"},
    404: {"model": ErrorResponse, "description": "unknown user token"},
    422: {"model": ErrorResponse, "description": "k out of range or malformed request"},
    503: {"model": ErrorResponse, "description": "no model loaded yet"},
}


class KQuery(NoQuery):
    k: int = Field(10, ge=1, description="how many items")


class RecommendQuery(KQuery):
    exclude: list[str] = Field(default_factory=list, description="item ids to leave out (repeatable)")


def check_k(k: int, max_k: int, where: str = "query parameter 'k'") -> None:
    if k > max_k:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{where}: must be at most {max_k} (got {k})")


@router.get("/batch", include_in_schema=False)
def batch_needs_post() -> None:
    """Without this route, GET /batch would be read as a lookup of the user token "batch"."""
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED, "the batch route takes POST with a JSON body "
                        '{"tokens": [...], "k": 10}; GET /v1/recommendations/<token> serves one user',
                        headers={"Allow": "POST"})


@router.get("/{token}", response_model=RecommendationList, responses=ERRORS,
            summary="the top-k catalog items for one user token, best first")
def recommend(token: str, state: State, model: Model, query: Annotated[RecommendQuery, Query()]
              ) -> RecommendationList:
    k, exclude = query.k, query.exclude
    check_k(k, state.settings.max_k)
    if token not in model.token_index:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user token {token[:12]}...: the served model "
                            f"({model.version}) was trained on export {model.card.export_id[:12]}, which does not "
                            "list it")
    items = model.recommend([token], k, exclude)[0]
    return RecommendationList(token=token, items=items, model_version=model.version)


@router.post("/batch", response_model=BatchRecommendations, responses=ERRORS,
             summary="top-k for many tokens at once; unknown tokens are listed, not an error")
def recommend_batch(body: BatchRecommendationRequest, state: State, model: Model) -> BatchRecommendations:
    check_k(body.k, state.settings.max_k, "body parameter 'k'")
    if len(body.tokens) > state.settings.max_batch:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"body 'tokens': at most "
                            f"{state.settings.max_batch} per request (got {len(body.tokens)})")
    known = [t for t in dict.fromkeys(body.tokens) if t in model.token_index]
    unknown = [t for t in dict.fromkeys(body.tokens) if t not in model.token_index]
    lists = model.recommend(known, body.k, body.exclude) if known else []
    return BatchRecommendations(
        results=[RecommendationList(token=t, items=items, model_version=model.version)
                 for t, items in zip(known, lists, strict=True)],
        unknown_tokens=unknown, model_version=model.version)
