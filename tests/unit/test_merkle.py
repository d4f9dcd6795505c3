"""RFC 9162 Merkle math (storage.merkle) against transparency-dev/merkle's published vectors.

Besides the vectors (tests/unit/merkle_vectors.py names their source and commit), the proofs
are checked against a naive transcription of RFC 9162's recursive definitions, every
corruption of a proof is shown to be rejected, and the node reads are counted.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import merkle
from tests.unit import merkle_vectors as vectors


def hx(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def b64(value: str) -> bytes:
    return base64.b64decode(value)


class MemoryTree:
    """Every complete node of a tree of ``leaves``, computed level by level from the leaves.

    Built without ``merkle.appended_nodes`` so that the proofs are tested independently of
    it. ``reader(size)`` serves only the nodes complete at ``size`` and counts its reads.
    """

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.size = len(leaf_hashes)
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )
        self.reads: list[tuple[int, int]] = []

    @classmethod
    def of(cls, count: int, tag: str = "leaf") -> MemoryTree:
        return cls([merkle.leaf_hash(f"{tag} {i}".encode()) for i in range(count)])

    def nodes(self) -> dict[tuple[int, int], bytes]:
        return {
            (level, index): digest
            for level, row in enumerate(self.levels)
            for index, digest in enumerate(row)
        }

    def reader(self, size: int | None = None) -> merkle.NodeReader:
        limit = self.size if size is None else size

        def read(level: int, index: int) -> bytes:
            if (index + 1) << level > limit or level >= len(self.levels):
                raise LookupError(f"node ({level}, {index}) is not complete at size {limit}")
            self.reads.append((level, index))
            return self.levels[level][index]

        return read


class Rfc:
    """RFC 9162 §2.1's recursive MTH, PATH and SUBPROOF, transcribed literally over ranges."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.leaves = leaf_hashes
        self.mth = cache(self._mth)

    @staticmethod
    def k(n: int) -> int:
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    def _mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[start]
        k = self.k(n)
        return merkle.node_hash(self.mth(start, start + k), self.mth(start + k, end))

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = self.k(n)
        if m < k:
            return self.path(m, start, start + k) + [self.mth(start + k, end)]
        return self.path(m - k, start + k, end) + [self.mth(start, start + k)]

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = self.k(n)
        if m <= k:
            return self.subproof(m, start, start + k, b) + [self.mth(start + k, end)]
        return self.subproof(m - k, start + k, end, False) + [self.mth(start, start + k)]


