"""C2SP signed notes and checkpoints (storage.notes) against published keys and signatures.

Known answers, copied as data:

- golang.org/x/mod, sumdb/note/note_test.go and example_test.go at commit
  fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db (https://github.com/golang/mod): the
  "PeterNeumann" private and verifier keys, the text they sign and the signed note, and the
  "EnochRoot" verifier key and signature line. example_test.go makes the EnochRoot key with
  ``GenerateKey`` reading from a reader of zero bytes, so its Ed25519 seed is 32 zero bytes.
- C2SP, signed-note.md and tlog-checkpoint.md at commit
  5ba5ee830903e91240fc6f9f3a7a9293d49e69c9 (https://github.com/C2SP/C2SP): the
  example.com/foo verifier key and the note it verifies, and the example checkpoint text.
"""

from __future__ import annotations

import base64
import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import notes
from storage.notes import NoteRejected, NoteSigner, NoteVerifier

# golang/mod sumdb/note/note_test.go (TestNewSigner, TestNewVerifier, TestSign, TestOpen).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLo"
    "x33WWd1RvMc+QQ=\n"
)
PETER_NOTE = TEXT + "\n" + PETER_SIG
# golang/mod sumdb/note/example_test.go: GenerateKey(zeroReader{}, "EnochRoot").
ENOCH_SKEY = "PRIVATE+KEY+EnochRoot+af0cfe78+" + base64.b64encode(b"\x01" + bytes(32)).decode()

# C2SP signed-note.md, "Verifier keys" / "Example".
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n"
    "\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKu"
    "wHjG1Yu72IneyaQM=\n"
)
# C2SP tlog-checkpoint.md, the example checkpoint's note text.
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

ROOT = bytes(range(32))


class TestPublishedKeys:
    def test_the_private_key_gives_the_published_verifier_key(self):
        signer = NoteSigner(PETER_SKEY)
        assert signer.name == "PeterNeumann"
        assert signer.key_id == bytes.fromhex("c74f20a3")
        assert signer.vkey == PETER_VKEY
        assert signer.public_key == base64.b64decode(PETER_VKEY.split("+")[2])[1:]

    def test_the_key_id_is_the_truncated_hash_of_name_type_and_key(self):
        verifier = NoteVerifier(PETER_VKEY)
        assert notes.key_id("PeterNeumann", verifier.public_key) == bytes.fromhex("c74f20a3")
        assert notes.key_id("PeterNeuman", verifier.public_key) != bytes.fromhex("c74f20a3")
        c2sp = NoteVerifier(C2SP_VKEY)
        assert notes.key_id("example.com/foo", c2sp.public_key) == bytes.fromhex("530d903a")

    def test_signing_the_published_text_gives_the_published_note(self):
        assert notes.sign_note(TEXT, [NoteSigner(PETER_SKEY)]) == PETER_NOTE

    def test_the_published_note_opens_with_the_published_verifier_key(self):
        assert notes.open_note(PETER_NOTE, [NoteVerifier(PETER_VKEY)]) == TEXT

    def test_the_zero_seed_key_gives_the_published_enoch_root_key_and_signature(self):
        signer = NoteSigner(ENOCH_SKEY)
        assert signer.vkey == ENOCH_VKEY
        assert notes.sign_note(TEXT, [signer]) == TEXT + "\n" + ENOCH_SIG

    def test_two_signers_sign_in_order_and_either_key_opens_the_note(self):
        signed = notes.sign_note(TEXT, [NoteSigner(PETER_SKEY), NoteSigner(ENOCH_SKEY)])
        assert signed == TEXT + "\n" + PETER_SIG + ENOCH_SIG
        for known in ([PETER_VKEY], [ENOCH_VKEY], [PETER_VKEY, ENOCH_VKEY]):
            assert notes.open_note(signed, [NoteVerifier(v) for v in known]) == TEXT

    def test_the_c2sp_example_note_opens_with_its_verifier_key(self):
        assert notes.open_note(C2SP_NOTE, [NoteVerifier(C2SP_VKEY)]) == (
            "This is an example message.\n"
        )


def mangled(key: str) -> set[str]:
    """Every proper substring of ``key`` and every one-character increment of it."""
    variants = {key[i:j] for i in range(len(key) + 1) for j in range(i, len(key) + 1)}
    variants |= {key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))}
    variants.discard(key)
    return variants


