"""Opening in worker processes answers exactly as opening in-process."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from consumers.opener import Opener
from consumers.pool import OpenerPool
from consumers.processing import Disposition, Processor
from consumers.pseudonym import Pseudonymiser
from consumers.records import pseudonymise
from consumers.store import open_store
from contracts.errors import DecryptionFailed, MalformedMessage, SenderNotAuthorised
from contracts.events import Environment
from contracts.pki import PkiDir, ensure_dev_pki
from contracts.synth import DEFAULT_UNIT_ORG_NUMBERS, generate_events
from contracts.topology import KPR_HER_IDS
from contracts.trust import SenderAuthorisation
from producers.sealer import SealedMessage, Sealer

KEY = bytes(range(32))


def build_opener(pki_directory: Path, *, authorised: bool) -> Opener:
    """Picklable through functools.partial: each worker loads the PKI itself."""
    pki = ensure_dev_pki(pki_directory)
    sender_org = pki.sender.info.org_number
    grants = {sender_org: list(DEFAULT_UNIT_ORG_NUMBERS)} if authorised else {}
    return Opener(
        keys=[pki.register.decryption_key],
        trust=pki.trust_store(),
        authorisation=SenderAuthorisation.from_mapping(grants),
        own_her_id=KPR_HER_IDS["test"],
        environment=Environment.TEST,
    )


@pytest.fixture(scope="module")
def sealed(dev_pki: PkiDir) -> list[SealedMessage]:
    sealer = Sealer(
        dev_pki.sender.signing_identity,
        dev_pki.register.encryption_certificate,
        recipient_her_id=KPR_HER_IDS["test"],
    )
    return [sealer.seal(event) for event in generate_events(4, seed=5)]


def authorised_pool(
    dev_pki: PkiDir, *, with_pseudonyms: bool = False, workers: int = 2
) -> OpenerPool:
    """Workers opening for a register that authorises the sender (and pseudonymising)."""
    return OpenerPool(
        functools.partial(build_opener, dev_pki.directory, authorised=True),
        workers=workers,
        pseudonymiser_factory=functools.partial(Pseudonymiser, KEY) if with_pseudonyms else None,
    )


@pytest.fixture(scope="module")
def pool(dev_pki: PkiDir) -> Iterator[OpenerPool]:
    with authorised_pool(dev_pki) as opened:
        yield opened


async def test_a_message_opens_in_the_pool_to_what_it_opens_to_in_process(
    dev_pki: PkiDir, pool: OpenerPool, sealed: list[SealedMessage]
) -> None:
    """Same event, letter, signer organisation and signing time."""
    in_process = build_opener(dev_pki.directory, authorised=True)
    for message in sealed:
        expected = in_process.open(message.body, message_id=message.message_id)
        assert await pool.open(message.body, message_id=message.message_id) == expected


async def test_a_rejection_crosses_the_process_boundary_with_its_class_and_reason(
    dev_pki: PkiDir, pool: OpenerPool, sealed: list[SealedMessage]
) -> None:
    """A tampered message raises DecryptionFailed from the worker, reason intact."""
    body = bytearray(sealed[0].body)
    body[-20] ^= 0x01
    with pytest.raises(DecryptionFailed) as raised:
        await pool.open(bytes(body), message_id=sealed[0].message_id)
    assert raised.value.reason.value == "undecryptable"


async def test_an_unauthorised_sender_is_refused_in_the_worker(
    dev_pki: PkiDir, sealed: list[SealedMessage]
) -> None:
    """The worker's own Opener (built by the factory) decides authorisation."""
    factory = functools.partial(build_opener, dev_pki.directory, authorised=False)
    with OpenerPool(factory, workers=1) as strict_pool, pytest.raises(SenderNotAuthorised):
        await strict_pool.open(sealed[0].body, message_id=sealed[0].message_id)