def flip(digest: bytes, bit: int = 0) -> bytes:
    changed = bytearray(digest)
    changed[(bit // 8) % len(changed)] ^= 1 << (bit % 8)
    return bytes(changed)


EXTRA = hashlib.sha256(b"not in the tree").digest()


class TestHashing:
    def test_leaves_and_nodes_are_domain_separated_sha256(self):
        assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
        left, right = b"L" * 32, b"R" * 32
        assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()

    def test_the_empty_tree_has_the_hash_of_the_empty_string(self):
        assert merkle.EMPTY_ROOT == bytes.fromhex(vectors.ROOT_HASHES[0])
        assert merkle.root(0, MemoryTree([]).reader()) == merkle.EMPTY_ROOT


class TestPublishedTree:
    """testonly/constants.go: the leaves, every complete node, and the root of each size."""

    leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in vectors.LEAF_INPUTS]

    def test_leaf_hashes_are_the_published_level_zero_nodes(self):
        assert self.leaves == hx(vectors.NODE_HASHES[0])

    def test_appending_the_leaves_creates_exactly_the_published_nodes(self):
        created = merkle.appended_nodes(0, self.leaves, MemoryTree([]).reader())
        assert {(lv, ix): h for lv, ix, h in created} == {
            (level, index): bytes.fromhex(h)
            for level, row in enumerate(vectors.NODE_HASHES)
            for index, h in enumerate(row)
        }
        assert len(created) == sum(len(row) for row in vectors.NODE_HASHES)

    def test_the_root_of_every_size_is_the_published_one(self):
        tree = MemoryTree(self.leaves)
        for size, want in enumerate(vectors.ROOT_HASHES):
            assert merkle.root(size, tree.reader(size)).hex() == want, size

    def test_the_memory_tree_holds_the_published_nodes(self):
        assert MemoryTree(self.leaves).levels == [hx(row) for row in vectors.NODE_HASHES]


class TestPublishedProofs:
    """testonly/reference_test.go and cmd/proofgen/main.go: expected proofs, hash by hash."""

    tree = MemoryTree([merkle.leaf_hash(bytes.fromhex(x)) for x in vectors.LEAF_INPUTS])

    @pytest.mark.parametrize(("index", "size", "proof"), vectors.INCLUSION_PROOFS)
    def test_inclusion_proofs_are_the_published_ones_and_verify(self, index, size, proof):
        built = merkle.inclusion_proof(index, size, self.tree.reader(size))
        assert built == hx(proof)
        root = bytes.fromhex(vectors.ROOT_HASHES[size])
        assert merkle.verify_inclusion(index, size, self.tree.levels[0][index], built, root)

    @pytest.mark.parametrize(("first", "second", "proof"), vectors.CONSISTENCY_PROOFS)
    def test_consistency_proofs_are_the_published_ones_and_verify(self, first, second, proof):
        built = merkle.consistency_proof(first, second, self.tree.reader(second))
        assert built == hx(proof)
        roots = [bytes.fromhex(vectors.ROOT_HASHES[s]) for s in (first, second)]
        assert merkle.verify_consistency(first, second, roots[0], roots[1], built)


#: Published probes whose expectation this module deliberately does not share.
STRICTER_THAN_PUBLISHED = {
    # Equal sizes, empty proof, equal "roots" of 15 bytes ("don't care 2"): Go only compares
    # the two roots; here a root that is not a 32-byte SHA-256 hash never verifies.
    "testdata/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json": False,
}


class TestPublishedProbes:
    """testdata/inclusion and testdata/consistency: every verification case, good and bad."""

    @pytest.mark.parametrize(
        ("path", "probe", "valid"), vectors.INCLUSION_PROBES, ids=lambda v: str(v)[-60:]
    )
    def test_inclusion_probe_has_the_published_outcome(self, path, probe, valid):
        got = merkle.verify_inclusion(
            probe["leafIdx"],
            probe["treeSize"],
            b64(probe["leafHash"]),
            [b64(p) for p in probe["proof"]],
            b64(probe["root"]),
        )
        assert got is STRICTER_THAN_PUBLISHED.get(path, valid)

    @pytest.mark.parametrize(
        ("path", "probe", "valid"), vectors.CONSISTENCY_PROBES, ids=lambda v: str(v)[-60:]
    )
    def test_consistency_probe_has_the_published_outcome(self, path, probe, valid):
        got = merkle.verify_consistency(
            probe["size1"],
            probe["size2"],
            b64(probe["root1"]),
            b64(probe["root2"]),
            [b64(p) for p in probe["proof"]],
        )
        assert got is STRICTER_THAN_PUBLISHED.get(path, valid)

    def test_the_probe_sets_are_complete(self):
        assert len(vectors.INCLUSION_PROBES) == 98
        assert len(vectors.CONSISTENCY_PROBES) == 98
        assert sum(valid for _, _, valid in vectors.INCLUSION_PROBES) == 6
        assert set(STRICTER_THAN_PUBLISHED) <= {p for p, _, _ in vectors.CONSISTENCY_PROBES}


def valid_subtree(start: int, end: int) -> bool:
    """draft-ietf-plants-merkle-tree-certs: start is 0, empty, or aligned to bit_ceil(len)."""
    if start == 0 or start == end:
        return True
    return start % (1 << (end - start - 1).bit_length()) == 0


class TestSubtreeVectors:
    """testonly/vectors_test.go: rolling digests over every valid subtree of a 130-leaf tree."""

    tree = MemoryTree([merkle.leaf_hash(bytes([i])) for i in range(vectors.SUBTREE_VECTOR_MAX)])

    @staticmethod
    def shifted(node: merkle.NodeReader, start: int) -> merkle.NodeReader:
        """The subtree starting at ``start`` seen as a tree of its own (start is aligned)."""
        return lambda level, index: node(level, index + (start >> level))

    def test_every_valid_subtree_hash_matches_the_published_digest(self):
        rolling = hashlib.sha256()
        for end in range(vectors.SUBTREE_VECTOR_MAX + 1):
            for start in range(end + 1):
                if valid_subtree(start, end):
                    digest = merkle.subtree_hash(start, end, self.tree.reader())
                    rolling.update(f"[{start}, {end}) {digest.hex()}\n".encode())
        assert rolling.hexdigest() == vectors.SUBTREE_HASH_DIGEST

    def test_every_inclusion_proof_in_every_valid_subtree_matches_the_published_digest(self):
        rolling = hashlib.sha256()
        for end in range(vectors.SUBTREE_VECTOR_MAX + 1):
            for start in range(end + 1):
                if not valid_subtree(start, end):
                    continue
                node = self.shifted(self.tree.reader(), start)
                for index in range(start, end):
                    proof = merkle.inclusion_proof(index - start, end - start, node)
                    line = f"{index} [{start}, {end})" + "".join(f" {h.hex()}" for h in proof)
                    rolling.update(f"{line}\n".encode())
        assert rolling.hexdigest() == vectors.SUBTREE_INCLUSION_PROOF_DIGEST

    def test_invalid_subtrees_are_refused(self):
        node = self.tree.reader()
        for start, end in [(3, 5), (1, 3), (2, 5), (4, 9), (5, 4), (-1, 2)]:
            with pytest.raises(ValueError):
                merkle.subtree_hash(start, end, node)


def inclusion_corruptions(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    yield "index + 1", (index + 1, size, leaf, proof, root)
    yield "index - 1", (index - 1, size, leaf, proof, root)
    yield "size * 2", (index, size * 2, leaf, proof, root)
    yield "size // 2", (index, size // 2, leaf, proof, root)
    for position in range(len(proof)):
        for bit in (0, 7 * position + 3, 255):
            changed = list(proof)
            changed[position] = flip(changed[position], bit)
            yield f"bit {bit} of proof[{position}]", (index, size, leaf, changed, root)
    for bit in (0, 100, 255):
        yield f"bit {bit} of the leaf hash", (index, size, flip(leaf, bit), proof, root)
        yield f"bit {bit} of the root", (index, size, leaf, proof, flip(root, bit))
    if proof:
        yield "truncated", (index, size, leaf, proof[:-1], root)
        yield "first hash removed", (index, size, leaf, proof[1:], root)
        yield "empty", (index, size, leaf, [], root)
    yield "extra hash at the end", (index, size, leaf, [*proof, EXTRA], root)
    yield "extra hash in front", (index, size, leaf, [EXTRA, *proof], root)
    yield "root appended", (index, size, leaf, [*proof, root], root)
    if size > 1:
        yield "leaf as root", (index, size, leaf, proof, leaf)


def consistency_corruptions(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    yield "first + 1", (first + 1, second, first_root, second_root, proof)
    yield "first - 1", (first - 1, second, first_root, second_root, proof)
    yield "first * 2", (first * 2, second, first_root, second_root, proof)
    yield "first // 2", (first // 2, second, first_root, second_root, proof)
    yield "second * 2", (first, second * 2, first_root, second_root, proof)
    yield "second // 2", (first, second // 2, first_root, second_root, proof)
    for position in range(len(proof)):
        for bit in (0, 7 * position + 3, 255):
            changed = list(proof)
            changed[position] = flip(changed[position], bit)
            yield (
                f"bit {bit} of proof[{position}]",
                (first, second, first_root, second_root, changed),
            )
    for bit in (0, 100, 255):
        yield f"bit {bit} of root 1", (first, second, flip(first_root, bit), second_root, proof)
        yield f"bit {bit} of root 2", (first, second, first_root, flip(second_root, bit), proof)
    yield "truncated", (first, second, first_root, second_root, proof[:-1])
    yield "first hash removed", (first, second, first_root, second_root, proof[1:])
    yield "empty", (first, second, first_root, second_root, [])
    yield "extra hash at the end", (first, second, first_root, second_root, [*proof, EXTRA])
    yield "extra hash in front", (first, second, first_root, second_root, [EXTRA, *proof])
    yield "root 1 in front", (first, second, first_root, second_root, [first_root, *proof])
    yield "root 2 appended", (first, second, first_root, second_root, [*proof, second_root])
    yield "swapped roots", (first, second, second_root, first_root, proof)
    yield "swapped sizes", (second, first, first_root, second_root, proof)
    yield "root 2 twice", (first, second, second_root, second_root, proof)


def rejected_all(
    verify: Callable[..., bool], cases: Iterator[tuple[str, tuple[Any, ...]]]
) -> list[str]:
    return [name for name, args in cases if verify(*args) is not False]


class TestInclusionProofs:
    tree = MemoryTree.of(70)
    sizes = [*range(1, 34), 64, 65, 70]

    def test_every_proof_of_every_leaf_verifies(self):
        for size in self.sizes:
            root = merkle.root(size, self.tree.reader(size))
            for index in range(size):
                proof = merkle.inclusion_proof(index, size, self.tree.reader(size))
                leaf = self.tree.levels[0][index]
                assert merkle.verify_inclusion(index, size, leaf, proof, root), (index, size)
                assert merkle.verify_inclusion(index, size, leaf, tuple(proof), root)

    def test_every_corruption_is_rejected(self):
        accepted = []
        for size in self.sizes:
            root = merkle.root(size, self.tree.reader(size))
            for index in range(size):
                proof = merkle.inclusion_proof(index, size, self.tree.reader(size))
                leaf = self.tree.levels[0][index]
                cases = inclusion_corruptions(index, size, leaf, proof, root)
                accepted += [
                    f"({index}, {size}) {name}"
                    for name in rejected_all(merkle.verify_inclusion, cases)
                ]
        assert accepted == []

    def test_another_leafs_hash_is_rejected(self):
        size = 13
        root = merkle.root(size, self.tree.reader(size))
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, self.tree.reader(size))
            for other in range(size):
                leaf = self.tree.levels[0][other]
                assert merkle.verify_inclusion(index, size, leaf, proof, root) is (other == index)

    def test_a_leaf_outside_the_tree_has_no_proof(self):
        for index, size in [(0, 0), (5, 5), (6, 5), (-1, 5), (0, -1)]:
            with pytest.raises(ValueError):
                merkle.inclusion_proof(index, size, self.tree.reader())


class TestConsistencyProofs:
    tree = MemoryTree.of(70)
    pairs = [(f, s) for s in [*range(1, 34), 64, 65, 70] for f in range(1, s + 1)]

    def test_every_proof_between_every_pair_of_sizes_verifies(self):
        for first, second in self.pairs:
            proof = merkle.consistency_proof(first, second, self.tree.reader(second))
            roots = (
                merkle.root(first, self.tree.reader()),
                merkle.root(second, self.tree.reader()),
            )
            assert merkle.verify_consistency(first, second, *roots, proof), (first, second)
            assert merkle.verify_consistency(first, second, *roots, tuple(proof))

    def test_every_corruption_is_rejected(self):
        accepted = []
        for first, second in self.pairs:
            if first == second:
                continue
            proof = merkle.consistency_proof(first, second, self.tree.reader(second))
            first_root = merkle.root(first, self.tree.reader())
            second_root = merkle.root(second, self.tree.reader())
            cases = consistency_corruptions(first, second, first_root, second_root, proof)
            accepted += [
                f"({first}, {second}) {name}"
                for name in rejected_all(merkle.verify_consistency, cases)
            ]
        assert accepted == []

    def test_equal_sizes_need_an_empty_proof_and_equal_roots(self):
        root = merkle.root(9, self.tree.reader())
        assert merkle.consistency_proof(9, 9, self.tree.reader()) == []
        assert merkle.verify_consistency(9, 9, root, root, [])
        assert not merkle.verify_consistency(9, 9, root, flip(root), [])
        assert not merkle.verify_consistency(9, 9, root, root, [root])

    def test_the_empty_tree_needs_no_proof_and_proves_nothing(self):
        root = merkle.root(9, self.tree.reader())
        assert merkle.consistency_proof(0, 9, self.tree.reader()) == []
        assert merkle.consistency_proof(0, 0, self.tree.reader()) == []
        assert not merkle.verify_consistency(0, 9, merkle.EMPTY_ROOT, root, [])
        assert not merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])

    def test_a_shrinking_tree_has_no_proof(self):
        for first, second in [(5, 4), (-1, 3), (2, -1)]:
            with pytest.raises(ValueError):
                merkle.consistency_proof(first, second, self.tree.reader())

    def test_a_rewritten_tree_is_not_consistent(self):
        other = MemoryTree.of(40, tag="rewritten")
        for first, second in [(1, 2), (3, 7), (8, 16), (20, 40)]:
            proof = merkle.consistency_proof(first, second, other.reader(second))
            first_root = merkle.root(first, self.tree.reader())
            second_root = merkle.root(second, other.reader())
            assert not merkle.verify_consistency(first, second, first_root, second_root, proof)


GOOD_HASH = hashlib.sha256(b"x").digest()
WEIRD: list[Any] = [None, -1, 1.0, True, "1", b"", b"x" * 31, b"x" * 33, "x" * 32, [GOOD_HASH]]


class TestMalformedInputIsRejectedWithoutRaising:
    tree = MemoryTree.of(8)

    def good_inclusion(self) -> list[Any]:
        proof = merkle.inclusion_proof(3, 8, self.tree.reader())
        return [3, 8, self.tree.levels[0][3], proof, merkle.root(8, self.tree.reader())]

    def good_consistency(self) -> list[Any]:
        proof = merkle.consistency_proof(3, 8, self.tree.reader())
        node = self.tree.reader()
        return [3, 8, merkle.root(3, node), merkle.root(8, node), proof]

    def test_each_inclusion_argument_of_the_wrong_kind(self):
        good = self.good_inclusion()
        assert merkle.verify_inclusion(*good)
        for position in range(5):
            for weird in WEIRD:
                args = list(good)
                args[position] = weird
                assert merkle.verify_inclusion(*args) is False, (position, weird)

    def test_each_consistency_argument_of_the_wrong_kind(self):
        good = self.good_consistency()
        assert merkle.verify_consistency(*good)
        for position in range(5):
            for weird in WEIRD:
                args = list(good)
                args[position] = weird
                assert merkle.verify_consistency(*args) is False, (position, weird)

    def test_proof_hashes_of_the_wrong_kind(self):
        inclusion, consistency = self.good_inclusion(), self.good_consistency()
        for weird in WEIRD:
            for position in range(3):
                args = list(inclusion)
                args[3] = list(args[3])
                args[3][position] = weird
                assert not merkle.verify_inclusion(*args), (position, weird)
                args = list(consistency)
                args[4] = list(args[4])
                args[4][position] = weird
                assert not merkle.verify_consistency(*args), (position, weird)

    def test_huge_sizes_and_proofs(self):
        root = merkle.root(8, self.tree.reader())
        assert not merkle.verify_inclusion(3, 2**200, GOOD_HASH, [GOOD_HASH] * 3, root)
        assert not merkle.verify_inclusion(3, 8, GOOD_HASH, [GOOD_HASH] * 100_000, root)
        assert not merkle.verify_consistency(3, 2**200, root, root, [GOOD_HASH] * 3)
        assert not merkle.verify_consistency(3, 8, root, root, [GOOD_HASH] * 100_000)


class TestBuilderDomain:
    def test_appending_checks_its_arguments(self):
        reader = MemoryTree([]).reader()
        with pytest.raises(ValueError):
            merkle.appended_nodes(-1, [GOOD_HASH], reader)
        with pytest.raises(ValueError):
            merkle.appended_nodes(0, [b"short"], reader)

    def test_a_missing_node_is_the_readers_error(self):
        with pytest.raises(LookupError):
            merkle.root(9, MemoryTree.of(8).reader())
        with pytest.raises(LookupError):
            merkle.appended_nodes(3, [GOOD_HASH], MemoryTree.of(2).reader())

    def test_appending_nothing_creates_nothing(self):
        assert merkle.appended_nodes(5, [], MemoryTree.of(5).reader()) == []


class TestNodeReads:
    """Proofs and roots cost O(log n) reads, of nodes complete at the size asked about."""

    class Counter:
        def __init__(self) -> None:
            self.reads: list[tuple[int, int]] = []

        def __call__(self, level: int, index: int) -> bytes:
            self.reads.append((level, index))
            return hashlib.sha256(f"{level}/{index}".encode()).digest()

    sizes = [1, 2, 3, 1000, 2**20, 2**20 + 1, 2**40 - 1, 2**40 + 12345, 2**62 + 2**61 + 7]

    def check(self, reads: list[tuple[int, int]], size: int, bound: int) -> None:
        assert len(reads) <= bound
        assert len(set(reads)) == len(reads)
        assert all((index + 1) << level <= size for level, index in reads)

    def test_a_root_reads_one_node_per_bit_of_the_size(self):
        for size in self.sizes:
            counter = self.Counter()
            merkle.root(size, counter)
            assert len(counter.reads) == size.bit_count()
            self.check(counter.reads, size, size.bit_count())

    def test_an_inclusion_proof_reads_at_most_two_nodes_per_level(self):
        for size in self.sizes:
            for index in {0, 1, size // 3, size // 2, size - 2, size - 1}:
                if not 0 <= index < size:
                    continue
                counter = self.Counter()
                merkle.inclusion_proof(index, size, counter)
                self.check(counter.reads, size, 2 * size.bit_length())
                assert sorted(counter.reads) == sorted(merkle.inclusion_nodes(index, size))

    def test_a_consistency_proof_reads_at_most_two_nodes_per_level(self):
        for second in self.sizes:
            for first in {1, 2, 3, second // 3, second // 2, second - 1, second} - {0}:
                if first > second:
                    continue
                counter = self.Counter()
                merkle.consistency_proof(first, second, counter)
                self.check(counter.reads, second, 2 * second.bit_length())
                assert sorted(counter.reads) == sorted(merkle.consistency_nodes(first, second))

    def test_appending_reads_only_the_old_right_edge_once(self):
        for old_size in [0, 1, 5, 1000, 2**20 - 1, 2**40 + 12345]:
            counter = self.Counter()
            created = merkle.appended_nodes(old_size, [GOOD_HASH] * 37, counter)
            assert len(counter.reads) <= old_size.bit_count()
            self.check(counter.reads, old_size, old_size.bit_count())
            assert not {(lv, ix) for lv, ix, _ in created} & set(counter.reads)

    def test_the_old_roots_nodes_cover_what_appending_and_the_new_root_read(self):
        for old_size in [0, 1, 2, 5, 6, 8, 1000, 2**20 - 1, 2**20, 2**40 + 12345]:
            for added in (1, 2, 3, 37):
                counter = self.Counter()
                created = merkle.appended_nodes(old_size, [GOOD_HASH] * added, counter)
                made = {(lv, ix) for lv, ix, _ in created}
                merkle.root(
                    old_size + added,
                    lambda lv, ix, made=made, old=counter: (
                        GOOD_HASH if (lv, ix) in made else old(lv, ix)
                    ),
                )
                assert set(counter.reads) <= set(merkle.root_nodes(old_size))
            counter = self.Counter()
            merkle.root(old_size, counter)
            assert sorted(counter.reads) == sorted(merkle.root_nodes(old_size))


class TestAgainstTheRfcDefinitions:
    def test_every_consistency_proof_up_to_64_leaves_is_rfc_subproof(self):
        tree = MemoryTree.of(64)
        rfc = Rfc(tree.levels[0])
        for second in range(1, 65):
            for first in range(1, second + 1):
                built = merkle.consistency_proof(first, second, tree.reader(second))
                assert built == rfc.subproof(first, 0, second, True), (first, second)

    @settings(max_examples=200, deadline=None)
    @given(
        size=st.integers(min_value=0, max_value=300),
        picks=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=12),
        chunks=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30),
        tag=st.binary(max_size=4),
    )
    def test_nodes_roots_and_proofs_agree_with_a_naive_rfc_tree(self, size, picks, chunks, tag):
        leaves = [merkle.leaf_hash(tag + i.to_bytes(2, "big")) for i in range(size)]
        tree = MemoryTree(leaves)
        rfc = Rfc(leaves)

        for smaller in {size, *(p % (size + 1) for p in picks)}:
            assert merkle.root(smaller, tree.reader(smaller)) == rfc.mth(0, smaller)
        if size:
            root = rfc.mth(0, size)
            for index in {p % size for p in picks}:
                proof = merkle.inclusion_proof(index, size, tree.reader(size))
                assert proof == rfc.path(index, 0, size)
                assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
            for first in {p % size + 1 for p in picks}:
                proof = merkle.consistency_proof(first, size, tree.reader(size))
                assert proof == rfc.subproof(first, 0, size, True)
                assert merkle.verify_consistency(first, size, rfc.mth(0, first), root, proof)

        one_by_one: list[tuple[int, int, bytes]] = []
        stored: dict[tuple[int, int], bytes] = {}
        for offset, digest in enumerate(leaves):
            created = merkle.appended_nodes(offset, [digest], lambda lv, ix: stored[(lv, ix)])
            stored.update(((lv, ix), h) for lv, ix, h in created)
            one_by_one += created

        chunked: list[tuple[int, int, bytes]] = []
        stored = {}
        done, sizes = 0, iter(chunks * (size // max(sum(chunks), 1) + 1))
        while done < size:
            batch = leaves[done : done + next(sizes)]
            created = merkle.appended_nodes(done, batch, lambda lv, ix: stored[(lv, ix)])
            stored.update(((lv, ix), h) for lv, ix, h in created)
            chunked += created
            done += len(batch)

        assert chunked == one_by_one
        assert {(lv, ix): h for lv, ix, h in chunked} == tree.nodes()
        assert len(chunked) == len(tree.nodes())
