"""Wire schemas (contract v1): everything that may cross from the data owner to the model consumer.

Items are named by the catalog's external item ids (public); users only by opaque tokens
(HMAC-SHA256 of the raw id under the owner's secret). Inbound models are strict (`extra="forbid"`)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

SCHEMA_VERSION: Literal["1"] = "1"
# The export manifest's minor revision 1.1 adds the generator card (`ExportManifest.generator`); a manifest without
# one stays "1", so exports built without a card read exactly as before.
MANIFEST_GENERATOR_VERSION: Literal["1.1"] = "1.1"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoQuery(Strict):
    """The query of an HTTP route that takes no query parameters (and the base of those that take some): an
    unknown parameter is refused with a 422, not silently ignored."""


class TeacherCard(Strict):
    """What the consumer may know of the teacher: its family, size and architecture widths."""

    family: Literal["bpr", "neumf"]
    num_parameters: int = Field(gt=0)
    config: dict[str, int | float | bool | list[int]] = Field(
        description="architecture keyword arguments (widths, regularisation), enough to size a student"
    )


class GeneratorCard(Strict):
    """Where the exported lists came from: the list generator's family, the settings it was fitted with (chosen on
    the owner's validation items), and aggregate statistics of the exported lists. Nothing per user."""

    family: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$",
                        description="the list generator: cgan (the paper's), itemknn, vae, teacher, ease")
    settings: dict[str, Any] = Field(description="the generator's fitted settings (JSON values)")
    lists: dict[str, float | int] = Field(
        description="aggregate statistics of the exported lists: list_length, n_users, observed_share (share of "
                    "list slots holding the user's own training items), distinct_items, coverage (their share of "
                    "the catalog), top1pct_share (share of slots taken by the 1% most listed items)")


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
    schema_version: Literal["1", "1.1"] = Field(
        default=SCHEMA_VERSION, description='"1.1" when the manifest carries a generator card, else "1"')
    export_id: str = Field(description="sha256 of the export's content: same content, same id")
    created_at: datetime
    n_users: int = Field(ge=0)
    item_ids: list[str] = Field(min_length=1, description="the catalog, in the teacher's item order")
    list_length: int = Field(gt=0)
    temperature: float = Field(gt=0)
    teacher: TeacherCard
    privacy: PrivacySwitches
    generator: GeneratorCard | None = Field(default=None, description="where the lists came from (version 1.1)")

    @model_validator(mode="after")
    def _versioned(self) -> ExportManifest:
        if (self.generator is not None) != (self.schema_version == MANIFEST_GENERATOR_VERSION):
            raise ValueError(f'schema_version "{MANIFEST_GENERATOR_VERSION}" goes with a generator card and "1" '
                             f"without one (got {self.schema_version!r} "
                             f"{'with' if self.generator is not None else 'without'} a card)")
        return self


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


# ----------------------------------------------------------------------------------------------------------------
# Owner service (API v1): export pages, audit log, errors


Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ExportPage(Strict):
    """One page of an export's users (GET /v1/export/users). `sha256` is `content_sha256(users)`: recompute it
    from the parsed records and compare before storing the page. Pass `next_cursor` back as `?cursor=` for the
    next page; it is None on the last page. Cursors stay valid for as long as the same export is served."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    export_id: str
    cursor: str | None = Field(description="the cursor this page was asked for; None for the first page")
    next_cursor: str | None = Field(description="the cursor of the next page; None when this page is the last")
    users: list[UserRecord]
    sha256: Sha256Hex = Field(description="content_sha256(users)")

    def hash_matches(self) -> bool:
        """Whether `sha256` is the hash of the records as parsed (a transfer or storage check)."""
        return content_sha256(self.users) == self.sha256


class AuditHead(Strict):
    """The end of the audit log: record it elsewhere to detect a later truncation or rewrite. `tag` is
    HMAC-SHA256 of "<seq>:<hash>" under a key derived from the owner's secret: with the secret, it proves that the
    owner's service issued this head."""

    seq: int = Field(ge=0, description="seq of the last entry (0: empty log)")
    hash: Sha256Hex = Field(description="hash of the last entry (64 zeros for an empty log)")
    tag: Sha256Hex | None = Field(None, description="the owner's MAC of seq and hash (None where not known)")


AUDIT_EXPORT_FIELDS = ("key_id", "consumer", "endpoint", "export_id", "cursor", "users", "items", "payload_sha256",
                       "privacy")
AUDIT_RESEAL_FIELDS = ("reason", "findings", "previous_head", "log_sha256")