class TestMangledKeysAreRefused:
    def test_every_substring_and_changed_character_of_the_verifier_key(self):
        accepted = []
        for variant in mangled(PETER_VKEY):
            try:
                NoteVerifier(variant)
            except ValueError:
                continue
            accepted.append(variant)
        assert accepted == []

    def test_every_substring_and_changed_character_of_the_private_key(self):
        accepted = []
        for variant in mangled(PETER_SKEY):
            try:
                NoteSigner(variant)
            except ValueError:
                continue
            accepted.append(variant)
        assert accepted == []

    def test_the_published_bad_keys(self):
        # note_test.go TestNewVerifier: wrong key length and unknown algorithm, each with
        # a key ID recomputed to match.
        for bad in (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ):
            with pytest.raises(ValueError):
                NoteVerifier(bad)

    def test_stricter_than_go_uppercase_hex_and_non_canonical_base64(self):
        with pytest.raises(ValueError):
            NoteVerifier(PETER_VKEY.replace("c74f20a3", "C74F20A3"))
        with pytest.raises(ValueError):
            NoteVerifier(PETER_VKEY + "\n")

    def test_errors_and_repr_never_show_the_private_key(self):
        seed = PETER_SKEY.rsplit("+", 1)[1]
        assert seed not in repr(NoteSigner(PETER_SKEY))
        for variant in (PETER_SKEY.replace("c74f20a3", "c74f20a4"), PETER_SKEY[:-1]):
            with pytest.raises(ValueError) as raised:
                NoteSigner(variant)
            assert seed[:20] not in str(raised.value)


class TestOpeningNotes:
    peter = NoteVerifier(PETER_VKEY)
    enoch = NoteVerifier(ENOCH_VKEY)

    def rejected(self, note: str, verifiers: list[NoteVerifier] | None = None) -> str:
        with pytest.raises(NoteRejected) as raised:
            notes.open_note(note, [self.peter] if verifiers is None else verifiers)
        return str(raised.value)

    def test_the_published_malformed_notes(self):
        # note_test.go TestOpen's badMsgs; Go's invalid UTF-8 byte "\xff" is, in a Python
        # str, a lone surrogate (what bytes.decode(errors="surrogateescape") would give).
        for bad in (
            TEXT,
            TEXT + "\n",
            TEXT + "\n" + PETER_SIG[:-1],
            "\x01" + TEXT + "\n" + PETER_SIG,
            "\udcff" + TEXT + "\n" + PETER_SIG,
            TEXT + "\n" + "— Bad Name " + PETER_SIG.split(" ")[2],
            TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        ):
            assert self.rejected(bad).startswith("malformed note"), bad

    def test_a_known_keys_bad_signature_rejects_the_note(self):
        corrupt = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
        message = self.rejected(TEXT + "\n" + corrupt)
        assert message == "invalid signature for key PeterNeumann+c74f20a3"
        assert self.rejected(TEXT + "\n" + ENOCH_SIG + corrupt).startswith("invalid signature")

    def test_altered_text_is_rejected(self):
        for text in (TEXT.replace("answer", "Answer"), TEXT + "more\n", TEXT[:-1] + " \n"):
            assert self.rejected(text + "\n" + PETER_SIG).startswith("invalid signature")

    def test_a_changed_signature_is_rejected(self):
        payload = bytearray(base64.b64decode(PETER_SIG.split(" ")[2]))
        for position in (4, 20, 67):
            changed = bytearray(payload)
            changed[position] ^= 0x01
            line = "— PeterNeumann " + base64.b64encode(changed).decode() + "\n"
            assert self.rejected(TEXT + "\n" + line).startswith("invalid signature")

    def test_only_unknown_keys_is_rejected(self):
        message = self.rejected(TEXT + "\n" + ENOCH_SIG)
        assert "no verifiable signatures" in message and "EnochRoot+af0cfe78" in message
        self.rejected(PETER_NOTE, [])

    def test_a_key_with_the_same_name_or_the_same_id_but_not_both_is_unknown(self):
        payload = base64.b64decode(PETER_SIG.split(" ")[2])
        other_id = b"\x00\x00\x00\x00" + payload[4:]
        same_name = "— PeterNeumann " + base64.b64encode(other_id).decode() + "\n"
        same_id = PETER_SIG.replace("PeterNeumann", "PeterNeumann2")
        for line in (same_name, same_id):
            assert "no verifiable signatures" in self.rejected(TEXT + "\n" + line)
            assert notes.open_note(TEXT + "\n" + line + PETER_SIG, [self.peter]) == TEXT

    def test_unknown_signatures_beside_a_good_one_are_ignored(self):
        assert notes.open_note(TEXT + "\n" + ENOCH_SIG + PETER_SIG, [self.peter]) == TEXT
        assert notes.open_note(TEXT + "\n" + PETER_SIG * 2, [self.peter]) == TEXT

    def test_a_verifier_listed_twice_is_fine_but_two_keys_of_one_name_and_id_are_not(self):
        assert notes.open_note(PETER_NOTE, [self.peter, NoteVerifier(PETER_VKEY)]) == TEXT
        impostor = copy.copy(self.peter)
        impostor.public_key = self.enoch.public_key
        assert "ambiguous key" in self.rejected(PETER_NOTE, [self.peter, impostor])

    def test_at_most_a_hundred_signatures_and_at_least_sixteen(self):
        assert "more than 100" in self.rejected(TEXT + "\n" + PETER_SIG * 101)
        assert notes.open_note(TEXT + "\n" + PETER_SIG * 100, [self.peter]) == TEXT
        signers = [NoteSigner(notes.generate_key(f"example.com/w{i}")) for i in range(16)]
        signed = notes.sign_note(TEXT, signers)
        assert notes.open_note(signed, [NoteVerifier(s.vkey) for s in signers]) == TEXT

    def test_the_text_ends_at_the_last_blank_line(self):
        text = "first\n\n— not a signature\n\nlast\n"
        signer = NoteSigner(PETER_SKEY)
        assert notes.open_note(notes.sign_note(text, [signer]), [self.peter]) == text
        assert notes.open_note(notes.sign_note("\n", [signer]), [self.peter]) == "\n"

    def test_short_or_odd_signature_lines_are_malformed(self):
        for line in (
            "— PeterNeumann AAAA\n",  # three bytes: no room for a key ID and a signature
            "— PeterNeumann\n",
            "— PeterNeumann \n",
            "—PeterNeumann " + PETER_SIG.split(" ")[2],
            "— PeterNeumann  " + PETER_SIG.split(" ")[2],
            "— Peter+Neumann " + PETER_SIG.split(" ")[2],
            "- PeterNeumann " + PETER_SIG.split(" ")[2],
            PETER_SIG.replace("=\n", "\n"),
            PETER_SIG.replace("\n", "\r\n"),
        ):
            assert self.rejected(TEXT + "\n" + line).startswith("malformed note"), line

    def test_a_note_that_is_not_text_is_rejected(self):
        with pytest.raises(NoteRejected):
            notes.open_note(PETER_NOTE.encode(), [self.peter])  # type: ignore[arg-type]


