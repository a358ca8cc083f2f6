"""OCPP 1.6J frames a station could send, valid and mutated, as hypothesis strategies.

Every frame carries the answer the central system owes it (docs/OCPP.md, "CALLERROR
mapping"), so the fuzzers (tests/fuzz/test_ocpp_fuzz.py, bench/fuzz_ocpp.py) check answers
instead of only looking for crashes. The expectations come from what the mutation did, not
from the implementation: one mutation per frame, so the schema error it causes is known.

Payloads come from the JSON schemas shipped in the ``ocpp`` library (``ocpp/v16/schemas``)
through ``from_schema`` (hypothesis-jsonschema does not work with this hypothesis release);
"realistic" payloads bend a few fields (connector ids, meter readings, timestamps) towards
what real stations send, so that most valid frames are also accepted by the handlers.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import ocpp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from ocpp.v16.enums import Action

SCHEMA_DIR = Path(ocpp.__file__).parent / "v16" / "schemas"

# What our central system handles (stations.centralsystem); every other 1.6 action is
# "recognised but not supported".
HANDLED = (
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
)
V16_ACTIONS = frozenset(a.value for a in Action)
NOT_HANDLED = tuple(sorted(V16_ACTIONS - set(HANDLED)))

RESULT = "result"  # a CALLRESULT whose payload matches <Action>Response.json
NONE = "none"  # no answer at all (CALLRESULT / CALLERROR frames from the station)
TCV = "TypeConstraintViolation"
OCV = "OccurenceConstraintViolation"
PCV = "PropertyConstraintViolation"
FV = "FormationViolation"
PE = "ProtocolError"
NI = "NotImplemented"
NS = "NotSupported"
# Answers that only say "not for us": a schema-valid frame may still carry a value the
# handlers refuse (connector 500, a meter value "abc", a NUL character).
VALID_BUT_ODD = frozenset({RESULT, PCV})


@dataclass(frozen=True)
class Frame:
    text: str
    kind: str  # the generator or mutation that made it (answers are counted by kind)
    unique_id: str | None  # the id the answer must carry; None: no answer expected
    expect: frozenset[str]  # RESULT, NONE or CALLERROR codes: any of them is correct
    action: str | None = None  # for checking a CALLRESULT against the response schema
    refused: bool = False  # True: no answer but a CALLERROR is correct (no write allowed)


@cache
def schema(action: str, response: bool = False) -> dict[str, Any]:
    name = f"{action}Response.json" if response else f"{action}.json"
    return json.loads((SCHEMA_DIR / name).read_text())


# --- values -------------------------------------------------------------------------------

_TIMES = st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2035, 12, 31))
timestamps = _TIMES.map(lambda d: d.replace(microsecond=0, tzinfo=UTC).isoformat())
# What people type into station configuration: printable, any script, no control characters.
plain_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20
)
# Anything a JSON string can hold after decoding, NUL and control characters included.
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


def _string(sub: dict[str, Any], text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    if "enum" in sub:
        return st.sampled_from(sub["enum"])
    if sub.get("format") == "date-time":
        return timestamps
    limit = sub.get("maxLength")
    return text.map(lambda s: s[:limit] if limit else s)


def from_schema(
    sub: dict[str, Any],
    root: dict[str, Any] | None = None,
    *,
    text: st.SearchStrategy[str] = any_text,
    integers: st.SearchStrategy[int] | None = None,
    overrides: dict[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[Any]:
    """Values valid against the (draft-4, OCPP 1.6 sized) schema ``sub``.

    ``overrides`` replaces the strategy of a property by name (wherever it is nested)."""
    root = root or sub
    overrides = overrides or {}
    if "$ref" in sub:  # only "#/definitions/<name>" occurs in the 1.6 schemas
        sub = root["definitions"][sub["$ref"].rsplit("/", 1)[-1]]
    kind = sub.get("type")
    if kind == "string":
        return _string(sub, text)
    if kind == "integer":
        return integers if integers is not None else st.integers()
    if kind == "number":
        return st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(
            from_schema(
                sub.get("items", {}), root, text=text, integers=integers, overrides=overrides
            ),
            min_size=sub.get("minItems", 0),
            max_size=max(sub.get("minItems", 0), 3),
        )
    if kind == "object" or "properties" in sub:
        properties = sub.get("properties", {})
        required = set(sub.get("required", []))
        fields = {
            name: overrides[name]
            if name in overrides
            else from_schema(prop, root, text=text, integers=integers, overrides=overrides)
            for name, prop in properties.items()
        }
        optional = sorted(set(properties) - required)

        @st.composite
        def build(draw: st.DrawFn) -> dict[str, Any]:
            chosen = [name for name in optional if draw(st.booleans())]
            return {name: draw(fields[name]) for name in sorted(required) + chosen}

        return build()
    return st.none()


# --- realistic payloads ---------------------------------------------------------------------

_numeric = st.integers(0, 10**9).map(str) | st.floats(0, 10**6, allow_nan=False).map(
    lambda f: f"{f:.3f}"
)
_sampled = st.fixed_dictionaries(
    {"value": _numeric},
    optional={
        "measurand": st.sampled_from(
            [
                "Energy.Active.Import.Register",
                "Power.Active.Import",
                "Current.Import",
                "Current.Offered",
                "Voltage",
                "SoC",
                "Temperature",
            ]
        ),
        "phase": st.sampled_from(["L1", "L2", "L3", "L1-N"]),
        "context": st.sampled_from(["Sample.Periodic", "Sample.Clock", "Transaction.Begin"]),
        "location": st.sampled_from(["Outlet", "EV", "Inlet"]),
    },
)
_meter_value = st.fixed_dictionaries(
    {"timestamp": timestamps, "sampledValue": st.lists(_sampled, min_size=1, max_size=4)}
)
_inputs = st.fixed_dictionaries({"in1": st.booleans(), "in2": st.booleans()}).map(json.dumps)

REALISTIC_OVERRIDES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "StatusNotification": {"connectorId": st.integers(0, 2)},
    "StartTransaction": {
        "connectorId": st.integers(1, 2),
        "meterStart": st.integers(0, 10**9),
        "reservationId": st.integers(1, 1000),
    },
    "StopTransaction": {
        "meterStop": st.integers(0, 10**9),
        "transactionId": st.integers(-1, 10**6),
        "transactionData": st.lists(_meter_value, max_size=2),
    },
    "MeterValues": {
        "connectorId": st.integers(0, 2),
        "transactionId": st.integers(1, 10**6),
        "meterValue": st.lists(_meter_value, min_size=1, max_size=3),
    },
    "DataTransfer": {
        "vendorId": st.sampled_from(["org.chargeportal", "com.example", "ABB"]),
        "messageId": st.sampled_from(["Inputs", "Other"]),
        "data": _inputs | plain_text,
    },
}


@cache
def realistic(action: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid payloads that a well-behaved station sends (all answered with a CALLRESULT)."""
    return from_schema(
        schema(action),
        text=plain_text,
        integers=st.integers(0, 1000),
        overrides=REALISTIC_OVERRIDES.get(action, {}),
    )


