"""What crosses between the sandbox's processes: framed messages, and plain data.

Values the program hands to the tests travel as JSON with tags for what JSON lacks. The runner
(untrusted) encodes with `encode`; the judge (trusted) rebuilds them with `decode`, which makes
nothing but exact builtin types (int, float, complex, str, bytes, bool, None, list, tuple,
dict, set, frozenset, collections.Counter) and opaque handles. A program can choose *which*
values come back, never their behaviour: an object that says it equals everything arrives as
its plain contents or as a handle that cannot be compared.

Standard library only: the worker script imports this module before anything of phi_eval.
"""
import collections
import json
import os
import struct
# Bound here so that a program patching builtins cannot break the runner's encoding.
from builtins import (bool, bytearray, bytes, complex, dict, float, frozenset, hex, int, isinstance, len,  # noqa: A004
                      list, repr, set, str, tuple, type)

# The same as phi_eval.execution.sandbox.STATUSES (a test checks).
STATUSES = ("passed", "failed", "error", "timeout", "memory", "output_limit", "exited_early", "killed")
MAX_MESSAGE = 32 << 20  # a bigger value is "not plain data", not a worker that runs out of memory
BIG_INT = 1 << 62


class NotPlainData(BaseException):
    """A value from the program that the judge cannot trust. BaseException, so that a test's
    own `except Exception` cannot swallow it: it fails the test."""


# ---------------------------------------------------------------- framing

def send(fd, payload):
    """Write one length-prefixed message (bytes, or an object sent as JSON)."""
    data = payload if isinstance(payload, bytes) else dumps(payload)
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def read_exact(fd, size):
    data = b""
    while len(data) < size:
        chunk = os.read(fd, min(size - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return data


def receive_bytes(fd, limit=MAX_MESSAGE):
    """One message's bytes; None at end of input. Over `limit`: NotPlainData."""
    header = read_exact(fd, 4)
    if header is None:
        return None
    size = struct.unpack(">I", header)[0]
    if size > limit:
        raise NotPlainData(f"a message of {size} bytes (more than {limit})")
    return read_exact(fd, size)


def receive(fd):
    data = receive_bytes(fd)
    return None if data is None else loads(data)


# The C encoder and scanner, called directly: json.dumps and json.loads look builtins up at
# each call, and a program that patched those would otherwise break the runner's replies.
# ASCII output: lone surrogates travel as \\udXXX escapes, so any text is sendable.
_encoder = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
_scanner = json.scanner.make_scanner(json.JSONDecoder())


def dumps(message):
    if _encoder is None:
        return json.dumps(message, separators=(",", ":")).encode()
    return "".join(_encoder(message, 0)).encode()


def loads(data):
    text = data.decode()
    try:
        value, end = _scanner(text, 0)
    except StopIteration:  # the scanner's way of saying "no value here"
        raise ValueError("not a JSON message") from None
    if end != len(text):
        raise ValueError("extra data after a message")
    return value


def printable(text):
    """Text that any UTF-8 writer accepts: lone surrogates become \\udXXX escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------- plain data

def encode(value, handle_of, depth=0):
    """A JSON-able form of `value`, run in the runner. Builtin containers and numbers (their
    subclasses as the builtin value, which is what they hold), modules by name, anything
    else as a handle: handle_of(value) -> int. Not trusted by the judge."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if depth > 200:
        return {"h": handle_of(value)}
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        number = int.__index__(value)
        return number if -BIG_INT < number < BIG_INT else {"i": hex(number)}
    if isinstance(value, float):
        number = float.__float__(value)
        return number if number - number == 0 else {"f": repr(number)}  # nan and infinities
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, complex):
        return {"c": [repr(value.real), repr(value.imag)]}
    if isinstance(value, (bytes, bytearray)):
        return {"b": bytes(value).hex()}
    if isinstance(value, list):
        return [encode(item, handle_of, depth + 1) for item in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"t": [encode(item, handle_of, depth + 1) for item in tuple.__iter__(value)]}
    if isinstance(value, (set, frozenset)):
        tag = "s" if isinstance(value, set) else "z"
        return {tag: [encode(item, handle_of, depth + 1) for item in (set if tag == "s" else frozenset).__iter__(value)]}
    if isinstance(value, dict):
        tag = "n" if isinstance(value, collections.Counter) else "d"
        return {tag: [[encode(key, handle_of, depth + 1), encode(item, handle_of, depth + 1)]
                      for key, item in dict.items(value)]}
    if isinstance(value, type(os)):
        return {"m": value.__name__}
    return {"h": handle_of(value)}


def decode(data, make_handle, import_module):
    """The value `encode` described, built from exact builtin types only, in the judge.
    Anything malformed raises NotPlainData."""
    try:
        return _decode(data, make_handle, import_module)
    except NotPlainData:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, OverflowError) as error:
        raise NotPlainData(f"malformed value from the program ({type(error).__name__})") from None


def _decode(data, make_handle, import_module):
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [_decode(item, make_handle, import_module) for item in data]
    if kind is not dict or len(data) != 1:
        raise NotPlainData(f"malformed value from the program ({kind.__name__})")
    (tag, body), = data.items()
    if tag == "i":
        return int(_text(body), 16)
    if tag == "f":
        number = float(_text(body))
        if number - number == 0:
            raise ValueError("finite float in a tag")
        return number
    if tag == "c":
        real, imag = body
        return complex(float(_text(real)), float(_text(imag)))
    if tag == "b":
        return bytes.fromhex(_text(body))
    if tag == "m":
        return import_module(_text(body))
    if tag == "h":
        if type(body) is not int:
            raise TypeError("handle")
        return make_handle(body)
    items = [_decode(item, make_handle, import_module) for item in _list(body)]
    if tag == "t":
        return tuple(items)
    if tag == "s":
        return set(items)
    if tag == "z":
        return frozenset(items)
    if tag in ("d", "n"):
        pairs = dict((_list(pair)[0], pair[1]) for pair in items if len(pair) == 2)
        if len(pairs) != len(items):
            raise ValueError("dict pairs")
        return collections.Counter(pairs) if tag == "n" else pairs
    raise NotPlainData(f"unknown tag {printable(str(tag))[:20]!r} from the program")


def _text(value):
    if type(value) is not str:
        raise TypeError("text")
    return value


def _list(value):
    if type(value) is not list:
        raise TypeError("list")
    return value
