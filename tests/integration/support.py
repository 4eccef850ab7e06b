"""Settings for integration tests: one place that builds them (and their environment)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from contracts.events import Environment
from contracts.pki import PkiDir
from contracts.synth import DEFAULT_UNIT_ORG_NUMBERS, dev_authorisation
from kpr.config import Settings

__all__ = ["environment_of", "pipeline_settings"]


def pipeline_settings(
    amqp_url: str,
    pki: PkiDir,
    state_dir: Path,
    *,
    store_url: str | None = None,
    grants: Sequence[str] | None = None,
    isolate: bool = True,
) -> Settings:
    """Settings for one test run in the test environment.

    ``grants`` are the units the dev sender may report for (default every synthetic
    unit); ``isolate`` gives every exchange and queue a fresh name prefix, so tests can
    share one broker and one vhost.
    """
    authorisation = state_dir / "authorisation.json"
    units = DEFAULT_UNIT_ORG_NUMBERS if grants is None else grants
    authorisation.write_bytes(dev_authorisation(pki.sender.info.org_number, units))
    return Settings().with_overrides(
        amqp_url=amqp_url,
        pki_dir=pki.directory,
        state_dir=state_dir,
        store_url=store_url or str(state_dir / "pathways.sqlite3"),
        environment=Environment.TEST,
        authorisation_file=authorisation,
        queue_prefix=f"t{secrets.token_hex(4)}." if isolate else None,
    )


def environment_of(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for ``kpr`` run as a subprocess."""
    assert settings.authorisation_file is not None
    return {
        **os.environ,
        "KPR_AMQP_URL": settings.amqp_url,
        "KPR_STORE_URL": settings.store_url,
        "KPR_PKI_DIR": str(settings.pki_dir),
        "KPR_STATE_DIR": str(settings.state_dir),
        "KPR_ENVIRONMENT": settings.environment.value,
        "KPR_AUTHORISATION_FILE": str(settings.authorisation_file),
        "KPR_QUEUE_PREFIX": settings.queue_prefix,
    }
