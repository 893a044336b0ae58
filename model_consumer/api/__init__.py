"""The consumer's REST API (v1): `create_app(settings)`."""

from model_consumer.api.app import create_app

__all__ = ["create_app"]
