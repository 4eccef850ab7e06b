"""How every ``kpr`` command ends: one exit code from a fixed table, and one line.

:func:`explain` is pure: it maps an exception to ``(exit code, what failed (what to
do))``. The classes of ``contracts.errors`` carry their own code; the few foreign
exceptions that can still reach the top (a driver's, the operating system's) are named
here, and anything else is our bug: exit 70, with the traceback only under ``--debug``
or ``KPR_DEBUG=1``. docs/OPERATIONS.md has the same table; a test keeps them in step.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import traceback
from collections.abc import Callable

from aiormq.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelAccessRefused,
    ChannelNotFoundEntity,
)

from contracts.errors import (
    BrokerRefused,
    BrokerUnreachable,
    CrlUnavailable,
    InputRefused,
    KeyMaterialError,
    KprError,
    OperatorError,
    PublishFailed,
    Rejected,
    SettingsError,
    StoreError,
    StoreUnavailable,
    TransientFailure,
)
from kpr import lifecycle

__all__ = ["DEBUG_VARIABLE", "EXIT_CODES", "explain", "run_command"]

DEBUG_VARIABLE = "KPR_DEBUG"

#: Every exit code a ``kpr`` command can end with.
EXIT_CODES: dict[int, str] = {
    0: "done",
    1: "the command ran but its work is not complete (e.g. messages not confirmed, "
    "no such dead letter, a revocation list unavailable: try again)",
    2: "usage: an unknown option, or an option value out of range",
    3: "input refused: a message, events file or output path cannot be used as it is",
    4: "trust refused: signature, certificate chain or sender authorisation",
    5: "the message cannot be decrypted with our keys",
    6: "contract violation: the event breaks a contract rule",
    SettingsError.exit_code: "settings: an environment variable or option is wrong",
    BrokerUnreachable.exit_code: "broker unreachable: no broker answers at the URL, "
    "or TLS does not match",
    BrokerRefused.exit_code: "broker refused: login, vhost, permission or a missing queue",
    StoreError.exit_code: "store: the pathway store cannot be opened or used",
    KeyMaterialError.exit_code: "key material: a PKI folder, certificate or key is "
    "missing or unusable",
    70: "internal error: a bug in kpr-stream (run with --debug and report it)",
    130: "interrupted (SIGINT, Ctrl-C)",
    143: "terminated (SIGTERM)",
}

_BUG_HINT = "a bug in kpr-stream: run again with --debug (or KPR_DEBUG=1) and report it"


def explain(error: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for ``error``."""
    if isinstance(error, lifecycle.Interrupted):
        return error.exit_code, f"stopped by {error.signum.name}"
    if isinstance(error, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(error, OperatorError):
        return error.exit_code, str(error)
    if isinstance(error, Rejected):
        return error.exit_code, f"rejected ({error.reason}): {error.description}"
    if isinstance(error, StoreUnavailable):
        return StoreError.exit_code, f"{error} (is the database running? try again)"
    if isinstance(error, CrlUnavailable):
        return 1, f"revocation status unavailable: {error} (try again later)"
    if isinstance(error, TransientFailure | PublishFailed):
        return 1, f"{error} (try again; nothing was lost)"
    if isinstance(error, KprError):
        return 70, f"{type(error).__name__}: {error} ({_BUG_HINT})"
    foreign = _foreign(error)
    if foreign is not None:
        return foreign.exit_code, str(foreign)
    return 70, f"internal error: {type(error).__name__}: {_first_line(error)} ({_BUG_HINT})"


def _foreign(error: BaseException) -> OperatorError | None:
    """An exception of a library or the operating system, as the operator error it means."""
    if isinstance(error, ChannelNotFoundEntity):
        return BrokerRefused(
            f"the broker has no such exchange or queue: {_first_line(error)}",
            "has the topology been declared? run `kpr consume` once, or check KPR_QUEUE_PREFIX",
        )
    if isinstance(error, ChannelAccessRefused):
        return BrokerRefused(
            f"the broker refused access: {_first_line(error)}",
            "check the user's permissions on the vhost",
        )
    if isinstance(error, AMQPConnectionError | AMQPError):
        return BrokerUnreachable(
            f"the broker connection failed: {_first_line(error)}",
            "is the broker running and KPR_AMQP_URL right?",
        )
    if isinstance(error, sqlite3.Error) or type(error).__module__.startswith("psycopg"):
        return StoreError(
            f"the pathway store failed: {_first_line(error)}",
            "is it a kpr store, and is the database running?",
        )
    if isinstance(error, OSError) and error.filename is not None:
        return InputRefused(
            f"{error.filename}: {error.strerror or _first_line(error)}",
            "check the path exists, is of the right kind and may be read or written",
        )
    if isinstance(error, UnicodeDecodeError):
        return InputRefused(f"the input is not UTF-8 text ({error.reason})")
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_command(name: str, handler: Callable[[], int], *, debug: bool | None = None) -> int:
    """Run one command's handler and return its exit code.

    A signal that a draining command took (it returns normally) still ends in
    ``128 + signal``; any exception ends in its code from :data:`EXIT_CODES`, told in one
    line on stderr as ``kpr <command>: error: <what failed> (<what to do>)``.
    """
    if debug is None:
        debug = os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")
    try:
        with lifecycle.interrupt_on_signals():
            code = handler()
    except SystemExit:
        raise
    except BaseException as error:
        code, message = explain(error)
        if debug:
            traceback.print_exception(error, file=sys.stderr)
        prefix = f"kpr {name}: " if code in (130, 143) else f"kpr {name}: error: "
        print(prefix + message, file=sys.stderr, flush=True)
        return code
    signum = lifecycle.received_signal()
    if signum is not None and code == 0:
        print(f"kpr {name}: stopped by {signum.name} after draining", file=sys.stderr)
        return 128 + int(signum)
    return code
