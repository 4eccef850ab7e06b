"""Configuration from the environment (and matching command-line options).

- ``KPR_AMQP_URL``: broker URL (``amqps://`` for TLS); default a local broker.
- ``KPR_STORE_URL``: SQLite path, ``sqlite:///path`` or ``postgresql://...``;
  default ``$KPR_STATE_DIR/pathways.sqlite3``.
- ``KPR_PKI_DIR``: a directory laid out as ``kpr pki dev`` writes it;
  default ``$KPR_STATE_DIR/pki``.
- ``KPR_ENVIRONMENT``: ``production`` (the default, fails safe) or ``test``.
- ``KPR_REGISTER_HER_ID``: the register's HER-id (ours, as receiver); default 8133973.
- ``KPR_PROFILE``: the sender's CMS profile, ``national`` (default) or ``strict``.
- ``KPR_LETTER``: the form of the signed letter a producer sends, ``msghead`` (KITH MsgHead
  v1.2, the default, as the national bus's EPJ systems send) or ``json`` (the earlier form,
  still read by the consumer through the migration window).
- ``KPR_APPREC``: which decisions the consumer sends the sender a KITH AppRec v1.1 for,
  on its ``{herId}_async`` queue: ``all`` (the default: committed and duplicate as OK,
  dead-lettered as rejected), ``rejections``, or ``off``. Only to senders whose encryption
  certificate the address register holds.
- ``KPR_ADDRESS_REGISTER``: JSON ``{"<HER-id>": "<PEM path>"}``, each sender's encryption
  certificate (paths relative to the file; see ``contracts/addressregister.py``); in the
  test environment, without it, the ``address-register.json`` beside the development PKI.
- ``KPR_STALL_AFTER``: seconds a delivery may stay undecided before the consumer logs it
  and ``/readyz`` reports it; default 120.
- ``KPR_PSEUDONYM_KEY_FILE``: the pseudonym key (hex, >= 32 bytes); required in production,
  ``$KPR_STATE_DIR/pseudonym.key`` (created) in test.
- ``KPR_AUTHORISATION_FILE``: JSON ``{signer_org: [unit_org, ...]}``; without it a unit
  may only report for itself.
- ``KPR_STATE_DIR``: where the demo keeps broker, PKI, store and keys; default ``.kpr``.
- ``KPR_METRICS_PORT``: HTTP port for ``/metrics``, ``/healthz``, ``/readyz``; default off.
- ``KPR_QUEUE_PREFIX``: prefix of every exchange and queue name (tests, benchmarks).
- ``KPR_METRICS_HOST``: the address the metrics/probe endpoint binds to; default
  ``127.0.0.1`` (containers set ``0.0.0.0``).
- ``KPR_INCOMPLETE_STAY_DAYS``: a stay with one side only is reported as overdue after this
  many days (metric ``kpr_pathway_incomplete_stays_overdue``); default 7.
- ``KPR_OPEN_WORKERS``: consumer worker processes for decrypt + verify + validate
  (0, the default, opens in the consumer process itself). Set it to the cores a consumer
  has to itself; keep 0 where it shares them with a producer or the broker, where the
  extra processes cost more than they add (``kpr bench`` measures both ways).
- ``KPR_GROUP_COMMIT_LINGER_MS``: how long the consumer's group commit may wait for
  more deliveries to join it before it starts (it starts at once when 32 are there);
  default 10. Under a trickle this trades up to that much latency per event for one
  commit, fsync and ack frame per batch instead of per message (``kpr bench``: end to
  end ~1,125 -> ~1,265 /s); 0 commits whatever is there at once.
- ``KPR_SENDER_HER_ID``: set on a sender's producer whose broker user may only write to its
  own inbound exchange ``kpr.in.{herId}``: publish there and declare nothing.
- ``KPR_CONNECT_TIMEOUT``: seconds a command's first connection to the broker may take
  (per node) before it fails with the broker named; default 30. Reconnects after a first
  success are the robust connection's and do not give up.
- ``KPR_DRAIN_TIMEOUT``: seconds a stopping consumer / producer waits for in-flight
  messages (SIGTERM); default 30.
- ``KPR_PARTITIONS``: number of partition queues behind the consistent-hash exchange
  (see ``contracts/topology.py``); 0 (the default) is the single work queue. Producers and
  consumers must agree (a producer declares the topology unless ``KPR_SENDER_HER_ID``).
- ``KPR_PARTITION_KEY_FILE``: the producer's partition key (hex, >= 16 bytes) for the
  partition token (``contracts/partitioning.py``); required in production when
  ``KPR_PARTITIONS`` > 0, a fixed public development key in test.
- ``KPR_PARTITION_CONSUMERS``: how many consumer processes share the partitions; each
  first claims ``ceil(partitions / this)`` partitions nobody consumes yet; default 1.
- ``KPR_PARTITION_STANDBY_DELAY``: seconds before a consumer also subscribes, as standby,
  to the partitions it did not claim (then it takes over when their active consumer
  goes); default 10.
- ``KPR_AMQP_CA_FILE``: CA bundle that verifies the broker's TLS certificate; setting it
  turns TLS on (the URL must then be ``amqps://``; TLS 1.2 or 1.3 only).
- ``KPR_AMQP_CLIENT_CERT``, ``KPR_AMQP_CLIENT_KEY``: a TLS client certificate and key;
  with them the client logs in with SASL EXTERNAL (the broker maps the certificate's
  common name to a user) instead of the URL's user and password.

Production certificates are set file by file, overriding ``KPR_PKI_DIR``:
``KPR_SIGNER_CERT``, ``KPR_SIGNER_KEY``, ``KPR_SIGNER_CHAIN``, ``KPR_RECIPIENT_CERT`` (producer);
``KPR_DECRYPT_CERT``, ``KPR_DECRYPT_KEY``, ``KPR_DECRYPT_PREVIOUS_CERT``,
``KPR_DECRYPT_PREVIOUS_KEY``, ``KPR_TRUST_ROOTS``, ``KPR_TRUST_INTERMEDIATES``,
``KPR_CRL_FILES`` (consumer; lists are separated by ``:``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from contracts.addressregister import DEV_ADDRESS_REGISTER_FILE, FileAddressRegister
from contracts.apprec import AppRecMode
from contracts.connection import TlsSettings, broker_urls
from contracts.envelope import DecryptionKey, Profile, SigningIdentity
from contracts.errors import KeyMaterialError, SettingsError
from contracts.events import Environment
from contracts.letter import LetterForm
from contracts.partitioning import DEV_PARTITION_KEY, parse_partition_key
from contracts.pki import (
    PkiDir,
    load_ca_certificates,
    load_certificate,
    load_certificates,
    load_private_key,
    load_recipient_certificate,
)
from contracts.topology import KPR_HER_IDS, Topology
from contracts.trust import FileCrlSource, SenderAuthorisation, TrustStore

__all__ = ["DEV_AUTHORISATION_FILE", "Settings", "read_authorisation"]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEV_AUTHORISATION_FILE = "authorisation.json"  # what `kpr pki dev` writes beside the PKI
MAX_PORT = 65535
STORE_SCHEMES = ("sqlite", "postgresql", "postgres")

E = TypeVar("E", bound=StrEnum)
N = TypeVar("N", int, float)


def _choice(env: Mapping[str, str], name: str, kind: type[E], default: str) -> E:
    value = env.get(name, default)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise SettingsError(f"{name}={value!r} is not one of: {allowed}") from None


def _number(
    env: Mapping[str, str],
    name: str,
    default: N,
    kind: Callable[[str], N],
    *,
    minimum: float = 0,
    unit: str = "",
) -> N:
    """``env[name]`` as ``kind`` (``int`` or ``float``), at least ``minimum``; empty is the
    default. Anything else names the variable and what it takes."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {what}{unit}") from None
    if value != value or value < minimum:  # NaN compares false with everything
        raise SettingsError(f"{name}={raw!r} must be {what} of at least {minimum:g}{unit}")
    return value


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _paths(value: str | None) -> list[Path]:
    return [Path(part) for part in (value or "").split(":") if part]


