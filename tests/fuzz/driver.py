# ruff: noqa: ASYNC109
"""Send fuzz frames to the central system and check each answer against its expectation.

Shared by the short test (in-process, Channels' communicator) and the long bench (a real
websocket to Uvicorn): both only need a transport with ``send(text)`` and ``recv(timeout)``.
The central system handles one frame at a time and answers in order, so the next answer
(skipping the central system's own CALLs) belongs to the frame just sent; a frame that owes
no answer is followed by a Heartbeat probe whose answer must come first.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from jsonschema import Draft4Validator

from tests.fuzz.frames import NONE, RESULT, Frame, schema

_probe_ids = itertools.count(1)


class Closed(Exception):
    """The central system closed the connection (code, reason)."""


class Transport(Protocol):
    async def send(self, text: str) -> None: ...

    async def recv(self, timeout: float) -> str | None:  # None: nothing within timeout
        ...


@dataclass
class Tally:
    frames: int = 0
    answers: Counter = field(default_factory=Counter)  # (frame kind, answer) → count
    failures: list[str] = field(default_factory=list)
    server_calls: int = 0

    def fail(self, frame: Frame, problem: str) -> None:
        self.failures.append(f"{frame.kind}: {problem}\n    frame: {frame.text[:400]}")


def _response_ok(action: str | None, payload: Any) -> str | None:
    if action is None:
        return None
    errors = sorted(Draft4Validator(schema(action, response=True)).iter_errors(payload), key=str)
    return errors[0].message if errors else None


async def next_answer(transport: Transport, tally: Tally, timeout: float) -> list | None:
    """The next CALLRESULT/CALLERROR; the central system's own CALLs get an Accepted."""
    while True:
        text = await transport.recv(timeout)
        if text is None:
            return None
        message = json.loads(text)
        if isinstance(message, list) and message and message[0] == 2:
            tally.server_calls += 1
            await transport.send(json.dumps([3, message[1], {"status": "Accepted"}]))
            continue
        return message


def classify(answer: list | None) -> str:
    if answer is None:
        return "timeout"
    if answer[0] == 3:
        return RESULT
    if answer[0] == 4 and len(answer) == 5:
        return str(answer[2])
    return f"malformed {answer!r:.80}"


async def exchange(transport: Transport, frame: Frame, tally: Tally, timeout: float) -> None:
    """Send one frame, check its answer; raises Closed if the connection went away."""
    tally.frames += 1
    await transport.send(frame.text)
    if frame.unique_id is None:
        probe = f"probe-{next(_probe_ids)}"
        await transport.send(json.dumps([2, probe, "Heartbeat", {}]))
        answer = await next_answer(transport, tally, timeout)
        if answer is not None and answer[1] == probe:
            tally.answers[(frame.kind, NONE)] += 1
            return
        got = classify(answer)
        tally.answers[(frame.kind, got)] += 1
        tally.fail(frame, f"expected no answer, got {answer!r:.300}")
        if answer is not None:  # the probe's answer is still to come
            await next_answer(transport, tally, timeout)
        return
    answer = await next_answer(transport, tally, timeout)
    got = classify(answer)
    tally.answers[(frame.kind, got)] += 1
    if answer is None:
        tally.fail(frame, f"no answer within {timeout} s")
        return
    if answer[1] != frame.unique_id:
        tally.fail(frame, f"answer for id {answer[1]!r}, expected {frame.unique_id!r}")
        return
    if got not in frame.expect:
        tally.fail(frame, f"expected {sorted(frame.expect)}, got {answer!r:.400}")
        return
    if got == RESULT:
        problem = _response_ok(frame.action, answer[2])
        if problem:
            tally.fail(frame, f"CALLRESULT does not match the response schema: {problem}")
    elif not (isinstance(answer[3], str) and isinstance(answer[4], dict)):
        tally.fail(frame, f"CALLERROR with a malformed description or details: {answer!r:.300}")


class TracebackCatcher(logging.Handler):
    """Collects log records that carry a traceback (or are ERROR and above) from the server."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.tracebacks: list[str] = []
        self.errors: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.tracebacks.append(
                f"{record.name}: {record.getMessage()[:300]}\n"
                + (logging.Formatter().formatException(record.exc_info)[-1500:])
            )
        elif record.levelno >= logging.ERROR:
            self.errors[f"{record.name}: {record.getMessage()[:60]}"] += 1

    def __enter__(self) -> TracebackCatcher:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


def summary(tally: Tally) -> dict[str, dict[str, int]]:
    """Answers by frame kind: {"valid": {"result": 812}, "wrong_type": {...}, ...}."""
    out: dict[str, dict[str, int]] = {}
    for (kind, answer), count in sorted(tally.answers.items()):
        out.setdefault(kind, {})[answer] = count
    return out
