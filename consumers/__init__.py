"""The receiving side: open, validate, pseudonymise, deduplicate, apply to pathways.

Public API; nothing else in this package is meant to be imported from outside.
"""

from consumers.consumer import Consumer
from consumers.opener import Opener, VerifiedEvent
from consumers.processing import Disposition, Outcome, Processor, pseudonymise
from consumers.pseudonym import Pseudonymiser, load_or_create_key
from consumers.store import (
    ApplyResult,
    EventRecord,
    PathwayStore,
    PostgresStore,
    SenderActivity,
    SqliteStore,
    StoreSummary,
    open_store,
)

__all__ = [
    "ApplyResult",
    "Consumer",
    "Disposition",
    "EventRecord",
    "Opener",
    "Outcome",
    "PathwayStore",
    "PostgresStore",
    "Processor",
    "Pseudonymiser",
    "SenderActivity",
    "SqliteStore",
    "StoreSummary",
    "VerifiedEvent",
    "load_or_create_key",
    "open_store",
    "pseudonymise",
]