async def test_the_processor_maps_pool_outcomes_as_it_maps_in_process_ones(
    dev_pki: PkiDir, pool: OpenerPool, sealed: list[SealedMessage], tmp_path: Path
) -> None:
    """Committed, duplicate and dead-lettered, the same dispositions with a pool."""
    async with open_store(str(tmp_path / "pathways.sqlite3")) as store:
        processor = Processor(
            build_opener(dev_pki.directory, authorised=True),
            Pseudonymiser(KEY),
            store,
            opener_pool=pool,
        )
        message = sealed[1]
        first = await processor.process(
            message.body, message_id=message.message_id, from_her_id=message.sender_her_id
        )
        again = await processor.process(
            message.body, message_id=message.message_id, from_her_id=message.sender_her_id
        )
        tampered = await processor.process(
            message.body[:-1], message_id=message.message_id, from_her_id=message.sender_her_id
        )
    assert first.disposition is Disposition.COMMITTED
    assert again.disposition is Disposition.DUPLICATE
    assert tampered.disposition is Disposition.DEAD_LETTER
    assert tampered.reason is not None


@pytest.fixture(scope="module")
def record_pool(dev_pki: PkiDir) -> Iterator[OpenerPool]:
    with authorised_pool(dev_pki, with_pseudonyms=True) as opened:
        yield opened


async def test_the_pool_pseudonymises_to_the_record_the_processor_would_store(
    dev_pki: PkiDir, record_pool: OpenerPool, sealed: list[SealedMessage]
) -> None:
    """open_record in a worker equals open + pseudonymise in-process with the same key."""
    in_process = build_opener(dev_pki.directory, authorised=True)
    for message in sealed:
        verified = in_process.open(message.body, message_id=message.message_id)
        expected = pseudonymise(
            verified.event, Pseudonymiser(KEY), message.message_id, letter_form=verified.letter.form
        )
        assert (
            await record_pool.open_record(message.body, message_id=message.message_id) == expected
        )


async def test_each_message_of_a_batch_gets_its_own_answer(
    record_pool: OpenerPool, sealed: list[SealedMessage]
) -> None:
    """Many requests at once share batches, yet a tampered one fails alone."""
    tampered = bytearray(sealed[0].body)
    tampered[-20] ^= 0x01
    bodies = [(bytes(tampered), sealed[0].message_id)] + [
        (message.body, message.message_id) for message in sealed * 10
    ]
    answers = await asyncio.gather(
        *(record_pool.open_record(body, message_id=message_id) for body, message_id in bodies),
        return_exceptions=True,
    )
    assert isinstance(answers[0], DecryptionFailed)
    assert [getattr(answer, "message_id", None) for answer in answers[1:]] == [
        message_id for _, message_id in bodies[1:]
    ]


async def test_a_pool_without_a_pseudonymiser_refuses_open_record(
    pool: OpenerPool, sealed: list[SealedMessage]
) -> None:
    """No key in the workers, no records: a RuntimeError, not a record without pseudonym."""
    assert not pool.pseudonymises
    with pytest.raises(RuntimeError):
        await pool.open_record(sealed[0].body, message_id=sealed[0].message_id)


async def test_a_processor_refuses_a_pool_holding_another_pseudonym_key(
    dev_pki: PkiDir, record_pool: OpenerPool, tmp_path: Path
) -> None:
    """Records from the workers must carry the same pseudonyms as the processor's own."""
    async with open_store(str(tmp_path / "pathways.sqlite3")) as store:
        with pytest.raises(ValueError, match="another key"):
            Processor(
                build_opener(dev_pki.directory, authorised=True),
                Pseudonymiser(bytes(range(1, 33))),
                store,
                opener_pool=record_pool,
            )


async def test_outcomes_with_a_pseudonymising_pool_equal_those_in_process(
    dev_pki: PkiDir, record_pool: OpenerPool, sealed: list[SealedMessage], tmp_path: Path
) -> None:
    """Same dispositions and the same named event, sender and time, pool or not."""
    outcomes = []
    for name, pool in (("in-process", None), ("pool", record_pool)):
        async with open_store(str(tmp_path / f"{name}.sqlite3")) as store:
            processor = Processor(
                build_opener(dev_pki.directory, authorised=True),
                Pseudonymiser(KEY),
                store,
                opener_pool=pool,
            )
            message = sealed[2]
            outcomes.append(
                [
                    await processor.process(
                        body, message_id=message.message_id, from_her_id=message.sender_her_id
                    )
                    for body in (message.body, message.body, message.body[:-1])
                ]
            )
    assert outcomes[0] == outcomes[1]
    assert [outcome.disposition for outcome in outcomes[1]] == [
        Disposition.COMMITTED,
        Disposition.DUPLICATE,
        Disposition.DEAD_LETTER,
    ]
    assert outcomes[1][0].event_id == sealed[2].event_id


