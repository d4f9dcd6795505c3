"""C2SP signed notes with Ed25519 (c2sp.org/signed-note), and checkpoints (tlog-checkpoint).

What it promises. A note is UTF-8 text ending in a newline, a blank line, then one signature line
per signer: ``— <key name> <base64(4-byte key ID || Ed25519 signature of the text)>``. Keys
are written as the Go ``golang.org/x/mod/sumdb/note`` package writes them: a private key is
``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || 32-byte seed)>`` and a verifier key
(vkey) ``<name>+<hex key ID>+<base64(0x01 || 32-byte public key)>``, where the key ID is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]``. ``open_note`` returns a note's text
only if a known key's signature on it verifies; it ignores signatures by unknown keys
(per the spec, unknown means name *and* ID do not both match), rejects the whole note if a
known key's signature fails, and raises ``NoteRejected`` saying why. A checkpoint's text is
``<origin>\\n<tree size>\\n<base64 root hash>\\n`` followed by optional extension lines.

Reason. Checkpoints are how the log commits to its tree: a client that trusts the service's
vkey can check, offline and with any C2SP tool (Go's note package, witnesses), that a root
was signed, then check proofs against it. The module is pure: no I/O, no storage.

Parsing is strict everywhere: base64 must be canonical standard base64 with padding, hex
key IDs lowercase, names non-empty without Unicode spaces, ``+`` or control characters,
notes free of control characters other than newline, tree sizes decimal without leading
zeros. Malformed keys raise ``ValueError`` (never echoing private key material).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
KEY_ID_SIZE = 4
SIGNATURE_SIZE = 64
ROOT_SIZE = 32
#: At most this many signature lines per note (the spec asks verifiers to accept 16).
MAX_SIGNATURES = 100
MAX_TREE_SIZE = 2**64 - 1

_SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class NoteRejected(ValueError):
    """The note is malformed, or no known key's signature on it verifies."""


def _valid_name(name: str) -> bool:
    """Non-empty, no ``+``, no Unicode space (as Go's unicode.IsSpace) and no control."""
    if not name or "+" in name:
        return False
    for char in name:
        category = unicodedata.category(char)
        if char.isspace() or category.startswith("Z") or category == "Cc":
            return False
        if category == "Cs":  # a lone surrogate: not encodable as UTF-8
            return False
    return True


