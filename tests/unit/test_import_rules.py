"""The rooms of ARCHITECTURE.md: shared imports no service; the services never import each other."""

import logging
from pathlib import Path

from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_hold(monkeypatch):
    # lint_imports reconfigures logging (disabling existing loggers); keep the rest of the session's logging intact
    manager = logging.Logger.manager
    disabled = {name: logger.disabled for name, logger in manager.loggerDict.items()
                if isinstance(logger, logging.Logger)}
    root_handlers, root_level = list(logging.root.handlers), logging.root.level
    monkeypatch.chdir(REPO)
    try:
        assert lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True) == 0
    finally:
        for name, was_disabled in disabled.items():
            logger = manager.loggerDict.get(name)
            if isinstance(logger, logging.Logger):
                logger.disabled = was_disabled
        logging.root.handlers[:] = root_handlers
        logging.root.setLevel(root_level)
