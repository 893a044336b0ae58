"""Item-to-item neighbours from the student's item embeddings (cosine similarity)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from model_consumer.api.deps import ApiKey, Model, SingleValuedQuery, State
from model_consumer.api.routes.recommendations import ERRORS, KQuery, check_k
from shared.schemas import SimilarItems

router = APIRouter(prefix="/v1/items", tags=["items"], dependencies=[ApiKey, SingleValuedQuery])


@router.get("/{item_id}/similar", response_model=SimilarItems, responses=ERRORS,
            summary="the k items most similar to an item, by the student's item embeddings")
def similar(item_id: str, state: State, model: Model, query: Annotated[KQuery, Query()]) -> SimilarItems:
    k = query.k
    check_k(k, state.settings.max_k)
    if item_id not in model.item_index:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown item id {item_id!r}: not in the catalog of the "
                            f"served model ({len(model.item_ids)} items)")
    return SimilarItems(item_id=item_id, items=model.similar(item_id, k), model_version=model.version)