def read_authorisation(path: Path) -> SenderAuthorisation:
    """The operator's authorisation file; a missing or invalid one is a
    :class:`SettingsError` naming it."""
    hint = "KPR_AUTHORISATION_FILE names a JSON file of grants (docs/OPERATIONS.md)"
    try:
        return SenderAuthorisation.from_json_file(path)
    except OSError as error:
        raise SettingsError(
            f"cannot read the authorisation file {path}: {error.strerror or error}", hint
        ) from None
    except ValueError as error:  # orjson.JSONDecodeError is a ValueError
        raise SettingsError(
            f"the authorisation file {path} is not valid: {str(error).splitlines()[0]}", hint
        ) from None


@dataclass(frozen=True)
class Settings:
    amqp_url: str = DEFAULT_AMQP_URL
    store_url: str = ".kpr/pathways.sqlite3"
    pki_dir: Path = Path(".kpr/pki")
    state_dir: Path = Path(".kpr")
    environment: Environment = Environment.PRODUCTION
    register_her_id: int = KPR_HER_IDS["test"]
    profile: Profile = Profile.NATIONAL
    letter_form: LetterForm = LetterForm.MSGHEAD
    apprec: AppRecMode = AppRecMode.ALL
    address_register_file: Path | None = None
    pseudonym_key_file: Path | None = None
    authorisation_file: Path | None = None
    metrics_port: int | None = None
    queue_prefix: str = ""
    drain_timeout_s: float = 30.0
    stall_after_s: float = 120.0
    amqp_ca_file: Path | None = None
    amqp_client_cert: Path | None = None
    amqp_client_key: Path | None = None
    sender_her_id: int | None = None
    open_workers: int = 0
    partitions: int = 0
    partition_key_file: Path | None = None
    partition_consumers: int = 1
    partition_standby_delay_s: float = 10.0
    metrics_host: str = "127.0.0.1"
    incomplete_stay_days: float = 7.0
    group_commit_linger_s: float = 0.010
    connect_timeout_s: float = 30.0
    env: Mapping[str, str] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        state_dir = Path(env.get("KPR_STATE_DIR", ".kpr"))
        key_file = env.get("KPR_PSEUDONYM_KEY_FILE")
        authorisation = env.get("KPR_AUTHORISATION_FILE")
        metrics_port = _number(env, "KPR_METRICS_PORT", -1, int)
        sender_her_id = _number(env, "KPR_SENDER_HER_ID", 0, int, minimum=1)
        return cls(
            amqp_url=env.get("KPR_AMQP_URL", DEFAULT_AMQP_URL),
            store_url=env.get("KPR_STORE_URL", str(state_dir / "pathways.sqlite3")),
            pki_dir=Path(env.get("KPR_PKI_DIR", str(state_dir / "pki"))),
            state_dir=state_dir,
            environment=_choice(env, "KPR_ENVIRONMENT", Environment, "production"),
            register_her_id=_number(
                env, "KPR_REGISTER_HER_ID", KPR_HER_IDS["test"], int, minimum=1
            ),
            profile=_choice(env, "KPR_PROFILE", Profile, "national"),
            letter_form=_choice(env, "KPR_LETTER", LetterForm, "msghead"),
            apprec=_choice(env, "KPR_APPREC", AppRecMode, "all"),
            address_register_file=_path(env.get("KPR_ADDRESS_REGISTER")),
            pseudonym_key_file=Path(key_file) if key_file else None,
            authorisation_file=Path(authorisation) if authorisation else None,
            metrics_port=metrics_port if metrics_port >= 0 else None,
            queue_prefix=env.get("KPR_QUEUE_PREFIX", ""),
            drain_timeout_s=_number(env, "KPR_DRAIN_TIMEOUT", 30.0, float, unit=" s"),
            connect_timeout_s=_number(env, "KPR_CONNECT_TIMEOUT", 30.0, float, unit=" s"),
            stall_after_s=_number(env, "KPR_STALL_AFTER", 120.0, float, unit=" s"),
            amqp_ca_file=_path(env.get("KPR_AMQP_CA_FILE")),
            amqp_client_cert=_path(env.get("KPR_AMQP_CLIENT_CERT")),
            amqp_client_key=_path(env.get("KPR_AMQP_CLIENT_KEY")),
            sender_her_id=sender_her_id or None,
            open_workers=_number(env, "KPR_OPEN_WORKERS", 0, int),
            metrics_host=env.get("KPR_METRICS_HOST", "127.0.0.1"),
            incomplete_stay_days=_number(env, "KPR_INCOMPLETE_STAY_DAYS", 7.0, float),
            group_commit_linger_s=_number(env, "KPR_GROUP_COMMIT_LINGER_MS", 10.0, float) / 1000,
            partitions=_number(env, "KPR_PARTITIONS", 0, int),
            partition_key_file=_path(env.get("KPR_PARTITION_KEY_FILE")),
            partition_consumers=_number(env, "KPR_PARTITION_CONSUMERS", 1, int, minimum=1),
            partition_standby_delay_s=_number(
                env, "KPR_PARTITION_STANDBY_DELAY", 10.0, float, unit=" s"
            ),
            env=env,
        )

    def __post_init__(self) -> None:
        """Every Settings is checked when made, from the environment or from options:
        a wrong value is a :class:`SettingsError` naming it, before any connection."""
        broker_urls(self.amqp_url)
        scheme = self.store_url.split("://", 1)[0] if "://" in self.store_url else ""
        if scheme and scheme not in STORE_SCHEMES:
            raise SettingsError(
                f"the store URL scheme {scheme}:// is not one of: {', '.join(STORE_SCHEMES)}",
                "set KPR_STORE_URL / --store-url to a SQLite path or a postgresql:// URL",
            )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= MAX_PORT:
            raise SettingsError(
                f"metrics port {self.metrics_port} is outside 0-{MAX_PORT}",
                "set KPR_METRICS_PORT / --metrics-port to a free port, e.g. 9464",
            )
        for name, value in (
            ("drain timeout", self.drain_timeout_s),
            ("KPR_CONNECT_TIMEOUT", self.connect_timeout_s),
            ("KPR_STALL_AFTER", self.stall_after_s),
            ("KPR_INCOMPLETE_STAY_DAYS", self.incomplete_stay_days),
            ("KPR_GROUP_COMMIT_LINGER_MS", self.group_commit_linger_s),
            ("KPR_PARTITION_STANDBY_DELAY", self.partition_standby_delay_s),
        ):
            if not math.isfinite(value) or value < 0:
                raise SettingsError(f"{name} {value:g} must be a finite number of at least 0")
        for name, count in (
            ("partitions", self.partitions),
            ("open workers", self.open_workers),
        ):
            if count < 0:
                raise SettingsError(f"{name} {count} must be at least 0")
        if self.partition_consumers < 1:
            raise SettingsError(
                f"KPR_PARTITION_CONSUMERS {self.partition_consumers} must be at least 1"
            )

    def with_overrides(self, **changes: object) -> Settings:
        """Apply command-line options; ``None`` means "not given"."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    def _get(self, name: str) -> str | None:
        return (self.env or {}).get(name)

    def tls_settings(self) -> TlsSettings | None:
        """TLS to the broker, or ``None`` for plain AMQP (no ``KPR_AMQP_CA_FILE``).

        Raises ``ValueError`` for a client key without a certificate, or TLS settings
        with a non-``amqps://`` URL (a configuration that would silently not encrypt).
        """
        if self.amqp_ca_file is None:
            if self.amqp_client_cert is not None or self.amqp_client_key is not None:
                raise SettingsError("KPR_AMQP_CLIENT_CERT / _KEY need KPR_AMQP_CA_FILE")
            return None
        if self.amqp_client_key is not None and self.amqp_client_cert is None:
            raise SettingsError("KPR_AMQP_CLIENT_KEY is set without KPR_AMQP_CLIENT_CERT")
        if not self.amqp_url.startswith("amqps://"):
            raise SettingsError("KPR_AMQP_CA_FILE is set but KPR_AMQP_URL is not amqps://")
        return TlsSettings(
            ca_file=self.amqp_ca_file,
            client_cert=self.amqp_client_cert,
            client_key=self.amqp_client_key,
        )

    def topology(self) -> Topology:
        return Topology(
            register_her_id=self.register_her_id,
            prefix=self.queue_prefix,
            partitions=self.partitions,
        )

    def partition_key(self) -> bytes | None:
        """The producer's partition key, or ``None`` (messages then carry no token).

        ``KPR_PARTITION_KEY_FILE`` if set; else the public development key in test; else,
        in production, ``None`` without partitions and ``ValueError`` with them (all
        events would hash to one partition). Raises ``ValueError`` for a malformed key.
        """
        if self.partition_key_file is not None:
            try:
                return parse_partition_key(self.partition_key_file.read_text(encoding="ascii"))
            except (OSError, ValueError) as error:
                raise KeyMaterialError(
                    f"KPR_PARTITION_KEY_FILE {self.partition_key_file}: "
                    f"{getattr(error, 'strerror', None) or error}",
                    "it names a file of hex, at least 16 bytes",
                ) from None
        if self.environment is not Environment.PRODUCTION:
            return DEV_PARTITION_KEY
        if self.partitions:
            raise SettingsError(
                "KPR_PARTITION_KEY_FILE must be set in production with KPR_PARTITIONS"
            )
        return None

    # -- producer side ------------------------------------------------------------

    def signing_identity(self) -> SigningIdentity:
        cert, key = self._get("KPR_SIGNER_CERT"), self._get("KPR_SIGNER_KEY")
        if cert and key:
            chain_files = _paths(self._get("KPR_SIGNER_CHAIN"))
            chain = tuple(c for path in chain_files for c in load_certificates(path))
            return SigningIdentity(load_certificate(Path(cert)), load_private_key(Path(key)), chain)
        return PkiDir.load(self.pki_dir).sender.signing_identity

    def recipient_certificate(self) -> x509.Certificate:
        cert = self._get("KPR_RECIPIENT_CERT")
        if cert:
            return load_recipient_certificate(Path(cert))
        return PkiDir.load(self.pki_dir).register.encryption_certificate

    # -- consumer side ------------------------------------------------------------

    def decryption_keys(self) -> list[DecryptionKey]:
        cert, key = self._get("KPR_DECRYPT_CERT"), self._get("KPR_DECRYPT_KEY")
        if not (cert and key):
            return [PkiDir.load(self.pki_dir).register.decryption_key]
        keys = [DecryptionKey(load_certificate(Path(cert)), load_private_key(Path(key)))]
        previous_cert = self._get("KPR_DECRYPT_PREVIOUS_CERT")
        previous_key = self._get("KPR_DECRYPT_PREVIOUS_KEY")
        if previous_cert and previous_key:
            keys.append(
                DecryptionKey(
                    load_certificate(Path(previous_cert)), load_private_key(Path(previous_key))
                )
            )
        return keys

    def trust_store(self) -> TrustStore:
        roots = _paths(self._get("KPR_TRUST_ROOTS"))
        crl_files = _paths(self._get("KPR_CRL_FILES"))
        if not roots:
            pki = PkiDir.load(self.pki_dir)
            roots, intermediates = [pki.root_path], [pki.intermediate_path]
        else:
            intermediates = _paths(self._get("KPR_TRUST_INTERMEDIATES"))
        return TrustStore(
            roots=[c for p in roots for c in load_ca_certificates(p)],
            intermediates=[c for p in intermediates for c in load_ca_certificates(p)],
            crls=FileCrlSource(crl_files) if crl_files else None,
        )

    def authorisation_path(self) -> Path | None:
        """``KPR_AUTHORISATION_FILE``; in the test environment only, else the file
        ``kpr pki dev`` wrote beside the development PKI. Production never guesses: the
        grants of who may report for whom are the operator's to give."""
        if self.authorisation_file is not None:
            return self.authorisation_file
        beside_pki = self.pki_dir / DEV_AUTHORISATION_FILE
        if self.environment is Environment.TEST and beside_pki.is_file():
            return beside_pki
        return None

    def sender_authorisation(self) -> SenderAuthorisation:
        path = self.authorisation_path()
        if path is None:
            return SenderAuthorisation.from_mapping({})
        return read_authorisation(path)

    def receipt_signing_identity(self) -> SigningIdentity:
        """The register's identity for signing rejection receipts (consumers.receipts):
        ``KPR_RECEIPT_SIGNER_CERT`` / ``KPR_RECEIPT_SIGNER_KEY`` (+ ``KPR_RECEIPT_SIGNER_CHAIN``),
        else the register's signing pair in ``KPR_PKI_DIR``."""
        cert, key = self._get("KPR_RECEIPT_SIGNER_CERT"), self._get("KPR_RECEIPT_SIGNER_KEY")
        if cert and key:
            chain_files = _paths(self._get("KPR_RECEIPT_SIGNER_CHAIN"))
            chain = tuple(c for p in chain_files for c in load_certificates(p))
            return SigningIdentity(load_certificate(Path(cert)), load_private_key(Path(key)), chain)
        return PkiDir.load(self.pki_dir).register.signing_identity

    def address_register_path(self) -> Path | None:
        """``KPR_ADDRESS_REGISTER``; in the test environment only, else the file the
        development PKI has beside it. Production never guesses whose certificate is whose."""
        if self.address_register_file is not None:
            return self.address_register_file
        beside_pki = self.pki_dir / DEV_ADDRESS_REGISTER_FILE
        if self.environment is Environment.TEST and beside_pki.is_file():
            return beside_pki
        return None

    def address_register(self) -> FileAddressRegister | None:
        """The senders' encryption certificates, read and checked now (a bad file is a
        :class:`SettingsError` or :class:`KeyMaterialError` naming it); ``None`` without one."""
        path = self.address_register_path()
        return FileAddressRegister.load(path) if path is not None else None

    def pseudonym_key_path(self) -> Path:
        if self.pseudonym_key_file is not None:
            return self.pseudonym_key_file
        if self.environment is Environment.PRODUCTION:
            raise SettingsError(
                "KPR_PSEUDONYM_KEY_FILE must be set in production",
                "point it at the register's pseudonym key, or set KPR_ENVIRONMENT=test",
            )
        return self.state_dir / "pseudonym.key"
