"""The served student: top-K for a token (catalog order by the student's logits, caller's exclusions removed) and
item-to-item neighbours by cosine similarity of the student's item embeddings. One `LoadedModel` is immutable
once built; the service swaps a whole new one in to change models."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_consumer.settings import ConsumerLayout
from model_consumer.students import REPUBLISH, PublishedModelError, current_version, model_dir
from shared.checkpoint import load_checkpoint
from shared.models import Recommender
from shared.schemas import ModelCard, ScoredItem


class NoModelError(RuntimeError):
    """There is no published model to serve (run `gdrec-consumer distill`)."""


@dataclass(frozen=True)
class LoadedModel:
    model: Recommender
    card: ModelCard
    token_index: dict[str, int]
    item_ids: list[str]
    item_index: dict[str, int]
    item_unit: torch.Tensor  # [n_items, d] L2-normalised item embeddings
    device: torch.device

    @property
    def version(self) -> str:
        return self.card.model_version

    @torch.no_grad()
    def recommend(self, tokens: list[str], k: int, exclude: list[str] = ()) -> list[list[ScoredItem]]:
        """Top-k items per (known) token, best first; `exclude` ids are left out (unknown ids are ignored)."""
        users = torch.tensor([self.token_index[t] for t in tokens], dtype=torch.long, device=self.device)
        scores = self.model.score_all(users).float()
        drop = [self.item_index[i] for i in exclude if i in self.item_index]
        if drop:
            scores[:, drop] = float("-inf")
        k = min(k, len(self.item_ids) - len(set(drop)))
        top = torch.topk(scores, k, dim=1) if k > 0 else None
        if top is None:
            return [[] for _ in tokens]
        values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
        return [[ScoredItem(item_id=self.item_ids[i], score=s) for s, i in zip(vs, ix, strict=True)]
                for vs, ix in zip(values, indices, strict=True)]

    @torch.no_grad()
    def similar(self, item_id: str, k: int) -> list[ScoredItem]:
        row = self.item_index[item_id]
        sims = self.item_unit @ self.item_unit[row]
        sims[row] = float("-inf")
        k = min(k, len(self.item_ids) - 1)
        top = torch.topk(sims, k)
        return [ScoredItem(item_id=self.item_ids[i], score=s)
                for s, i in zip(top.values.cpu().tolist(), top.indices.cpu().tolist(), strict=True)]


def load_model(layout: ConsumerLayout, device: torch.device | str = "cpu", version: str | None = None) -> LoadedModel:
    """The published model (`models/current.json`), or the given version."""
    version = version or current_version(layout)
    if version is None:
        raise NoModelError(f"no model in {layout.models}: run `gdrec-consumer distill` first")
    directory = model_dir(layout, version)
    if not directory.is_dir():
        raise PublishedModelError(f"model version {version!r} (from {layout.current_model}) has no folder "
                                  f"{directory}; {REPUBLISH}")
    try:
        model, config = load_checkpoint(directory, device)
        meta = config["metadata"]
        card = ModelCard.model_validate(meta["card"])
        tokens, item_ids = list(meta["tokens"]), list(meta["item_ids"])
    except Exception as exc:  # torch.load of a damaged file raises almost anything (IndexError, UnpicklingError...)
        raise PublishedModelError(f"the model in {directory} cannot be loaded ({type(exc).__name__}: {exc}); "
                                  f"{REPUBLISH}") from exc
    model.eval()
    with torch.no_grad():
        unit = torch.nn.functional.normalize(model.item_embeddings().detach().float(), dim=1)
    return LoadedModel(model=model, card=card, token_index={t: i for i, t in enumerate(tokens)},
                       item_ids=item_ids, item_index={item: i for i, item in enumerate(item_ids)}, item_unit=unit,
                       device=torch.device(device))
