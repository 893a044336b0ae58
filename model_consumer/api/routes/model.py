"""The served model's card."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from model_consumer.api.deps import ApiKey, Model, SingleValuedQuery
from model_consumer.api.routes.recommendations import ERRORS
from shared.schemas import ModelCard, NoQuery

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[ApiKey, SingleValuedQuery])


@router.get("/model", response_model=ModelCard, responses=ERRORS,
            summary="family, size vs the teacher, export id, created at, lambda, temperature")
def card(model: Model, _: Annotated[NoQuery, Query()]) -> ModelCard:
    return model.card
