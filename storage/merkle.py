"""RFC 9162 §2.1 Merkle tree math over stored complete subtrees: roots, proofs, appends.

What it promises. Hashes are SHA-256: a leaf hashes as SHA-256(0x00 || leaf), an inner node as
SHA-256(0x01 || left || right), and the empty tree's root is SHA-256 of the empty string.
The service keeps, per organisation, the hash of every *complete* subtree: node
``(level, index)`` is the hash of leaves ``[index·2^level, (index+1)·2^level)``. Everything
here reads those nodes through a ``NodeReader`` and never holds the whole tree, so a root, an
inclusion proof (§2.1.3.1 PATH) or a consistency proof (§2.1.4.1 SUBPROOF) costs O(log n)
node reads whatever the tree's size. ``appended_nodes`` says which nodes appending leaves
creates; ``verify_inclusion`` and ``verify_consistency`` are §2.1.3.2 and §2.1.4.2.

Reason. The log is the service's tamper evidence: a checkpoint signs a root, and a client
holding it checks any event's inclusion and the log's append-only growth with these proofs.
The module is pure (no I/O, no database) so that it is tested against the published vectors
of transparency-dev/merkle and against a naive RFC implementation, apart from storage.

Builders (``subtree_hash``, ``root``, ``inclusion_proof``, ``consistency_proof``,
``appended_nodes``) raise ``ValueError`` for arguments outside their domain, and pass on
whatever the reader raises for a node it does not have. Verifiers never raise: any malformed
input (negative or out-of-range sizes, hashes that are not 32 bytes, a proof that is not a
list of hashes or has the wrong length) is simply a proof that does not verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: ``(level, index) -> hash`` of the complete subtree over leaves
#: ``[index·2^level, (index+1)·2^level)``; raises (e.g. ``LookupError``) if it has none.
NodeReader = Callable[[int, int], bytes]

#: A node's address: (level, index).
NodeId = tuple[int, int]


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 inner node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# -- ranges and the complete nodes that cover them ---------------------------------------


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (RFC 9162's k), for ``n >= 2``."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_range(start: int, end: int) -> None:
    """Raise unless ``[start, end)`` is a range whose MTH complete nodes can give.

    That is: ``0 <= start <= end`` and ``start`` is a multiple of the smallest power of two
    at least ``end - start`` (any ``[0, n)`` qualifies). Every range that RFC 9162's MTH,
    PATH and SUBPROOF recurse into has this shape; draft-ietf-plants-merkle-tree-certs calls
    these "valid subtrees".
    """
    if not (_is_count(start) and _is_count(end)) or start > end:
        raise ValueError(f"[{start}, {end}) is not a range of leaves")
    length = end - start
    if start and length and start % (1 << (length - 1).bit_length()):
        raise ValueError(
            f"[{start}, {end}): start must be a multiple of the smallest power of two "
            f">= {length} for its hash to come from complete subtrees"
        )


def _range_nodes(start: int, end: int) -> list[NodeId]:
    """The complete nodes, left to right, whose hashes fold (right to left) into MTH."""
    nodes: list[NodeId] = []
    position = start
    while position < end:
        level = (end - position).bit_length() - 1
        nodes.append((level, position >> level))
        position += 1 << level
    return nodes


def _fold(ids: Sequence[NodeId], node: NodeReader) -> bytes:
    if not ids:
        return EMPTY_ROOT
    digest = node(*ids[-1])
    for level, index in reversed(ids[:-1]):
        digest = node_hash(node(level, index), digest)
    return digest


def subtree_hash(start: int, end: int, node: NodeReader) -> bytes:
    """MTH of leaves ``[start, end)`` from complete nodes only, in popcount(end - start) reads.

    Precondition (checked, ``ValueError`` otherwise): ``0 <= start <= end`` and ``start`` is a
    multiple of the smallest power of two ``>= end - start``. This holds for ``[0, n)`` and
    for every range RFC 9162's PATH and SUBPROOF split a tree into; for such a range the
    greedy left-to-right cover by the largest aligned complete subtrees is exactly the
    sequence of left children of RFC's recursive split, so folding it from the right gives
    MTH. The empty range gives ``EMPTY_ROOT``. Every leaf before ``end`` must be in the tree.
    """
    _check_range(start, end)
    return _fold(_range_nodes(start, end), node)


def root(size: int, node: NodeReader) -> bytes:
    """The root hash (MTH) of the tree's first ``size`` leaves."""
    return subtree_hash(0, size, node)


# -- proofs -------------------------------------------------------------------------------


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs are PATH(index, D[0:size]), in proof order (leaf upwards)."""
    if not (_is_count(index) and _is_count(size)) or index >= size:
        raise ValueError(f"no leaf {index} in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    low, high = 0, size
    while high - low > 1:
        middle = low + _split(high - low)
        if index < middle:
            ranges.append((middle, high))
            high = middle
        else:
            ranges.append((low, middle))
            low = middle
    ranges.reverse()
    return ranges


def _consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs are PROOF(first, D[0:second]), in proof order."""
    if not (_is_count(first) and _is_count(second)) or first > second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    ranges: list[tuple[int, int]] = []
    low, high, complete = 0, second, True
    while high != first:
        middle = low + _split(high - low)
        if first <= middle:
            ranges.append((middle, high))
            high = middle
        else:
            ranges.append((low, middle))
            low, complete = middle, False
    if not complete:
        ranges.append((low, high))
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]): the audit path of leaf ``index`` (0-based).

    ``ValueError`` unless ``0 <= index < size``. At most about 2·log2(size) node reads: the
    path's siblings are complete subtrees except one, and that one is a valid range.
    """
    return [subtree_hash(start, end, node) for start, end in _inclusion_ranges(index, size)]


def consistency_proof(first: int, second: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(first, D[0:second]) = SUBPROOF(first, D[0:second], true).

    ``ValueError`` unless ``0 <= first <= second``. For ``first == second`` and for
    ``first == 0`` the proof is empty: RFC 9162 defines proofs for ``0 < first < second``
    only, an equal size is consistent exactly when the roots are equal, and the empty tree
    is a prefix of every tree (``verify_consistency`` rejects ``first == 0``: there is
    nothing to verify, so a caller handles the empty tree itself).
    """
    return [subtree_hash(start, end, node) for start, end in _consistency_ranges(first, second)]


