"""Connecting: several cluster nodes in one URL, and no leaked connection on failure."""

from __future__ import annotations

import pytest
from aiormq.exceptions import AMQPConnectionError

from contracts.connection import broker_urls, connect
from kpr.localprocess import free_port


async def test_the_first_node_that_answers_is_used(amqp_url: str) -> None:
    """A node that is down is skipped; the connection goes to the next one listed."""
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    connection = await connect(f"{dead},{amqp_url}")
    async with connection:
        channel = await connection.channel()
        assert not channel.is_closed
        assert str(connection).endswith(amqp_url.split("@", 1)[1])


async def test_when_no_node_answers_the_error_is_raised() -> None:
    """All nodes down: the caller gets the connection error (and no connection leaks)."""
    dead = [f"amqp://guest:guest@127.0.0.1:{free_port()}/" for _ in range(2)]
    with pytest.raises((ConnectionError, OSError, AMQPConnectionError)):
        await connect(",".join(dead))


def test_urls_are_split_on_commas_and_the_password_is_not_shown() -> None:
    """Whitespace around the commas is ignored; an empty setting is an error."""
    assert broker_urls(" amqp://a/ , amqp://b/ ") == ["amqp://a/", "amqp://b/"]
    with pytest.raises(ValueError, match="no broker URL"):
        broker_urls(" , ")
