"""The data owner's REST service (API v1): health, readiness, the export (manifest and cursor-paginated user
pages) for authenticated consumers, and the audit log for administrators. Build it with `create_app(settings)`."""

from data_owner.api.app import create_app
from data_owner.api.state import OwnerStartupError, check_artifacts

__all__ = ["OwnerStartupError", "check_artifacts", "create_app"]
