"""The one exception tree of kpr-stream.

The class of an exception *is* the handling decision, so the consumer's
ack / dead-letter / retry choice is a lookup on this tree, never a chain of ``if``s::

    KprError
     ├── Rejected                      permanent: dead-letter at once, receipt to the sender
     │    ├── MalformedMessage          not CMS / not DER / not JSON / too large       (exit 3)
     │    │    └── MessageTooLarge      over the 1 MB limit, refused before parsing
     │    ├── UnsupportedAlgorithm      DES, 3DES, RC2, MD5, SHA-1, RSA < 2048 ...     (exit 3)
     │    ├── DecryptionFailed          every unwrap / decrypt failure, one class:      (exit 5)
     │    │                             no padding or MAC oracle
     │    ├── SignatureInvalid          signature or message digest does not verify    (exit 4)
     │    ├── UntrustedSigner           no chain to the trust store, wrong key usage   (exit 4)
     │    │    ├── CertificateExpired   outside its validity at signing time or now
     │    │    └── CertificateRevoked   listed on a configured CRL
     │    ├── SenderNotAuthorised       signer may not report for this unit (spoofing) (exit 4)
     │    ├── RecipientMismatch         signed letter names another recipient / ids    (exit 4)
     │    ├── ContractViolation         the event breaks a contract rule               (exit 6)
     │    │    └── UnknownSchemaVersion a schema version this side does not know
     │    └── ConflictingDuplicate      same event id + revision, different content
     ├── TransientFailure              retry later with backoff, then dead-letter
     │    ├── StoreUnavailable          the pathway store cannot commit now
     │    └── CrlUnavailable            a configured CRL cannot be fetched now
     └── PublishFailed                 the producer could not get a broker confirm
          ├── Unroutable                returned by the broker (mandatory flag)
          ├── PublishNacked             the broker refused the message
          └── ConfirmTimeout            no confirm in time: outcome unknown, resend

Operator-facing errors: what stops a command before (or instead of) its work. Each has
the exit code of the ``kpr`` command line (kpr/cli.py maps every failure to one line and
one of these; docs/OPERATIONS.md has the table, a test keeps the two in step)::

    KprError
     └── OperatorError                 a fault an operator can fix; ``hint`` says how
          ├── SettingsError            an environment variable or option is wrong   (exit 7)
          ├── BrokerUnreachable        no broker answers at that URL, or TLS mismatch (exit 8)
          ├── BrokerRefused            the broker refused the login, vhost or queue   (exit 9)
          ├── StoreError               the pathway store cannot be opened or used     (exit 10)
          ├── KeyMaterialError         PKI folder, certificate, key or trust file     (exit 11)
          └── InputRefused             an input file or output path cannot be used    (exit 3)

``InputRefused`` shares exit 3 with :class:`MalformedMessage`: both say "the input given
cannot be used as it is", whether a message, an events file or an output path.

Exit codes outside the tree: 0 ok, 1 the command's own failure (e.g. no such dead
letter, a message not confirmed), 2 usage (argparse, and option values out of range),
70 a bug of ours (internal error), 130 interrupted (SIGINT), 143 terminated (SIGTERM).

Anything outside this tree is our own bug. The consumer does not catch it: the
message goes back to the queue and the quorum queue's delivery limit dead-letters it.

Every :class:`Rejected` carries a :class:`Reason` from a fixed, documented vocabulary,
and a description that must never contain personal data (it goes into broker
headers and receipts). Messages are written by this package, not formatted from input.
"""

from __future__ import annotations

from enum import StrEnum, unique

__all__ = [
    "BrokerRefused",
    "BrokerUnreachable",
    "CertificateExpired",
    "CertificateRevoked",
    "ConfirmTimeout",
    "ConflictingDuplicate",
    "ContractViolation",
    "CrlUnavailable",
    "DecryptionFailed",
    "InputRefused",
    "KeyMaterialError",
    "KprError",
    "MalformedMessage",
    "MessageTooLarge",
    "OperatorError",
    "PublishFailed",
    "PublishNacked",
    "Reason",
    "RecipientMismatch",
    "Rejected",
    "SenderNotAuthorised",
    "SettingsError",
    "SignatureInvalid",
    "StoreError",
    "StoreUnavailable",
    "TransientFailure",
    "UnknownSchemaVersion",
    "Unroutable",
    "UnsupportedAlgorithm",
    "UntrustedSigner",
]


@unique
class Reason(StrEnum):
    """Dead-letter reason codes: the fixed vocabulary operators filter on.

    ``national_condition`` maps each to the error condition the national service bus
    uses in error messages back to a sender.
    """

    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    UNDECRYPTABLE = "undecryptable"
    BAD_SIGNATURE = "bad-signature"
    UNTRUSTED_CERTIFICATE = "untrusted-certificate"
    EXPIRED_CERTIFICATE = "expired-certificate"
    REVOKED_CERTIFICATE = "revoked-certificate"
    SENDER_NOT_AUTHORISED = "sender-not-authorised"
    WRONG_RECIPIENT = "wrong-recipient"
    INVALID_CONTRACT = "invalid-contract"
    UNKNOWN_SCHEMA_VERSION = "unknown-schema-version"
    CONFLICTING_DUPLICATE = "conflicting-duplicate"
    RETRIES_EXHAUSTED = "retries-exhausted"
    DELIVERY_LIMIT = "delivery-limit"

    @property
    def national_condition(self) -> str:
        return _NATIONAL_CONDITIONS[self]


