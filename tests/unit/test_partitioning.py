"""The partition key, the partitioned topology, its settings and its broker definitions."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.events import Environment
from contracts.events.identifiers import synthetic_national_id
from contracts.partitioning import (
    DEV_PARTITION_KEY,
    PARTITION_HEADER,
    TOKEN_HEX_CHARS,
    parse_partition_key,
    partition_token,
)
from contracts.topology import Topology
from kpr.config import Settings
from kpr.partitioned import claim_share
from producers.sealer import SealedMessage

ROOT = Path(__file__).resolve().parents[2]
PARTITIONED_DEFINITIONS = ROOT / "infra" / "broker" / "definitions-partitioned.json"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def _ids(count: int, seed: int = 7) -> list[str]:
    """Distinct synthetic national ids (valid checksums, synthetic month marker)."""
    rng = random.Random(seed)
    ids: set[str] = set()
    while len(ids) < count:
        born = date(1930, 1, 1) + timedelta(days=rng.randrange(90 * 365))
        try:
            ids.add(
                synthetic_national_id(born, female=rng.random() < 0.5, serial=rng.randrange(1000))
            )
        except ValueError:
            continue  # a serial without a valid checksum
    return sorted(ids)


def test_token_is_stable_short_lower_hex() -> None:
    """The same id and key give the same token: TOKEN_HEX_CHARS lower-case hex characters."""
    national_id = _ids(1)[0]
    token = partition_token(national_id, KEY)
    assert token == partition_token(national_id, KEY)
    assert re.fullmatch(f"[0-9a-f]{{{TOKEN_HEX_CHARS}}}", token)


def test_token_depends_on_the_key() -> None:
    """Another key gives other tokens: without the key, tokens cannot be precomputed."""
    ids = _ids(200)
    same = sum(partition_token(i, KEY) == partition_token(i, OTHER_KEY) for i in ids)
    assert same == 0


def test_token_never_contains_the_id_or_its_parts() -> None:
    """No token contains the id, its birth date or its personal number."""
    for national_id in _ids(500):
        token = partition_token(national_id, KEY)
        assert national_id not in token
        assert national_id[:6] not in token
        assert national_id[6:] not in token


def test_tokens_spread_evenly_over_partitions() -> None:
    """5000 synthetic persons over 4 and 7 partitions: every bucket within 15 % of the mean."""
    tokens = [int(partition_token(i, KEY), 16) for i in _ids(5000)]
    for partitions in (4, 7):
        counts = [0] * partitions
        for token in tokens:
            counts[token % partitions] += 1
        mean = len(tokens) / partitions
        assert all(abs(count - mean) < 0.15 * mean for count in counts), counts


def test_tokens_are_many_to_one_over_a_large_population() -> None:
    """Truncation: 32 bits for a population of ~10^7 ids means a token names a crowd.

    Checked on the arithmetic rather than by enumeration: 2**32 tokens, and a collision
    among 100 000 ids is already expected (birthday bound ~ 77 000)."""
    assert TOKEN_HEX_CHARS * 4 == 32
    tokens = {partition_token(i, KEY) for i in _ids(3000)}
    assert len(tokens) == 3000  # distinct enough to spread, while too short to identify


def test_short_key_is_refused_without_echoing_the_id() -> None:
    """A key below 16 bytes is a ValueError whose text does not carry the id."""
    national_id = _ids(1)[0]
    with pytest.raises(ValueError, match="at least 16 bytes") as raised:
        partition_token(national_id, b"short")
    assert national_id not in str(raised.value)


def test_parse_partition_key_accepts_hex_and_refuses_the_rest() -> None:
    """Hex with whitespace parses; non-hex and short keys are ValueErrors."""
    assert parse_partition_key(f"  {KEY.hex()}\n") == KEY
    with pytest.raises(ValueError, match="not hex"):
        parse_partition_key("zz" * 16)
    with pytest.raises(ValueError, match="at least"):
        parse_partition_key("00" * 8)


def test_default_topology_is_the_single_work_queue() -> None:
    """Without partitions the consumers read the one work queue, as before."""
    topology = Topology()
    assert topology.partitions == 0
    assert topology.consume_queues == (topology.work_queue,)
    assert topology.partition_queues == ()


def test_partitioned_topology_names_and_arguments() -> None:
    """Partition queues are {her}_async.p{i}, with the work queue's arguments plus
    single-active-consumer; the exchange hashes the partition header."""
    topology = Topology(partitions=3, prefix="x.")
    assert topology.partition_queues == (
        "x.8133973_async.p0",
        "x.8133973_async.p1",
        "x.8133973_async.p2",
    )
    assert topology.consume_queues == topology.partition_queues
    assert topology.partition_exchange == "x.kpr.partitions"
    arguments = topology.partition_queue_arguments()
    assert arguments == {**topology.work_queue_arguments(), "x-single-active-consumer": True}
    assert topology.partition_exchange_arguments() == {"hash-header": PARTITION_HEADER}
    with pytest.raises(ValueError, match="outside"):
        topology.partition_queue(3)
    with pytest.raises(ValueError, match="positive"):
        Topology(partitions=-1)


def test_sealed_message_carries_the_token_only_when_set() -> None:
    """The header is present with a partition key and absent without one."""
    fields: dict[str, Any] = {
        "message_id": "m",
        "body": b"",
        "event_id": "e",
        "event_type": "kad.admission",
        "sender_her_id": 1,
        "recipient_her_id": 2,
        "created_at": datetime.now(UTC),
    }
    assert PARTITION_HEADER not in SealedMessage(**fields).headers()
    headers = SealedMessage(**fields, partition_key="0a1b2c3d").headers()
    assert headers[PARTITION_HEADER] == "0a1b2c3d"


def test_settings_partition_key_rules(tmp_path: Path) -> None:
    """Production with partitions needs the key file; test falls back to the dev key;
    production without partitions sends no token; the file wins when set."""
    production = Settings(environment=Environment.PRODUCTION)
    assert production.partition_key() is None
    with pytest.raises(ValueError, match="KPR_PARTITION_KEY_FILE"):
        Settings(environment=Environment.PRODUCTION, partitions=4).partition_key()
    assert Settings(environment=Environment.TEST, partitions=4).partition_key() == DEV_PARTITION_KEY
    key_file = tmp_path / "partition.key"
    key_file.write_text(KEY.hex(), encoding="ascii")
    assert Settings(partitions=4, partition_key_file=key_file).partition_key() == KEY


def test_settings_from_env_read_the_partition_variables(tmp_path: Path) -> None:
    """KPR_PARTITIONS and friends reach the settings and the topology."""
    settings = Settings.from_env(
        {
            "KPR_PARTITIONS": "4",
            "KPR_PARTITION_KEY_FILE": str(tmp_path / "k"),
            "KPR_PARTITION_CONSUMERS": "2",
            "KPR_PARTITION_STANDBY_DELAY": "1.5",
        }
    )
    assert settings.topology().partitions == 4
    assert settings.partition_key_file == tmp_path / "k"
    assert (settings.partition_consumers, settings.partition_standby_delay_s) == (2, 1.5)
    assert Settings.from_env({}).topology() == Topology()


def test_claim_share_divides_partitions_rounding_up() -> None:
    """Each process first claims ceil(partitions / processes), at least one."""
    assert claim_share(4, 2) == 2
    assert claim_share(4, 3) == 2
    assert claim_share(4, 1) == 4
    assert claim_share(4, 0) == 4
    assert claim_share(3, 8) == 1


# -- the partitioned broker definitions ---------------------------------------------------


def _partitioned() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(PARTITIONED_DEFINITIONS.read_text(encoding="utf-8"))
    return loaded


def test_partitioned_definitions_agree_with_topology() -> None:
    """definitions-partitioned.json declares exactly Topology(partitions=4)'s partition names,
    arguments and bindings, the work queue is no longer bound to kpr.events, and the
    national bus exchange feeds the partitions."""
    topology = Topology(partitions=4)
    definitions = _partitioned()
    queues = {queue["name"]: queue["arguments"] for queue in definitions["queues"]}
    for name in topology.partition_queues:
        assert queues[name] == topology.partition_queue_arguments()
    assert queues[topology.work_queue] == topology.work_queue_arguments()
    exchanges = {exchange["name"]: exchange for exchange in definitions["exchanges"]}
    partition_exchange = exchanges[topology.partition_exchange]
    assert partition_exchange["type"] == "x-consistent-hash"
    assert partition_exchange["arguments"] == topology.partition_exchange_arguments()
    bindings = {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in definitions["bindings"]
    }
    assert (topology.work_exchange, topology.partition_exchange, "exchange", "event") in bindings
    for name in topology.partition_queues:
        assert (topology.partition_exchange, name, "queue", "1") in bindings
    national = (topology.bus_exchange, topology.partition_exchange, "exchange")
    assert (*national, topology.bus_routing_key) in bindings
    into_work_queue = [b for b in bindings if b[1] == topology.work_queue]
    assert into_work_queue == []
    from_work_exchange = {b[1] for b in bindings if b[0] == topology.work_exchange}
    assert from_work_exchange == {topology.partition_exchange}


def test_partitioned_definitions_let_the_consumer_reach_the_partitions() -> None:
    """kpr-consumer may declare, bind and read the partition exchange and queues, and
    still not read the dead-letter queue."""
    topology = Topology(partitions=4)
    consumer = next(p for p in _partitioned()["permissions"] if p["user"] == "kpr-consumer")
    for name in (*topology.partition_queues, topology.partition_exchange, topology.bus_exchange):
        assert re.search(consumer["configure"], name), name
        assert re.search(consumer["read"], name), name
    assert not re.search(consumer["read"], topology.dead_letter_queue)
    assert not re.search(consumer["read"], "8133973_async.px")


def test_partitioned_definitions_differ_from_the_default_only_by_partitioning() -> None:
    """Users, vhosts, policies and every non-partition entity are the default file's."""
    default = json.loads((PARTITIONED_DEFINITIONS.parent / "definitions.json").read_text())
    partitioned = _partitioned()
    for section in ("users", "vhosts", "policies", "parameters", "global_parameters"):
        assert partitioned[section] == default[section], section
    names = {q["name"] for q in partitioned["queues"]}
    extra_queues = names - {q["name"] for q in default["queues"]}
    assert extra_queues == set(Topology(partitions=4).partition_queues)