@cache
def arbitrary(action: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid by the schema and nothing else: any integer, any string up to its length."""
    return from_schema(schema(action))


# --- mutations ------------------------------------------------------------------------------


def _slots(value: Any, sub: dict[str, Any], path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every (path, subschema) of ``value`` that a mutation could touch."""
    found: list[tuple[tuple, dict]] = []
    if isinstance(value, dict):
        for name, item in value.items():
            prop = sub.get("properties", {}).get(name, {})
            found.append(((*path, name), prop))
            found += _slots(item, prop, (*path, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.append(((*path, i), sub.get("items", {})))
            found += _slots(item, sub.get("items", {}), (*path, i))
    return found


def _objects(value: Any, sub: dict[str, Any], path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every object inside ``value`` with its schema (the payload itself included)."""
    return [(path, sub)] + [
        (p, s) for p, s in _slots(value, sub, path) if isinstance(_get(value, p[len(path) :]), dict)
    ]


def _get(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def _set(value: Any, path: tuple, new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    if not path:
        return new
    _get(copy, path[:-1])[path[-1]] = new
    return copy


def _delete(value: Any, path: tuple) -> Any:
    copy = json.loads(json.dumps(value))
    del _get(copy, path[:-1])[path[-1]]
    return copy


_garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=12,
)


def _wrong_type(sub: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value that is not of the subschema's JSON type (draft 4: 1.0 is not an integer)."""
    kind = sub.get("type")
    others = {
        "string": st.integers() | st.booleans() | st.none() | st.lists(st.integers(), max_size=2),
        "integer": any_text
        | st.floats(allow_nan=False).filter(lambda f: not f.is_integer())
        | st.booleans()
        | st.none(),
        "number": any_text | st.booleans() | st.none() | st.dictionaries(any_text, st.integers()),
        "boolean": st.integers() | any_text | st.none(),
        "array": st.integers() | any_text | st.dictionaries(any_text, st.integers(), max_size=2),
        "object": st.integers() | any_text | st.lists(st.integers(), max_size=2) | st.none(),
    }
    strategy = others.get(kind or "object", others["object"])
    if kind in ("string", "integer", "number", "boolean"):  # nested garbage fits none of them
        strategy = (
            strategy
            | st.lists(_garbage, min_size=1, max_size=2)
            | st.dictionaries(any_text, _garbage, min_size=1, max_size=2)
        )
    return strategy


@st.composite
def uids(draw: st.DrawFn) -> str:
    """Unique ids as stations make them: counters, UUIDs, and some odd ones (still strings)."""
    return draw(
        st.integers(1, 10**9).map(str)
        | st.uuids().map(str)
        | st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=36)
    )


def call(uid: str, action: str, payload: Any) -> str:
    return json.dumps([2, uid, action, payload])


@st.composite
def valid_call(draw: st.DrawFn) -> Frame:
    action = draw(st.sampled_from(HANDLED))
    uid = draw(uids())
    payload = draw(realistic(action))
    return Frame(call(uid, action, payload), "valid", uid, frozenset({RESULT}), action)


@st.composite
def schema_valid_call(draw: st.DrawFn) -> Frame:
    """Any payload the schema allows: huge integers, control characters, odd timestamps."""
    action = draw(st.sampled_from(HANDLED))
    uid = draw(uids())
    payload = draw(arbitrary(action))
    return Frame(call(uid, action, payload), "schema_valid", uid, VALID_BUT_ODD, action)


@st.composite
def mutated_call(draw: st.DrawFn) -> Frame:
    """A realistic payload with one schema violation; the CALLERROR follows from which."""
    action = draw(st.sampled_from(HANDLED))
    uid = draw(uids())
    payload = draw(realistic(action))
    sch = schema(action)
    slots = [(p, s) for p, s in _slots(payload, sch) if s]
    objects = _objects(payload, sch)
    choices = []  # hypothesis favours the first choices: the rarest come first
    if slots:
        choices += ["wrong_type", "huge_number", "unicode", "lone_surrogate"]
    if any(s.get("maxLength") and "enum" not in s for _, s in slots):
        choices.append("too_long")
    if any("enum" in s for _, s in slots):
        choices.append("bad_enum")
    if any(set(s.get("required", [])) & set(_get(payload, p)) for p, s in objects):
        choices.append("missing_required")
    choices.append("extra_field")
    how = draw(st.sampled_from(choices))
    text: str | None = None
    expect: frozenset[str]
    if how == "extra_field":
        path, sub = draw(st.sampled_from(objects))
        known = set(sub.get("properties", {}))
        key = draw(any_text.filter(lambda k: k not in known))
        payload = _set(payload, (*path, key), draw(_garbage))
        expect = frozenset({FV})
    elif how == "wrong_type":
        path, sub = draw(st.sampled_from(slots))
        payload = _set(payload, path, draw(_wrong_type(sub)))
        expect = frozenset({TCV})
    elif how == "too_long":
        path, sub = draw(
            st.sampled_from([(p, s) for p, s in slots if s.get("maxLength") and "enum" not in s])
        )
        extra = draw(st.integers(1, 500))
        payload = _set(payload, path, "x" * (sub["maxLength"] + extra))
        expect = frozenset({TCV})
    elif how == "bad_enum":
        path, sub = draw(st.sampled_from([(p, s) for p, s in slots if "enum" in s]))
        payload = _set(payload, path, draw(any_text.filter(lambda v: v not in sub["enum"])))
        expect = frozenset({PCV})
    elif how == "missing_required":
        path, sub = draw(
            st.sampled_from(
                [(p, s) for p, s in objects if set(s.get("required", [])) & set(_get(payload, p))]
            )
        )
        name = draw(st.sampled_from(sorted(set(sub["required"]) & set(_get(payload, path)))))
        payload = _delete(payload, (*path, name))
        expect = frozenset({OCV})
    elif how == "huge_number":
        # Integers beyond 64 bits and floats near the limits: valid JSON, valid by the schema
        # where the field is a number; never an InternalError.
        path, sub = draw(st.sampled_from(slots))
        big = draw(
            st.integers(19, 400).map(lambda k: 10**k)
            | st.integers(19, 400).map(lambda k: -(10**k))
            | st.sampled_from([2**63, -(2**63) - 1, 2**31, 2**15, -1])
            | st.sampled_from([1e308, -1e308, 5e-324])
        )
        payload = _set(payload, path, big)
        kind = sub.get("type")
        fits = kind == "number" or (kind == "integer" and isinstance(big, int))
        expect = VALID_BUT_ODD if fits else frozenset({TCV, PCV} if "enum" in sub else {TCV})
    elif how == "unicode":
        path, sub = draw(st.sampled_from(slots))
        value = draw(
            st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20)
            | st.sampled_from(["\x00", "Ω😀\u202e", "e\u0301" * 5, "\ufeff", "𝔘𝔫𝔦"])
        )
        payload = _set(payload, path, value)
        expect = _string_expectation(sub, value)
    else:  # lone_surrogate: valid JSON ("\ud800"), but not encodable text
        path, sub = draw(st.sampled_from(slots))
        payload = _set(payload, path, "SURROGATE")
        text = call(uid, action, payload).replace('"SURROGATE"', '"\\ud800x"')
        expect = _string_expectation(sub, "\ud800x")
    return Frame(
        text or call(uid, action, payload),
        how,
        uid,
        expect,
        action,
        refused=RESULT not in expect,
    )


def _string_expectation(sub: dict[str, Any], value: str) -> frozenset[str]:
    kind = sub.get("type")
    if kind != "string":
        return frozenset({TCV})
    if sub.get("maxLength") and len(value) > sub["maxLength"]:
        return frozenset({TCV})
    if "enum" in sub and value not in sub["enum"]:
        return frozenset({PCV})
    return VALID_BUT_ODD


@st.composite
def framing(draw: st.DrawFn) -> Frame:
    """Frames wrong at the OCPP-J level: not JSON, not a message, unknown ids and actions."""
    uid = draw(uids())
    how = draw(
        st.sampled_from(
            [
                "bad_json",
                "not_a_list",
                "short_list",
                "bad_type_id",
                "bad_unique_id",
                "payload_not_object",
                "unknown_action",
                "unsupported_action",
                "unsolicited_result",
                "unsolicited_error",
                "deep_nesting",
            ]
        )
    )
    if how == "bad_json":
        whole = call(uid, "Heartbeat", {})
        cut = draw(st.integers(1, len(whole) - 1))
        text = whole[:cut] + draw(st.sampled_from(["", "}", ",", "'", "\\", "\x00"]))
        # The id is only readable when the frame still holds it whole (and its closing quote).
        readable = text.startswith(json.dumps([2, uid])[:-1])
        return Frame(text, how, uid if readable else "-1", frozenset({FV}), refused=True)
    if how == "deep_nesting":  # recursion inside the JSON parser: still a plain error
        depth = draw(st.integers(2000, 30000))
        text = json.dumps([2, uid, "Heartbeat"])[:-1] + ", " + "[" * depth + "]" * depth + "]"
        return Frame(text, how, uid, frozenset({FV, PE}), refused=True)
    if how == "not_a_list":
        value = draw(st.dictionaries(any_text, _garbage, max_size=3) | st.integers() | any_text)
        return Frame(json.dumps(value), how, "-1", frozenset({PE}), refused=True)
    if how == "short_list":
        value = draw(st.sampled_from([[], [2], [2, uid]]))
        expected_id = uid if len(value) == 2 else "-1"
        return Frame(json.dumps(value), how, expected_id, frozenset({PE}), refused=True)
    if how == "bad_type_id":
        type_id = draw(st.sampled_from([0, 1, 5, 6, 99, -2, "2", None, True, [], {}]))
        text = json.dumps([type_id, uid, "Heartbeat", {}])
        return Frame(text, how, uid, frozenset({PE}), refused=True)
    if how == "bad_unique_id":
        bad = draw(st.sampled_from([1, None, 2.5, [], {}, True]))
        return Frame(json.dumps([2, bad, "Heartbeat", {}]), how, "-1", frozenset({PE}), True)
    if how == "payload_not_object":
        payload = draw(st.sampled_from([[], None, 1, "x", [{}]]))
        action = draw(st.sampled_from(HANDLED))
        return Frame(call(uid, action, payload), how, uid, frozenset({PE}), refused=True)
    if how == "unknown_action":
        action = draw(any_text.filter(lambda a: a not in V16_ACTIONS))
        return Frame(call(uid, action, {}), how, uid, frozenset({NI}), refused=True)
    if how == "unsupported_action":
        action = draw(st.sampled_from(NOT_HANDLED))
        return Frame(call(uid, action, {}), how, uid, frozenset({NS}), refused=True)
    if how == "unsolicited_result":
        payload = draw(st.dictionaries(any_text, _garbage, max_size=3))
        return Frame(json.dumps([3, uid, payload]), how, None, frozenset({NONE}), refused=True)
    code = draw(st.sampled_from(["GenericError", "InternalError", "x", ""]))
    text = json.dumps([4, uid, code, draw(any_text), draw(_garbage)])
    return Frame(text, how, None, frozenset({NONE}), refused=True)


frames = st.one_of(
    valid_call(), schema_valid_call(), mutated_call(), mutated_call(), framing(), framing()
)


def generate(count: int, seed: int | None = None) -> list[Frame]:
    """``count`` frames drawn from ``frames`` (the same ones for the same seed).

    Hypothesis drives the generation only: the frames are sent afterwards over one long
    connection, which a shrinking test could not keep between examples."""
    out: list[Frame] = []

    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(frames)
    def collect(frame: Frame) -> None:
        out.append(frame)

    if seed is not None:
        collect = hypothesis_seed(seed)(collect)
    collect()
    return out