class TestSigning:
    @settings(max_examples=50, deadline=None)
    @given(
        text=st.text(st.characters(blacklist_categories=["Cc", "Cs"]) | st.just("\n"), max_size=200)
    )
    def test_any_text_round_trips_with_a_generated_key(self, text):
        signer = NoteSigner(notes.generate_key("log.example/audit"))
        signed = notes.sign_note(text + "\n", [signer])
        assert notes.open_note(signed, [NoteVerifier(signer.vkey)]) == text + "\n"

    def test_generated_keys_have_the_go_format(self):
        private = notes.generate_key("log.example/audit")
        prefix, key, name, hex_id, material = private.split("+", 4)  # base64 may hold +
        assert (prefix, key, name) == ("PRIVATE", "KEY", "log.example/audit")
        assert len(base64.b64decode(material)) == 33 and material.startswith("A")
        signer = NoteSigner(private)
        assert signer.key_id.hex() == hex_id and len(signer.public_key) == 32
        assert NoteVerifier(signer.vkey).public_key == signer.public_key
        assert notes.generate_key("log.example/audit") != private

    def test_signer_and_verifier_agree_on_the_payload(self):
        signer = NoteSigner(PETER_SKEY)
        payload = signer.sign(TEXT)
        assert len(payload) == 68 and payload[:4] == signer.key_id
        verifier = NoteVerifier(PETER_VKEY)
        assert verifier.verify(TEXT, payload)
        assert not verifier.verify(TEXT + "x", payload)
        assert not verifier.verify(TEXT, payload[:-1])
        assert not verifier.verify(TEXT, b"\x00" * 4 + payload[4:])

    def test_bad_key_names_are_refused(self):
        for name in ("", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b", "a\nb", "a\x7fb"):
            with pytest.raises(ValueError):
                notes.generate_key(name)

    def test_bad_texts_and_no_signers_are_refused(self):
        signer = NoteSigner(PETER_SKEY)
        for text in ("abc", "", "a\r\n", "a\x00\n", "a\udc80\n"):
            with pytest.raises(ValueError):
                notes.sign_note(text, [signer])
        with pytest.raises(ValueError):
            notes.sign_note(TEXT, [])


class TestCheckpoints:
    signer = NoteSigner(PETER_SKEY)
    verifier = NoteVerifier(PETER_VKEY)

    def test_the_published_checkpoint_parses(self):
        origin, size, root = notes.parse_checkpoint(C2SP_CHECKPOINT)
        assert (origin, size) == ("example.com/behind-the-sofa", 20852163)
        assert root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
        assert notes.checkpoint_text(origin, size, root) == C2SP_CHECKPOINT

    def test_a_signed_checkpoint_round_trips(self):
        for size in (0, 1, 20852163, 2**64 - 1):
            text = notes.checkpoint_text("log.example/org_1", size, ROOT)
            opened = notes.open_note(notes.sign_note(text, [self.signer]), [self.verifier])
            assert notes.parse_checkpoint(opened) == ("log.example/org_1", size, ROOT)

    def test_extension_lines_are_allowed(self):
        text = C2SP_CHECKPOINT + "extension one\nextension two\n"
        assert notes.parse_checkpoint(text)[1] == 20852163

    def test_altered_size_root_or_signature_is_rejected(self):
        signed = notes.sign_note(C2SP_CHECKPOINT, [self.signer])
        root_line = C2SP_CHECKPOINT.split("\n")[2]
        other_root = base64.b64encode(bytes(32)).decode()
        signature = signed.rsplit(" ", 1)[1]
        for altered in (
            signed.replace("20852163", "20852164"),
            signed.replace("20852163", "20852162"),
            signed.replace(root_line, other_root),
            signed.replace("behind-the-sofa", "behind-the-sofa2"),
            signed.replace(signature, ("B" if signature[0] != "B" else "C") + signature[1:]),
            signed.replace(C2SP_CHECKPOINT, C2SP_CHECKPOINT + "extension\n"),
        ):
            with pytest.raises(NoteRejected):
                notes.open_note(altered, [self.verifier])

    def test_an_unknown_key_is_rejected(self):
        signed = notes.sign_note(C2SP_CHECKPOINT, [NoteSigner(ENOCH_SKEY)])
        with pytest.raises(NoteRejected, match="no verifiable signatures"):
            notes.open_note(signed, [self.verifier])

    @pytest.mark.parametrize(
        "size",
        [
            "020852163",
            "00",
            "+5",
            "-1",
            " 5",
            "5 ",
            "1e3",
            "0x10",
            "\u0665",
            "1_000",
            "",
            "18446744073709551616",
        ],
    )
    def test_sizes_that_are_not_plain_decimal_are_refused(self, size):
        text = f"example.com/log\n{size}\n{base64.b64encode(ROOT).decode()}\n"
        with pytest.raises(ValueError):
            notes.parse_checkpoint(text)

    def test_roots_that_are_not_32_bytes_of_canonical_base64_are_refused(self):
        good = base64.b64encode(ROOT).decode()
        non_canonical = good[:-2] + chr(ord(good[-2]) + 1) + "="  # unused low bits set
        assert base64.b64decode(non_canonical) == ROOT
        for root in (
            base64.b64encode(ROOT[:31]).decode(),
            base64.b64encode(ROOT + b"\x00").decode(),
            good.rstrip("="),
            non_canonical,
            good.replace("A", "-"),
            base64.urlsafe_b64encode(b"\xff" * 32).decode(),
            good + " ",
        ):
            with pytest.raises(ValueError):
                notes.parse_checkpoint(f"example.com/log\n5\n{root}\n")

    def test_malformed_checkpoint_texts_are_refused(self):
        root = base64.b64encode(ROOT).decode()
        for text in (
            f"example.com/log\n5\n{root}",
            "example.com/log\n5\n",
            f"\n5\n{root}\n",
            f"example.com/log\n5\n{root}\n\n",
            f"example.com/log\n5\n{root}\n\nextension\n",
            f"example.com/log\r\n5\n{root}\n",
            f"example.com/log\n\n5\n{root}\n",
        ):
            with pytest.raises(ValueError):
                notes.parse_checkpoint(text)

    def test_checkpoint_text_refuses_what_would_not_parse(self):
        for origin, size, root in (
            ("", 1, ROOT),
            ("a\nb", 1, ROOT),
            ("a\x00", 1, ROOT),
            ("a", -1, ROOT),
            ("a", 2**64, ROOT),
            ("a", True, ROOT),
            ("a", 1, ROOT[:31]),
        ):
            with pytest.raises(ValueError):
                notes.checkpoint_text(origin, size, root)