async def test_a_dead_worker_fails_the_waiting_callers_with_broken_process_pool(
    dev_pki: PkiDir, sealed: list[SealedMessage]
) -> None:
    """A killed worker is our failure, not the sender's: BrokenProcessPool, never a record."""
    with authorised_pool(dev_pki, with_pseudonyms=True, workers=1) as doomed:
        [pid] = doomed.worker_pids
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            await asyncio.wait_for(
                doomed.open_record(sealed[0].body, message_id=sealed[0].message_id), timeout=30
            )


def _opener_without_keys() -> Opener:
    raise FileNotFoundError("no decryption keys here")


def test_a_factory_that_fails_in_the_workers_fails_the_pool_at_start() -> None:
    """The worker's exception, class intact, from the constructor; no worker left behind."""
    before = set(multiprocessing.active_children())
    with pytest.raises(FileNotFoundError, match="no decryption keys"):
        OpenerPool(_opener_without_keys, workers=2)
    assert set(multiprocessing.active_children()) <= before


def test_the_pool_serves_a_later_event_loop_once_the_first_is_closed(
    pool: OpenerPool, sealed: list[SealedMessage]
) -> None:
    """One pool outlives event loops (a service restarts its loop; tests run one per test)."""
    first, second = (
        asyncio.run(pool.open(message.body, message_id=message.message_id))
        for message in sealed[:2]
    )
    assert [str(first.event.event_id), str(second.event.event_id)] == [
        message.event_id for message in sealed[:2]
    ]


async def test_requests_larger_than_the_socket_buffers_reach_the_workers_whole(
    record_pool: OpenerPool, sealed: list[SealedMessage]
) -> None:
    """Near-limit bodies fill batches of megabytes: each still gets its own answer."""
    big = [os.urandom(900_000) for _ in range(8)]
    answers = await asyncio.wait_for(
        asyncio.gather(
            *(record_pool.open_record(body, message_id=f"big-{n}") for n, body in enumerate(big)),
            record_pool.open_record(sealed[0].body, message_id=sealed[0].message_id),
            return_exceptions=True,
        ),
        timeout=60,
    )
    assert all(isinstance(answer, MalformedMessage) for answer in answers[:-1]), answers[:-1]
    assert getattr(answers[-1], "message_id", None) == sealed[0].message_id


def _hold_a_pool(pki_directory: Path, pids: multiprocessing.connection.Connection) -> None:
    """A consumer stand-in: open a pool, say its workers' pids, then wait to be killed."""
    factory = functools.partial(build_opener, pki_directory, authorised=True)
    with OpenerPool(factory, workers=2) as held:
        pids.send(held.worker_pids)
        signal.pause()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_consumer_that_forked_them_is_killed(dev_pki: PkiDir) -> None:
    """SIGKILL leaves no cleanup to run: the workers notice the end of their stream and
    exit rather than live on as orphans (each must not hold the pool's end of a pair)."""
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    consumer = context.Process(target=_hold_a_pool, args=(dev_pki.directory, sending))
    consumer.start()
    workers: tuple[int, ...] = ()
    try:
        assert receiving.poll(60), "the pool did not start"
        workers = receiving.recv()
        assert len(workers) == 2
        assert all(map(_running, workers))
        assert consumer.pid is not None
        os.kill(consumer.pid, signal.SIGKILL)
        consumer.join(10)
        deadline = time.monotonic() + 20
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_running, workers)), f"orphaned workers: {workers}"
    finally:
        if consumer.is_alive():
            consumer.kill()
        for pid in filter(_running, workers):  # should the test fail, leave no orphan
            os.kill(pid, signal.SIGKILL)
