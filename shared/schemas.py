"""Wire schemas (contract v1): everything that may cross from the data owner to the model consumer.

Items are named by the catalog's external item ids (public); users only by opaque tokens
(HMAC-SHA256 of the raw id under the owner's secret). Inbound models are strict (`extra="forbid"`)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal["1"] = "1"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeacherCard(Strict):
    """What the consumer may know of the teacher: its family, size and architecture widths."""

    family: Literal["bpr", "neumf"]
    num_parameters: int = Field(gt=0)
    config: dict[str, int | float | bool | list[int]] = Field(
        description="architecture keyword arguments (widths, regularisation), enough to size a student"
    )


class PrivacySwitches(Strict):
    include_observed: bool = Field(description="whether a user's own training items may appear in their list")
    randomized_response_epsilon: float | None = Field(
        default=None, gt=0, description="epsilon-LDP per interaction on the generator's input; None = off"
    )


class UserRecord(Strict):
    """One user's export: the generated list (best first) and the teacher's soft target for each listed item."""

    token: str = Field(min_length=16, max_length=128, pattern=r"^[0-9a-f]+$")
    items: list[str] = Field(min_length=1)
    soft_targets: list[Probability]

    @model_validator(mode="after")
    def _aligned(self) -> UserRecord:
        if len(self.items) != len(self.soft_targets):
            raise ValueError(f"items ({len(self.items)}) and soft_targets ({len(self.soft_targets)}) must align")
        if len(set(self.items)) != len(self.items):
            raise ValueError("a user's list must not repeat an item")
        return self


class ExportManifest(Strict):
    schema_version: Literal["1"] = SCHEMA_VERSION
    export_id: str = Field(description="sha256 of the export's content: same content, same id")
    created_at: datetime
    n_users: int = Field(ge=0)
    item_ids: list[str] = Field(min_length=1, description="the catalog, in the teacher's item order")
    list_length: int = Field(gt=0)
    temperature: float = Field(gt=0)
    teacher: TeacherCard
    privacy: PrivacySwitches


class ExportBundle(Strict):
    """A whole export in one object (in-process use and files); the service pages `users` by cursor."""

    manifest: ExportManifest
    users: list[UserRecord]

    @model_validator(mode="after")
    def _consistent(self) -> ExportBundle:
        if len(self.users) != self.manifest.n_users:
            raise ValueError(f"manifest says {self.manifest.n_users} users, the bundle holds {len(self.users)}")
        catalog = set(self.manifest.item_ids)
        for record in self.users:
            unknown = [item for item in record.items if item not in catalog]
            if unknown:
                raise ValueError(f"user {record.token[:12]}... lists items outside the catalog: {unknown[:3]}")
        return self


def content_sha256(users: list[UserRecord]) -> str:
    """Canonical hash of user records (sorted keys, no whitespace): the export id and page hashes use it."""
    digest = hashlib.sha256()
    for record in users:
        digest.update(json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()
