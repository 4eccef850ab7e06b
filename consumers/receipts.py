"""Signed rejection receipts: telling a sender which of its events was refused and why.

For every message the consumer dead-letters, the sender gets a receipt on its own error
queue (``{senderHerId}_error``, through the ``kpr.receipts`` exchange with the sender's
HER-id as routing key), shaped like the national service bus's error messages:

* application properties ``errorCondition`` (:attr:`Reason.national_condition`),
  ``errorDescription`` and ``originalMessageId``;
* a body that is a CMS SignedData (DER, content embedded) signed with the register's
  signing key over a small JSON :class:`Receipt`: ids, event type, reason, time.

A receipt never holds personal data: the description is one of ours (see
:mod:`contracts.errors`), and no event content is copied into it.

A receipt is a courtesy, the dead letter is the record: :class:`ReceiptSender` publishes
on its own channel, so a failing receipt (broker refuses, queue cannot be declared)
cannot close the consumer's channel, and the consumer logs the failure and acks anyway.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Self

import aio_pika
import orjson
from aio_pika.abc import AbstractConnection
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from pydantic import BaseModel, ConfigDict

from consumers.outbound import PartyChannel, national_message
from contracts.envelope import SigningIdentity
from contracts.errors import Reason
from contracts.resources import AsyncResource
from contracts.topology import Topology
from contracts.wire import application_timestamp

__all__ = [
    "RECEIPT_CONTENT_TYPE",
    "Receipt",
    "ReceiptSender",
    "ReceiptSigner",
    "receipt_message",
    "send_rejection_receipt",
]

log = logging.getLogger("kpr.consumer.receipts")

RECEIPT_CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-data"
RECEIPT_TYPE = "kpr.rejection-receipt"


class Receipt(BaseModel):
    """What the register signs about one rejected message. No personal data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    original_message_id: str
    event_id: str | None
    event_type: str | None
    reason: Reason
    error_condition: str
    description: str
    rejected_at: datetime

    @classmethod
    def for_rejection(
        cls,
        *,
        original_message_id: str,
        reason: Reason,
        description: str,
        event_id: str | None = None,
        event_type: str | None = None,
        rejected_at: datetime | None = None,
    ) -> Receipt:
        return cls(
            original_message_id=original_message_id,
            event_id=event_id,
            event_type=event_type,
            reason=reason,
            error_condition=reason.national_condition,
            description=description,
            rejected_at=(rejected_at or datetime.now(UTC)).astimezone(UTC),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


class ReceiptSigner:
    """Signs receipts as the register: CMS SignedData, SHA-256, signer chain embedded."""

    def __init__(self, identity: SigningIdentity) -> None:
        self._identity = identity

    def sign(self, receipt: Receipt) -> bytes:
        """DER SignedData over :meth:`Receipt.to_json`; ``openssl cms -verify`` accepts it."""
        builder = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(receipt.to_json())
            .add_signer(self._identity.certificate, self._identity.private_key, hashes.SHA256())
        )
        for certificate in self._identity.chain:
            builder = builder.add_certificate(certificate)
        return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def receipt_message(
    receipt: Receipt, signed: bytes, *, register_her_id: int, sender_her_id: int
) -> aio_pika.Message:
    """The AMQP message for a signed receipt, with the national bus's error properties.

    As 0-9-1 headers (string values, as Helsenorge.Messaging writes them) and, for an
    AMQP 1.0 receiver on RabbitMQ 3.x, packed as the 1.0 application-properties and
    properties sections (:mod:`contracts.wire`): that broker shows a 1.0 receiver no 0-9-1
    header, and its ErrorMessageListener discards an error message without a subject.
    """
    message_id = str(uuid.uuid4())
    properties = {
        "errorCondition": receipt.error_condition,
        "errorDescription": receipt.description,
        "originalMessageId": receipt.original_message_id,
        "receiverTimeStamp": application_timestamp(receipt.rejected_at),
        "fromHerId": str(register_her_id),
        "toHerId": str(sender_her_id),
        "applicationTimeStamp": application_timestamp(datetime.now(UTC)),
    }
    return national_message(
        signed,
        properties=properties,
        message_id=message_id,
        subject=receipt.event_type or RECEIPT_TYPE,
        content_type=RECEIPT_CONTENT_TYPE,
        message_type=RECEIPT_TYPE,
        timestamp=receipt.rejected_at,
        correlation_id=receipt.original_message_id or None,
    )


class ReceiptSender(AsyncResource):
    """Publishes receipts on a channel of its own, declaring each sender's queue once.

    ``send`` raises on any failure (including a confirm not arriving within
    ``confirm_timeout_s``); the caller decides that a receipt failure is only logged.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        topology: Topology,
        signer: ReceiptSigner,
        confirm_timeout_s: float = 10.0,
    ) -> None:
        self._topology = topology
        self._signer = signer
        self._confirm_timeout_s = confirm_timeout_s
        self._party = PartyChannel(
            connection,
            exchange=topology.receipt_exchange,
            queue_of=topology.receipt_queue,
            declare=topology.declare_receipt_queue,
            on_return_raises=True,
        )

    async def __aenter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        await self._party.aclose()

    async def send(self, receipt: Receipt, *, sender_her_id: int) -> None:
        """Sign and publish one receipt, and wait for the broker's confirm."""
        signed = self._signer.sign(receipt)
        message = receipt_message(
            receipt,
            signed,
            register_her_id=self._topology.register_her_id,
            sender_her_id=sender_her_id,
        )
        exchange = await self._party.exchange_for(sender_her_id)
        await exchange.publish(
            message,
            routing_key=str(sender_her_id),
            mandatory=True,
            timeout=self._confirm_timeout_s,
        )


async def send_rejection_receipt(
    sender: ReceiptSender | None,
    *,
    message_id: str | None,
    reason: Reason,
    description: str,
    sender_her_id: int | None,
    event_id: str | None = None,
    event_type: str | None = None,
) -> bool:
    """Send a receipt if a sender is configured and the HER-id is known; never raises.

    Returns whether a receipt was confirmed. Failures are logged (ids and reason only),
    because a receipt must never lose or block the dead letter it belongs to.
    """
    if sender is None or sender_her_id is None:
        return False
    receipt = Receipt.for_rejection(
        original_message_id=message_id or "",
        reason=reason,
        description=description,
        event_id=event_id,
        event_type=event_type,
    )
    try:
        await sender.send(receipt, sender_her_id=sender_her_id)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.warning(
            "rejection receipt not sent: %s",
            type(error).__name__,
            extra={"message_id": message_id, "reason": reason.value},
        )
        return False
    return True