def _b64decode(text: str) -> bytes:
    """Canonical standard base64 (RFC 4648 §4, padded) or ``ValueError``."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as error:
        raise ValueError("not base64") from error
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    material = name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + bytes(public_key)
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _parse_key(fields: list[str], what: str) -> tuple[str, bytes, bytes]:
    """``[name, hex key ID, base64(0x01 || 32 bytes)]`` → (name, key ID, 32 bytes).

    The base64 field may itself contain ``+``: callers split at most twice.
    """
    if len(fields) != 3:
        raise ValueError(f"malformed {what}: want <name>+<hex key ID>+<base64 key>")
    name, hex_id, material = fields
    if not _valid_name(name):
        raise ValueError(f"malformed {what}: invalid key name")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise ValueError(f"malformed {what}: the key ID must be 8 lowercase hex digits")
    try:
        raw = _b64decode(material)
    except ValueError as error:
        raise ValueError(f"malformed {what}: the key is not canonical base64") from error
    if len(raw) != 1 + 32:
        raise ValueError(f"malformed {what}: want 33 key bytes, not {len(raw)}")
    if raw[0] != ALG_ED25519:
        raise ValueError(f"unsupported {what}: signature type {raw[0]:#04x} is not Ed25519")
    return name, bytes.fromhex(hex_id), raw[1:]


def _key_text(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"note text must be str, not {type(text).__name__}")
    return text.encode("utf-8")


class NoteVerifier:
    """An Ed25519 note verifier from a vkey ``<name>+<hex key ID>+<base64(0x01 || key)>``."""

    def __init__(self, vkey: str) -> None:
        if not isinstance(vkey, str):
            raise ValueError("a verifier key is a str")
        name, claimed, public = _parse_key(vkey.split("+", 2), "verifier key")
        if key_id(name, public) != claimed:
            raise ValueError(f"verifier key {name}: the key ID does not match the key")
        try:
            self._key = Ed25519PublicKey.from_public_bytes(public)
        except ValueError as error:
            raise ValueError(f"verifier key {name}: not an Ed25519 public key") from error
        self.name = name
        self.key_id = claimed
        self.public_key = public
        self.vkey = vkey

    def verify(self, text: str, payload: bytes) -> bool:
        """Whether ``payload`` (key ID || signature, as in a signature line) signs ``text``."""
        if len(payload) != KEY_ID_SIZE + SIGNATURE_SIZE or payload[:KEY_ID_SIZE] != self.key_id:
            return False
        try:
            self._key.verify(bytes(payload[KEY_ID_SIZE:]), _key_text(text))
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"NoteVerifier({self.vkey!r})"


class NoteSigner:
    """An Ed25519 note signer from ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``."""

    def __init__(self, private_key: str) -> None:
        if not isinstance(private_key, str):
            raise ValueError("a private key is a str")
        fields = private_key.split("+", 4)
        if fields[:2] != ["PRIVATE", "KEY"]:
            raise ValueError("malformed private key: it must start with PRIVATE+KEY+")
        name, claimed, seed = _parse_key(fields[2:], "private key")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = _raw_public(self._key.public_key())
        if key_id(name, public) != claimed:
            raise ValueError(f"private key {name}: the key ID does not match the key")
        self.name = name
        self.key_id = claimed
        self.public_key = public
        self.vkey = f"{name}+{claimed.hex()}+{_b64encode(bytes([ALG_ED25519]) + public)}"

    def sign(self, text: str) -> bytes:
        """The signature line payload for ``text``: key ID (4 bytes) || Ed25519 signature (64)."""
        return self.key_id + self._key.sign(_key_text(text))

    def __repr__(self) -> str:  # never the private key
        return f"NoteSigner(vkey={self.vkey!r})"


def generate_key(name: str) -> str:
    """A new Ed25519 private key string for key name ``name`` (``NoteSigner`` reads it)."""
    if not _valid_name(name):
        raise ValueError(f"invalid key name {name!r}: empty, or has a space, '+' or control")
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    hex_id = key_id(name, _raw_public(key.public_key())).hex()
    return f"PRIVATE+KEY+{name}+{hex_id}+{_b64encode(bytes([ALG_ED25519]) + seed)}"


def _control_free(text: str) -> bool:
    """No control character except newline, and encodable as UTF-8 (no lone surrogate)."""
    for char in text:
        if (char < "\x20" and char != "\n") or "\ud800" <= char <= "\udfff":
            return False
    return True


def sign_note(text: str, signers: Iterable[NoteSigner]) -> str:
    """``text`` + a blank line + one signature line per signer, in order.

    ``ValueError`` if the text does not end in a newline, has a control character other
    than newline, or if there is no signer.
    """
    if not isinstance(text, str) or not text.endswith("\n"):
        raise ValueError("a note's text must be a str ending in a newline")
    if not _control_free(text):
        raise ValueError("a note's text must have no control character other than newline")
    lines = [f"{_SIGNATURE_PREFIX}{s.name} {_b64encode(s.sign(text))}\n" for s in signers]
    if not lines:
        raise ValueError("a note needs at least one signer")
    return text + "\n" + "".join(lines)


def open_note(note: str, verifiers: Iterable[NoteVerifier]) -> str:
    """The text of ``note`` if a known key's signature on it verifies; else ``NoteRejected``.

    A key is known if one of ``verifiers`` has both its name and key ID. Signatures by
    unknown keys are ignored; one by a known key that does not verify rejects the note.
    """
    if not isinstance(note, str):
        raise NoteRejected("malformed note: not text")
    if not _control_free(note):
        raise NoteRejected("malformed note: control character or invalid UTF-8")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteRejected("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteRejected("malformed note: no signature lines, or no final newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteRejected(f"malformed note: more than {MAX_SIGNATURES} signatures")

    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in verifiers:
        ident = (verifier.name, verifier.key_id)
        if ident in known and known[ident].public_key != verifier.public_key:
            raise NoteRejected(f"ambiguous key {verifier.name}+{verifier.key_id.hex()}")
        known[ident] = verifier

    verified = 0
    unknown: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIGNATURE_PREFIX):
            raise NoteRejected(f"malformed note: signature line {number} does not start '— '")
        name, _, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        try:
            payload = _b64decode(encoded)
        except ValueError:
            payload = b""
        if not _valid_name(name) or len(payload) <= KEY_ID_SIZE:
            raise NoteRejected(f"malformed note: signature line {number} is not '— name base64'")
        ident = (name, payload[:KEY_ID_SIZE])
        match = known.get(ident)
        if match is None:
            unknown.append(f"{name}+{ident[1].hex()}")
            continue
        if not match.verify(text, payload):
            raise NoteRejected(f"invalid signature for key {name}+{ident[1].hex()}")
        verified += 1
    if not verified:
        raise NoteRejected(
            "note has no verifiable signatures (signed only by unknown keys: "
            + ", ".join(unknown)
            + ")"
        )
    return text


# -- checkpoints --------------------------------------------------------------------------


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """The checkpoint note text ``<origin>\\n<size>\\n<base64 root>\\n`` (no extension lines)."""
    if not isinstance(origin, str) or not origin or "\n" in origin or not _control_free(origin):
        raise ValueError("a checkpoint origin is one non-empty line without control characters")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"a tree size is an integer in [0, 2^64), not {size!r}")
    if not isinstance(root, bytes | bytearray) or len(root) != ROOT_SIZE:
        raise ValueError(f"a root hash is {ROOT_SIZE} bytes")
    return f"{origin}\n{size}\n{_b64encode(bytes(root))}\n"


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    """``(origin, tree size, root hash)`` of a checkpoint's note text, or ``ValueError``.

    At least three lines, each non-empty and ending in a newline: the origin, the size in
    decimal without leading zeros (below 2^64), and the canonical base64 of a 32-byte root.
    Further lines are extension lines: allowed, non-empty, and ignored here.
    """
    if not isinstance(text, str) or not text.endswith("\n") or not _control_free(text):
        raise ValueError("malformed checkpoint: not newline-terminated text without controls")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise ValueError("malformed checkpoint: want origin, tree size and root hash lines")
    if any(not line for line in lines):
        raise ValueError("malformed checkpoint: empty line")
    origin, size_line, root_line = lines[:3]
    if not _DECIMAL.fullmatch(size_line):
        raise ValueError("malformed checkpoint: the tree size is not a decimal number")
    size = int(size_line)
    if size > MAX_TREE_SIZE:
        raise ValueError("malformed checkpoint: the tree size does not fit in 64 bits")
    try:
        root = _b64decode(root_line)
    except ValueError as error:
        raise ValueError("malformed checkpoint: the root hash is not base64") from error
    if len(root) != ROOT_SIZE:
        raise ValueError(f"malformed checkpoint: the root hash is not {ROOT_SIZE} bytes")
    return origin, size, root