_NATIONAL_CONDITIONS: dict[Reason, str] = {
    Reason.MALFORMED: "transport:not-well-formed-xml",
    Reason.TOO_LARGE: "transport:invalid-field-value",
    Reason.UNSUPPORTED_ALGORITHM: "transport:unsupported-message",
    Reason.UNDECRYPTABLE: "transport:invalid-certificate",
    Reason.BAD_SIGNATURE: "transport:unverified-certificate",
    Reason.UNTRUSTED_CERTIFICATE: "transport:unverified-certificate",
    Reason.EXPIRED_CERTIFICATE: "transport:expired-certificate",
    Reason.REVOKED_CERTIFICATE: "transport:revoked-certificate",
    Reason.SENDER_NOT_AUTHORISED: "abuse:spoofing-attack",
    Reason.WRONG_RECIPIENT: "abuse:spoofing-attack",
    Reason.INVALID_CONTRACT: "transport:invalid-field-value",
    Reason.UNKNOWN_SCHEMA_VERSION: "transport:unsupported-message",
    Reason.CONFLICTING_DUPLICATE: "transport:invalid-field-value",
    Reason.RETRIES_EXHAUSTED: "transport:internal-error",
    Reason.DELIVERY_LIMIT: "transport:internal-error",
}


class KprError(Exception):
    """Root of every error kpr-stream raises on purpose."""


class Rejected(KprError):
    """A permanent rejection: retrying the same bytes can never succeed."""

    reason: Reason = Reason.MALFORMED
    exit_code: int = 3

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description
        #: What is known of the rejected event once its signature held: ``event_id``,
        #: ``event_type``, ``unit_org``, ``municipality``. Never personal data.
        self.context: dict[str, str] = {}


class MalformedMessage(Rejected):
    reason = Reason.MALFORMED
    exit_code = 3


class MessageTooLarge(MalformedMessage):
    reason = Reason.TOO_LARGE


class UnsupportedAlgorithm(Rejected):
    reason = Reason.UNSUPPORTED_ALGORITHM
    exit_code = 3


class DecryptionFailed(Rejected):
    """Raised for *every* failure to unwrap the key or decrypt the content.

    One class and one message whatever the cause, so the outcome is no oracle.
    """

    reason = Reason.UNDECRYPTABLE
    exit_code = 5

    def __init__(self, description: str = "the message cannot be decrypted with our keys") -> None:
        super().__init__(description)


class SignatureInvalid(Rejected):
    reason = Reason.BAD_SIGNATURE
    exit_code = 4


class UntrustedSigner(Rejected):
    reason = Reason.UNTRUSTED_CERTIFICATE
    exit_code = 4


class CertificateExpired(UntrustedSigner):
    reason = Reason.EXPIRED_CERTIFICATE


class CertificateRevoked(UntrustedSigner):
    reason = Reason.REVOKED_CERTIFICATE


class SenderNotAuthorised(Rejected):
    reason = Reason.SENDER_NOT_AUTHORISED
    exit_code = 4


class RecipientMismatch(Rejected):
    reason = Reason.WRONG_RECIPIENT
    exit_code = 4


class ContractViolation(Rejected):
    """An event that breaks a contract rule.

    ``field`` is the dotted path of the offending field and ``rule`` the rule's
    stable name (e.g. ``national-id-checksum``); neither ever holds a value.
    """

    reason = Reason.INVALID_CONTRACT
    exit_code = 6

    def __init__(self, description: str, *, field: str = "", rule: str = "") -> None:
        super().__init__(description)
        self.field = field
        self.rule = rule


class UnknownSchemaVersion(ContractViolation):
    reason = Reason.UNKNOWN_SCHEMA_VERSION


class ConflictingDuplicate(Rejected):
    reason = Reason.CONFLICTING_DUPLICATE
    exit_code = 6


class TransientFailure(KprError):
    """Might succeed later: retry with backoff, dead-letter after the last attempt."""


class StoreUnavailable(TransientFailure):
    pass


class CrlUnavailable(TransientFailure):
    pass


class PublishFailed(KprError):
    """The producer did not get a positive confirm for a message."""


class Unroutable(PublishFailed):
    pass


class PublishNacked(PublishFailed):
    pass


class ConfirmTimeout(PublishFailed):
    """No confirm in time: the message may or may not be on the broker. Resend it."""


# -- operator-facing errors (exit codes of the kpr command line) ------------------------


class OperatorError(KprError):
    """A fault outside the code that an operator can fix: ``str()`` names what failed,
    ``hint`` what to do. Never personal data or a password in either."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class SettingsError(OperatorError, ValueError):
    """A setting (environment variable or option) is missing, malformed or out of range.

    Also a ``ValueError``: callers that checked settings with ``except ValueError`` still do.
    """

    exit_code = 7


class BrokerUnreachable(OperatorError, ConnectionError):
    """No broker answered: unknown host, refused port, timeout, TLS to a plain port."""

    exit_code = 8


class BrokerRefused(OperatorError):
    """A broker answered and said no: credentials, vhost, permissions, missing queue."""

    exit_code = 9


class StoreError(OperatorError):
    """The pathway store cannot be opened or is not a kpr store (or a newer one)."""

    exit_code = 10


class KeyMaterialError(OperatorError, ValueError):
    """A PKI folder, certificate, private key, trust or key file is missing or unusable."""

    exit_code = 11


class InputRefused(OperatorError, ValueError):
    """An input file cannot be read as what it should be, or an output path not written."""

    exit_code = 3