class AuditEntry(Strict):
    """One entry of the owner's audit log: a served export request (`kind` "export") or an operator's reseal of a
    log that failed verification (`kind` "reseal"). An entry holds the fields of its kind only.

    Entries are hash-chained and MACed: `hash` is the sha256 of the entry's canonical JSON (sorted keys, no
    whitespace) without `hash` and `mac`; `prev_hash` is the previous entry's `hash` (64 zeros for the first);
    `mac` is HMAC-SHA256 of `hash` under a key derived from the owner's secret. This model serialises to the same
    JSON object as the log line, so `hash` can be recomputed from an entry read over the API."""

    seq: int = Field(ge=1, description="1-based position in the log, across its segments")
    time: datetime
    kind: Literal["export", "reseal"]
    key_id: str | None = Field(None, description="export: id of the API key that made the request (never the key)")
    consumer: str | None = Field(None, description="export: the key's consumer")
    endpoint: str | None = Field(None, description="export: the route served")
    export_id: str | None = Field(None, description="export: the export served")
    cursor: str | None = Field(None, description="export: the cursor asked for (None for a first page)")
    users: int | None = Field(None, ge=0, description="export: user records served")
    items: int | None = Field(None, ge=0, description="export: listed items served, over all users")
    payload_sha256: Sha256Hex | None = Field(None, description="export: sha256 of what was served")
    privacy: PrivacySwitches | None = Field(None, description="export: the export's privacy switches")
    reason: str | None = Field(None, min_length=1, max_length=2000, description="reseal: why, as the operator gave it")
    findings: list[str] | None = Field(None, description="reseal: the problems verification found")
    previous_head: AuditHead | None = Field(None, description="reseal: the head record found (None: missing or "
                                            "unreadable)")
    log_sha256: Sha256Hex | None = Field(None, description="reseal: sha256 of every line before this entry")
    prev_hash: Sha256Hex
    hash: Sha256Hex
    mac: Sha256Hex

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> AuditEntry:
        own, other = ((AUDIT_EXPORT_FIELDS, AUDIT_RESEAL_FIELDS) if self.kind == "export"
                      else (AUDIT_RESEAL_FIELDS, AUDIT_EXPORT_FIELDS))
        optional = {"cursor", "previous_head"}
        missing = [name for name in own if name not in self.model_fields_set
                   or (getattr(self, name) is None and name not in optional)]
        article = "an" if self.kind == "export" else "a"
        if missing:
            raise ValueError(f"{article} {self.kind} entry needs {', '.join(missing)}")
        foreign = [name for name in other if name in self.model_fields_set]
        if foreign:
            raise ValueError(f"{article} {self.kind} entry has no {', '.join(foreign)}")
        return self

    @model_serializer(mode="wrap")
    def _only_fields_of_its_kind(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in AUDIT_RESEAL_FIELDS if self.kind == "export" else AUDIT_EXPORT_FIELDS:
            data.pop(name, None)
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """Document the fields (those of the entry's kind are present), not the serializer's plain dict."""

        def without_serializer(schema: Any) -> Any:  # the model schema sits inside its validator's schema
            if schema.get("type") == "model":
                return {key: value for key, value in schema.items() if key != "serialization"}
            return {**schema, "schema": without_serializer(schema["schema"])}

        return handler(without_serializer(core_schema))


class AuditLogPage(Strict):
    """GET /v1/audit/log: entries with seq > `after`, oldest first; `next_after` pages on (None: none left)."""

    entries: list[AuditEntry]
    head: AuditHead
    next_after: int | None


class ErrorResponse(Strict):
    """Every error of both services: a JSON object with one human-readable `detail`."""

    detail: str


# ----------------------------------------------------------------------------------------------------------------
# Consumer service (API v1): what the owner's remote evaluation calls


class ScoredItem(Strict):
    item_id: str = Field(min_length=1, description="the catalog's external item id")
    score: float = Field(allow_inf_nan=False)


class RecommendationList(Strict):
    """GET /v1/recommendations/{token}?k=K on the consumer: the top-K catalog items for a user token, best first.
    The owner asks for more than K items and removes the user's history itself: the consumer never receives it."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    token: str = Field(min_length=16, max_length=128, pattern=r"^[0-9a-f]+$")
    items: list[ScoredItem]
    model_version: str = Field(min_length=1, description="identifies the served model (e.g. checkpoint hash)")

    @model_validator(mode="after")
    def _unique(self) -> RecommendationList:
        ids = [item.item_id for item in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError("a recommendation list must not repeat an item")
        return self


MAX_BATCH_TOKENS = 10_000  # the contract's bound; a consumer serves fewer per request (its max_batch setting)
MAX_EXCLUDED_ITEMS = 10_000  # item ids one request may ask to leave out
MAX_ITEM_ID_CHARS = 256

ExcludedItem = Annotated[str, Field(min_length=1, max_length=MAX_ITEM_ID_CHARS)]


def _json_integer(value: object) -> object:
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# A JSON number without a fractional part (JSON Schema's integer: 3 and 3.0); true or "3" is refused, not read as 1
# or 3, and 3.5 is refused too.
JsonInteger = Annotated[int, BeforeValidator(_json_integer)]


class BatchRecommendationRequest(Strict):
    """POST /v1/recommendations/batch on the consumer: top-k for many tokens at once (the same k and exclusions)."""

    tokens: list[Annotated[str, Field(min_length=16, max_length=128, pattern=r"^[0-9a-f]+$")]] = Field(
        min_length=1, max_length=MAX_BATCH_TOKENS)
    k: JsonInteger = Field(10, ge=1)
    exclude: list[ExcludedItem] = Field(default_factory=list, max_length=MAX_EXCLUDED_ITEMS,
                                        description="item ids to leave out of every list")


class BatchRecommendations(Strict):
    """The answer to a batch request: one list per known token, in the request's order; unknown tokens listed."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    results: list[RecommendationList]
    unknown_tokens: list[str]
    model_version: str


class SimilarItems(Strict):
    """GET /v1/items/{item_id}/similar?k= on the consumer: the items nearest by cosine of the student's embeddings."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    item_id: str
    items: list[ScoredItem]
    model_version: str


class ModelCard(Strict):
    """GET /v1/model on the consumer: what the served student is and what it was trained from."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    model_version: str
    family: Literal["bpr", "neumf"]
    num_parameters: int = Field(gt=0)
    teacher_parameters: int = Field(gt=0)
    parameter_ratio: float = Field(gt=0, description="num_parameters / teacher_parameters")
    config: dict[str, int | float | bool | list[int]]
    export_id: str
    created_at: datetime
    lam: float = Field(ge=0, description="lambda: the weight of L_GD in L_S = L_GF + lambda * L_GD")
    temperature: float = Field(gt=0)
    n_users: int = Field(gt=0)
    n_items: int = Field(gt=0)
    best_epoch: int = Field(ge=0)
    epochs_run: int = Field(ge=0)
