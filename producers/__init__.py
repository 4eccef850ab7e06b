"""The sending side: seal events and publish them with confirms.

Public API; nothing else in this package is meant to be imported from outside.
"""

from producers.publisher import Publisher, PublishOutcome, PublishReport
from producers.sealer import SealedMessage, Sealer, message_id_for

__all__ = [
    "PublishOutcome",
    "PublishReport",
    "Publisher",
    "SealedMessage",
    "Sealer",
    "message_id_for",
]