def _unique_nodes(ranges: Sequence[tuple[int, int]]) -> list[NodeId]:
    seen: dict[NodeId, None] = {}
    for start, end in ranges:
        for node_id in _range_nodes(start, end):
            seen.setdefault(node_id)
    return list(seen)


def root_nodes(size: int) -> list[NodeId]:
    """The nodes ``root(size, …)`` reads: the complete subtrees covering the first ``size``
    leaves. They hold every old left sibling ``appended_nodes(size, …)`` may read, and
    with the nodes it creates, all that the new root reads."""
    _check_range(0, size)
    return _range_nodes(0, size)


def inclusion_nodes(index: int, size: int) -> list[NodeId]:
    """The nodes ``inclusion_proof(index, size, …)`` reads, each once (to fetch in bulk)."""
    return _unique_nodes(_inclusion_ranges(index, size))


def consistency_nodes(first: int, second: int) -> list[NodeId]:
    """The nodes ``consistency_proof(first, second, …)`` reads, each once."""
    return _unique_nodes(_consistency_ranges(first, second))


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf hash ``leaf_hash`` at ``index`` under ``root``?

    ``True`` only if ``0 <= index < size``, every hash is 32 bytes, the proof has exactly the
    length the tree's shape calls for, and the recomputed root equals ``root``. Never raises.
    """
    if not (_is_count(index) and _is_count(size)) or index >= size:
        return False
    if not (_is_hash(leaf_hash) and _is_hash(root)) or not isinstance(proof, list | tuple):
        return False
    fn, sn = index, size - 1
    digest = bytes(leaf_hash)
    for sibling in proof:
        if sn == 0 or not _is_hash(sibling):
            return False
        if fn & 1 or fn == sn:
            digest = node_hash(bytes(sibling), digest)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            digest = node_hash(digest, bytes(sibling))
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(digest, bytes(root))


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of ``second_root`` an extension of that of ``first_root``?

    ``True`` only if ``0 < first <= second``, every hash is 32 bytes and the proof
    reproduces both roots with exactly the expected number of hashes. Equal sizes are
    consistent exactly when the proof is empty and the roots are equal (RFC 9162 only
    defines proofs for ``first < second``). ``first == 0`` is always ``False``: a proof from
    the empty tree shows nothing. Never raises.
    """
    if not (_is_count(first) and _is_count(second)) or not 0 < first <= second:
        return False
    if not (_is_hash(first_root) and _is_hash(second_root)):
        return False
    if not isinstance(proof, list | tuple):
        return False
    if first == second:
        return not proof and hmac.compare_digest(bytes(first_root), bytes(second_root))
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    if not _is_hash(path[0]):
        return False
    fr = sr = bytes(path[0])
    for sibling in path[1:]:
        if sn == 0 or not _is_hash(sibling):
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(bytes(sibling), fr)
            sr = node_hash(bytes(sibling), sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, bytes(sibling))
        fn, sn = fn >> 1, sn >> 1
    return (
        sn == 0
        and hmac.compare_digest(fr, bytes(first_root))
        and hmac.compare_digest(sr, bytes(second_root))
    )


# -- appending ----------------------------------------------------------------------------


def appended_nodes(
    old_size: int, new_leaf_hashes: Sequence[bytes], node: NodeReader
) -> list[tuple[int, int, bytes]]:
    """The complete nodes ``(level, index, hash)`` that appending these leaf hashes creates.

    In creation order: each leaf's level-0 node, then each parent it completes. Left
    siblings made earlier in the same call are kept here; older ones (the right edge of the
    tree of ``old_size``, popcount(old_size) nodes at most) are read through ``node``, each at
    most once. ``ValueError`` for a negative ``old_size`` or a leaf hash that is not 32 bytes.
    """
    if not _is_count(old_size):
        raise ValueError(f"old_size must be a non-negative integer, not {old_size!r}")
    created: list[tuple[int, int, bytes]] = []
    made: dict[NodeId, bytes] = {}
    for offset, digest in enumerate(new_leaf_hashes):
        if not _is_hash(digest):
            raise ValueError(f"leaf hash {offset} is not {HASH_SIZE} bytes")
        level, index, digest = 0, old_size + offset, bytes(digest)
        made[(level, index)] = digest
        created.append((level, index, digest))
        while index & 1:
            left = made.pop((level, index - 1), None)
            if left is None:
                left = node(level, index - 1)
            digest = node_hash(left, digest)
            level, index = level + 1, index >> 1
            made[(level, index)] = digest
            created.append((level, index, digest))
    return created
