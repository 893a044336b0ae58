"""Both services against their own OpenAPI documents: a schemathesis run (its engine, as `schemathesis run` drives
it) generates requests from each schema, valid and invalid ones, for every documented operation and for methods
the schema does not list, and runs every check it has on the answers: no 5xx, only documented status codes,
content types and headers, bodies of the documented schemas, valid data accepted, invalid data refused,
authentication enforced, 405 with a true Allow header. Any failure fails the test, with schemathesis's report.

The applications run in-process (ASGI), with a key; examples are few and the seed is fixed, so that both runs take
seconds. A cursor of the documented form that the owner never issued is a documented 400 (its check digits cannot
match), so the owner's run accepts 400 for valid data on that route."""

from __future__ import annotations

import os

import pytest
import schemathesis
import schemathesis.engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from data_owner.api import create_app as create_owner_app
from data_owner.keys import KeyStore
from data_owner.settings import OwnerSettings
from model_consumer.api import create_app as create_consumer_app
from model_consumer.settings import ConsumerLayout, ConsumerSettings
from model_consumer.students import distill_and_publish
from tests.integration.test_consumer_api import ADMIN_KEY, API_KEY, TINY
from tests.integration.test_owner_api import SECRET, install_export, make_bundle
from tests.unit.test_consumer_pull import synthetic_export

MAX_EXAMPLES = 10
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429"]  # schemathesis's, no 5xx
MAX_REPORT_CHARS = 3000  # of one failure: a generated body may be megabytes long
UNLIMITED = {"key_rate_per_s": 0, "address_rate_per_s": 0}  # a run sends far more requests than a client would


def run_config(headers: dict[str, str], operations: list[dict] | None = None, **checks) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": 20260101,
        "headers": headers,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        # a body over the service's max_body_bytes is refused with 413 (documented on every route) before it is read
        "checks": {"enabled": True, "negative_data_rejection": {"expected-statuses": [*REJECTIONS, "413"]},
                   **checks},
        "operations": operations or [],
    })


def failures_of(schema) -> list[str]:
    """Every failed check and every error of a full schemathesis run, as readable text."""
    problems: list[str] = []
    finished = None
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status is Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        problems.append(f"{failure.operation}: {check.name}: {failure.title}\n{failure.message}\n"
                                        f"{check.failure_info.code_sample}"[:MAX_REPORT_CHARS])
                    elif check.status is Status.ERROR:
                        problems.append(f"{event.recorder.label} ({case_id}): check {check.name} errored")
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            finished = event
            problems += [f"{failure.operation}: {failure.title}\n{failure.message}" for failure in event.failures]
    assert finished is not None, "the run did not finish"
    return problems


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No GDREC_* variable or .env of the developer's shell leaks into the settings."""
    for name in list(os.environ):
        if name.startswith(("GDREC_OWNER_", "GDREC_CONSUMER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_the_owner_answers_as_its_schema_says(tmp_path):
    settings = OwnerSettings(environment="development", artifacts_dir=tmp_path / "artifacts", secret=SECRET,
                             **UNLIMITED)
    install_export(settings.artifacts_dir, make_bundle())
    key = KeyStore(settings.keys_path).add("vendor", ["admin", "export"])[1]
    config = run_config({"Authorization": f"Bearer {key}"}, operations=[{
        "include-path": "/v1/export/users",
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "409"]}},
    }])
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_owner_app(settings), config=config)
    problems = failures_of(schema)
    assert not problems, "\n\n".join(problems)


def test_the_consumer_answers_as_its_schema_says(tmp_path):
    distill_and_publish(synthetic_export(), TINY, ConsumerLayout(tmp_path / "consumer"))
    settings = ConsumerSettings(environment="development", data_dir=tmp_path / "consumer", api_key=API_KEY,
                                admin_key=ADMIN_KEY, max_k=100, max_batch=50, **UNLIMITED)
    config = run_config({"Authorization": f"Bearer {API_KEY}"}, operations=[{
        "include-path": "/v1/admin/reload", "headers": {"Authorization": f"Bearer {ADMIN_KEY}"}}])
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_consumer_app(settings), config=config)
    problems = failures_of(schema)
    assert not problems, "\n\n".join(problems)
