"""AppRecs: the KITH application receipt the register sends its sender for each decision.

The national convention (Helsenorge.Messaging, master 7.x): an AppRec is an ordinary
business message to the original sender, not an error message. ``MessagingClient``
sends it as an ``OutgoingMessage`` with ``MessageFunction = "APPREC"`` (and
``ReceiptForMessageFunction`` = the original's, to find the agreement) through
``SendAndContinueAsync`` -> ``AsynchronousSender`` -> ``AmqpCore.SendAsync(...,
QueueType.Asynchronous)``, which

* addresses the receiver's asynchronous queue from the address register
  (``ConstructQueueNameAsync``: ``AsynchronousQueueName``, the last path segment, e.g.
  ``91468_async``), on RabbitMQ ``/exchange/{namespace}/{herId}_async``;
* checks the receiver's encryption certificate for keyEncipherment and encrypts to it,
  signed with its own signing certificate (``MessageProtection.Protect``: signed and
  enveloped CMS);
* sets the properties every message gets: message-id, subject = message function,
  correlation-id = the message id (none is given for an asynchronous message), reply-to =
  the sender's own ``_async`` queue, ``fromHerId``, ``toHerId``, ``applicationTimeStamp``,
  and the ``X-MessageInfo-*`` / ``X-Sender-Lvl1Id`` / ``X-Receiver-Lvl1Id`` properties
  ``MetadataHelper.ExtractMessagePropertiesFromApprec`` reads from the AppRec itself.

:class:`AppRecSender` does the same: the AppRec XML (:mod:`contracts.apprec`) sealed with
:func:`contracts.envelope.seal` (the register's signing identity, the sender's encryption
certificate from :mod:`contracts.addressregister`), published to the bus exchange with
routing key ``{sender}_async`` into the quorum queue ``{sender}_async``.

An AppRec is a courtesy, the commit or dead letter is the record. The consumer hands the
sender a decision only once it is durable (committed, or the dead letter confirmed) and
never waits for it: :meth:`AppRecSender.submit` only queues; workers seal (in a thread:
an RSA signature and a key transport) and publish on a channel of their own, so a failing
AppRec neither blocks nor reorders an ack. What happens to each is counted,
``kpr_consumer_apprecs_total{status,outcome}``: ``sent`` (confirmed), ``skipped`` (no
encryption certificate known for that sender, or no HER-id or message id to address it
by), ``failed`` (sealing or publishing failed, or the queue of pending AppRecs was full).
An AppRec still pending at shutdown is lost; the sender's resend of that message then gets
its AppRec as a duplicate (status OK).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum, unique
from typing import Final, Self

import aio_pika
from aio_pika.abc import AbstractConnection

from consumers.deadletter import publish_confirmed
from consumers.outbound import PartyChannel, national_message
from contracts.addressregister import AddressRegister, PartyAddress
from contracts.apprec import (
    APPREC_MESSAGE_TYPE,
    APPREC_NAMESPACE,
    AppRec,
    AppRecError,
    AppRecMode,
    AppRecStatus,
    apprec_error,
    encode_apprec,
)
from contracts.envelope import CONTENT_TYPE, SigningIdentity, seal
from contracts.errors import Reason
from contracts.resources import AsyncResource
from contracts.topology import Topology
from contracts.wire import (
    application_timestamp,
)

__all__ = [
    "APPREC_STATUS_LABELS",
    "AppRecDecision",
    "AppRecOutcome",
    "AppRecSender",
    "apprec_message",
    "status_label",
]

log = logging.getLogger("kpr.consumer.apprecs")

#: Pending AppRecs beyond this are counted as failed, not queued: memory stays bounded
#: while the broker refuses them, and the consumer is never held up.
MAX_PENDING: Final = 10_000
WORKERS: Final = 4


@unique
class AppRecOutcome(StrEnum):
    """The ``outcome`` label of ``kpr_consumer_apprecs_total``."""

    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


#: Every value of the ``status`` label.
APPREC_STATUS_LABELS: Final = ("ok", "rejected")


def status_label(status: AppRecStatus) -> str:
    """The ``status`` label: ``ok`` or ``rejected`` (never a free value)."""
    return "ok" if status is AppRecStatus.OK else "rejected"


@dataclass(frozen=True)
class AppRecDecision:
    """What the consumer decided about one message, once it is durable. No personal data."""

    status: AppRecStatus
    sender_her_id: int | None
    original_message_id: str | None
    #: when the sender sent it (its applicationTimeStamp), else when we received it
    original_issued_at: datetime
    reason: Reason | None = None
    description: str = ""

    def apprec(self, *, register_her_id: int, party: PartyAddress) -> AppRec:
        errors: tuple[AppRecError, ...] = ()
        if self.status is not AppRecStatus.OK:
            errors = (apprec_error(self.reason or Reason.MALFORMED, self.description),)
        return AppRec(
            id=str(uuid.uuid4()),
            # whole seconds: what GenDate carries, so the object is what the XML says
            generated_at=datetime.now(UTC).replace(microsecond=0),
            sender_her_id=register_her_id,
            receiver_her_id=party.her_id,
            receiver_name=party.name or "",
            status=self.status,
            errors=errors,
            original_message_id=self.original_message_id or "",
            original_issued_at=self.original_issued_at,
        )


def apprec_message(apprec: AppRec, sealed: bytes, *, register_her_id: int) -> aio_pika.Message:
    """The AMQP message for a sealed AppRec, with the properties Helsenorge.Messaging
    gives any asynchronous message, as 0-9-1 headers and packed 1.0 sections (on RabbitMQ
    3.x a 1.0 receiver sees only the packed ones, see :mod:`contracts.wire`)."""
    message_id = str(uuid.uuid4())
    reply_to = f"{register_her_id}_async"
    properties = {
        "fromHerId": str(register_her_id),
        "toHerId": str(apprec.receiver_her_id),
        "applicationTimeStamp": application_timestamp(datetime.now(UTC)),
        "X-MessageInfo-SchemaNamespace": APPREC_NAMESPACE,
        "X-MessageInfo-Type": APPREC_MESSAGE_TYPE,
        "X-MessageInfo-MsgId": apprec.id,
        "X-MessageInfo-OriginalMsgId": apprec.original_message_id,
        "X-MessageInfo-OriginalMsgType": apprec.original_message_type,
        "X-Sender-Lvl1Id": str(apprec.sender_her_id),
        "X-Receiver-Lvl1Id": str(apprec.receiver_her_id),
    }
    return national_message(
        sealed,
        properties=properties,
        message_id=message_id,
        subject=APPREC_MESSAGE_TYPE,
        content_type=CONTENT_TYPE,
        message_type=APPREC_MESSAGE_TYPE,
        timestamp=apprec.generated_at,
        correlation_id=message_id,
        reply_to=reply_to,
    )


#: Counts one AppRec: (status label, outcome label), e.g. ConsumerMetrics.observe_apprec.
_Observe = Callable[[str, str], None]


class AppRecSender(AsyncResource):
    """Seals and publishes AppRecs in the background; :meth:`submit` never waits."""

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        topology: Topology,
        signer: SigningIdentity,
        address_register: AddressRegister,
        mode: AppRecMode = AppRecMode.ALL,
        observe: _Observe | None = None,
        confirm_timeout_s: float = 10.0,
        drain_timeout_s: float = 5.0,
        max_pending: int = MAX_PENDING,
        workers: int = WORKERS,
    ) -> None:
        self._topology = topology
        self._signer = signer
        self._register = address_register
        self._mode = mode
        self._observe = observe
        self._confirm_timeout_s = confirm_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._pending: asyncio.Queue[tuple[AppRecDecision, PartyAddress]] = asyncio.Queue(
            max_pending
        )
        self._party = PartyChannel(
            connection,
            exchange=topology.bus_exchange,
            queue_of=topology.party_queue,
            declare=topology.declare_party_queue,
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"kpr-apprec-{n}") for n in range(workers)
        ]
        self._closing = False

    async def __aenter__(self) -> Self:
        return self

    def submit(self, decision: AppRecDecision) -> None:
        """Queue an AppRec for a durable decision; counts a skip or a full queue at once."""
        if self._closing or not self._mode.sends(decision.status):
            return
        party = (
            self._register.party(decision.sender_her_id)
            if decision.sender_her_id is not None
            else None
        )
        if party is None or not decision.original_message_id:
            self._count(decision.status, AppRecOutcome.SKIPPED)
            return
        try:
            self._pending.put_nowait((decision, party))
        except asyncio.QueueFull:
            log.warning(
                "AppRec not sent: too many pending",
                extra={"message_id": decision.original_message_id},
            )
            self._count(decision.status, AppRecOutcome.FAILED)

    async def aclose(self) -> None:
        """Send what is pending within ``drain_timeout_s``, then stop; harmless twice."""
        self._closing = True
        if self._workers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._drain_timeout_s):
                    await self._pending.join()
            workers, self._workers = self._workers, []
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        await self._party.aclose()

    async def _work(self) -> None:
        while True:
            decision, party = await self._pending.get()
            try:
                await self._send(decision, party)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "AppRec not sent: %s",
                    type(error).__name__,
                    extra={"message_id": decision.original_message_id,
                           "sender_her_id": party.her_id},
                )  # fmt: skip
                self._count(decision.status, AppRecOutcome.FAILED)
            else:
                self._count(decision.status, AppRecOutcome.SENT)
            finally:
                self._pending.task_done()

    async def _send(self, decision: AppRecDecision, party: PartyAddress) -> None:
        register = self._topology.register_her_id
        apprec = decision.apprec(register_her_id=register, party=party)
        # The RSA work off the event loop: deliveries keep flowing while it signs.
        sealed = await asyncio.to_thread(
            seal,
            encode_apprec(apprec),
            signer=self._signer,
            recipient=party.encryption_certificate,
        )
        message = apprec_message(apprec, sealed, register_her_id=register)
        # One bound on the broker's part (a channel while reconnecting, the declare, the
        # confirm): a worker is never held longer, whatever the broker does.
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the inner call ends, and a worker would then outlive aclose().
        async with asyncio.timeout(self._confirm_timeout_s):
            await self._publish(message, party.her_id)

    async def _publish(self, message: aio_pika.Message, her_id: int) -> None:
        exchange = await self._party.exchange_for(her_id)
        routing_key = self._topology.party_routing_key(her_id)
        await publish_confirmed(exchange, message, routing_key=routing_key)

    def _count(self, status: AppRecStatus, outcome: AppRecOutcome) -> None:
        if self._observe is not None:
            self._observe(status_label(status), outcome.value)
