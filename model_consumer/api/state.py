"""The service's mutable state: the served model, swapped as a whole under a lock (requests in flight keep the
model they started with), and its Prometheus metrics in a registry of its own."""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from model_consumer.serving import LoadedModel, load_model, precomputed
from model_consumer.settings import ConsumerSettings
from shared.device import resolve_device

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gdrec_consumer_requests", "HTTP requests served", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("gdrec_consumer_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                 registry=self.registry)
        self.model = Info("gdrec_consumer_model", "the served model", registry=self.registry)
        self.reloads = Counter("gdrec_consumer_model_reloads", "model swaps", ["outcome"], registry=self.registry)
        self.loaded_at = Gauge("gdrec_consumer_model_loaded_timestamp_seconds", "when the served model was loaded",
                               registry=self.registry)


class ServiceState:
    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        self.device = resolve_device(None if settings.device == "auto" else settings.device)
        self.metrics = Metrics()
        self._model: LoadedModel | None = None
        self._swap = threading.Lock()

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def reload(self) -> tuple[LoadedModel, bool]:
        """Load the published model and swap it in if it is a new version; returns (served model, swapped)."""
        with self._swap:
            loaded = load_model(self.settings.layout, self.device)  # read and checked, not yet precomputed
            if self._model is not None and loaded.version == self._model.version:
                return self._model, False
            loaded = precomputed(loaded, self.settings.max_k)
            previous, self._model = self._model, loaded
            self.metrics.model.info({"version": loaded.version, "export_id": loaded.card.export_id,
                                     "family": loaded.card.family})
            self.metrics.loaded_at.set_to_current_time()
            log.info("serving model %s (was %s)", loaded.version, previous.version if previous else "none")
            return loaded, True
