"""A C2SP tlog-witness client (https://c2sp.org/tlog-witness): submit a signed tree head, get cosignatures.

    POST <submission prefix>/add-checkpoint
    body: "old <size>\\n" || one base64 consistency-proof hash per line || "\\n" || the signed tree head note

The witness answers 200 with cosignature lines, or refuses: 409 (text/x.tlog.size: the size it last
cosigned, so the client retries from there), 422 (the consistency proof does not verify: the head does
not extend what the witness saw, i.e. a rewritten or forked history), 403 (no valid log signature),
404 (unknown origin), 400 (malformed request); 429 (omniwitness limits how often a log may submit) and
5xx mean later, like no answer at all. Each outcome is its own exception so a caller can act:
retry later (unavailable), retry from another size (conflict), or raise the alarm (refused).
"""

from __future__ import annotations

import base64
import http.client
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.errors import AuditSealError
from pipeline.integrity.cosignature import add_signatures
from pipeline.integrity.errors import MalformedNoteError, NoteVerificationError
from pipeline.integrity.note import Note, NoteSignature, NoteVerifier, parse_note, verified_signatures
from pipeline.integrity.tree_head import TreeHead, parse_tree_head

MAX_PROOF_LINES = 63
MAX_RESPONSE_BYTES = 64 * 1024


class WitnessError(AuditSealError):
    """Base of the failures of one witness submission."""

    def __init__(self, witness: str, message: str) -> None:
        self.witness = witness
        super().__init__(f"witness {witness}: {message}")


class WitnessUnavailableError(WitnessError):
    """The witness could not be reached, timed out, failed (5xx) or asks to slow down (429): try again later,
    nothing is wrong yet.

    `status` is the HTTP status of a 429 or 5xx answer, None when there was no answer at all.
    """

    def __init__(self, witness: str, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(witness, message)


class WitnessConflictError(WitnessError):
    """409: the witness last cosigned another size than the client's old size; `known_size` says which."""

    def __init__(self, witness: str, known_size: int) -> None:
        self.known_size = known_size
        super().__init__(witness, f"409 Conflict: it last cosigned size {known_size}")


class WitnessRefusedError(WitnessError):
    """The witness refused the head (400, 403, 404, 422): the head is wrong for it, retrying will not help.

    422 is the one that matters most: the head does not extend the history the witness cosigned.
    """

    def __init__(self, witness: str, status: int, reason: str, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(witness, f"{status} {reason}: {body.strip()[:200] or 'no detail'}")


class WitnessResponseError(WitnessError):
    """The witness answered something that is not a valid cosignature of the head it was given."""


@dataclass(frozen=True)
class Witness:
    """One witness: its policy name, cosignature key (type 0x04) and submission prefix URL."""

    name: str
    verifier: NoteVerifier
    url: str
    timeout_s: float = 5.0

    def add_checkpoint(self, signed_head: bytes, old_size: int, proof: Sequence[bytes]) -> list[NoteSignature]:
        """Submit one head with a consistency proof from `old_size`; return the verified cosignatures.

        Raises WitnessConflictError (409), WitnessRefusedError (400/403/404/422 and other 4xx but 429),
        WitnessUnavailableError (connection failure, timeout, 429, 5xx) or WitnessResponseError.
        """
        note = parse_note(signed_head)
        head = parse_tree_head(note.text)
        if len(proof) > MAX_PROOF_LINES:
            raise WitnessResponseError(self.name, f"a consistency proof has at most {MAX_PROOF_LINES} hashes, found {len(proof)}")
        lines = [f"old {old_size}\n"] + [base64.b64encode(value).decode("ascii") + "\n" for value in proof]
        body = "".join(lines).encode("ascii") + b"\n" + signed_head
        status, reason, content_type, payload = self._post("add-checkpoint", body)
        text = payload.decode("utf-8", errors="replace")
        if status == 409:
            first = text.split("\n", 1)[0].strip()
            if not first.isdigit():
                raise WitnessResponseError(self.name, f"409 Conflict without a tree size (body {text[:80]!r})")
            raise WitnessConflictError(self.name, int(first))
        if 500 <= status or status == 429:  # 429: the witness rate-limits submissions; it refuses nothing
            raise WitnessUnavailableError(self.name, f"{status} {reason}: {text.strip()[:200] or 'no detail'}", status)
        if status != 200:
            raise WitnessRefusedError(self.name, status, reason, text)
        return self._cosignatures(note, head, payload)

    def _cosignatures(self, note: Note, head: TreeHead, payload: bytes) -> list[NoteSignature]:
        if not payload.endswith(b"\n"):
            raise WitnessResponseError(self.name, f"200 with a body that is not signature lines: {payload[:80]!r}")
        try:
            # The response is note signature lines: append them to the head and parse it as one note.
            answered = parse_note(note.text.encode("utf-8") + b"\n" + payload)
            mine = verified_signatures(answered, [self.verifier])
        except (MalformedNoteError, NoteVerificationError) as error:
            raise WitnessResponseError(self.name, f"200 with invalid cosignatures: {error}") from None
        if not mine:
            raise WitnessResponseError(
                self.name, f"200 without a cosignature of its key {self.verifier.vkey} on {head.describe()}"
            )
        return [signature for _, signature in mine]

    def _post(self, path: str, body: bytes) -> tuple[int, str, str, bytes]:
        url = urllib.parse.urlsplit(self.url.rstrip("/") + "/" + path)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise WitnessUnavailableError(self.name, f"not an http(s) URL: {self.url!r}")
        connection_type = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = connection_type(url.hostname, url.port, timeout=self.timeout_s)
        try:
            connection.request("POST", url.path, body=body, headers={"Content-Type": "text/plain"})
            response = connection.getresponse()
            payload = response.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as error:
            raise WitnessUnavailableError(self.name, f"{self.url}: {type(error).__name__}: {error}") from None
        finally:
            connection.close()
        if len(payload) > MAX_RESPONSE_BYTES:
            raise WitnessResponseError(self.name, f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        return response.status, response.reason, response.getheader("Content-Type", ""), payload


def cosign_head(
    witness: Witness, signed_head: bytes, old_size: int, proof_from: Callable[[int], Sequence[bytes]]
) -> tuple[Note, int]:
    """Get `witness`'s cosignature on a head, following one 409 to the size the witness holds.

    `old_size` is the size we believe the witness last cosigned and `proof_from(size)` returns the
    consistency proof from that size to the head. Returns the head note with the cosignatures
    added and the head's size, which the witness now holds. A witness that holds a larger size than
    the head has seen more history than this log now shows: that is a WitnessRefusedError (the
    log was truncated or forked), never a retry.
    """
    note = parse_note(signed_head)
    head = parse_tree_head(note.text)
    try:
        lines = witness.add_checkpoint(signed_head, old_size, proof_from(old_size))
    except WitnessConflictError as conflict:
        if conflict.known_size > head.size:
            raise WitnessRefusedError(
                witness.name, 409, "Conflict",
                f"it cosigned size {conflict.known_size}, larger than {head.describe()}: the log lost history",
            ) from None
        lines = witness.add_checkpoint(signed_head, conflict.known_size, proof_from(conflict.known_size))
    return add_signatures(note, lines), head.size
