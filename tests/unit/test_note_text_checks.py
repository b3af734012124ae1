"""The note text and key name checks of pipeline.integrity.note (one regular expression each) against their
definitions, character by character, over every Unicode code point."""

from __future__ import annotations

import sys

import pytest

from pipeline.integrity.errors import MalformedNoteError
from pipeline.integrity.note import require_key_name, require_note_text


def allowed_in_text(character: str) -> bool:
    # signed-note: no control character but the newline, and no DEL
    return not ((ord(character) < 0x20 and character != "\n") or ord(character) == 0x7F)


def allowed_in_name(character: str) -> bool:
    return character != "+" and not character.isspace()


def _accepts(check, value: str) -> bool:
    try:
        check(value)
    except MalformedNoteError:
        return False
    return True


def test_text_check_is_its_definition_for_every_code_point() -> None:
    wrong = [hex(code) for code in range(sys.maxunicode + 1) if 0xD800 > code or code > 0xDFFF
             if _accepts(require_note_text, f"a{chr(code)}b\n") != allowed_in_text(chr(code))]
    assert wrong == []


def test_name_check_is_its_definition_for_every_code_point() -> None:
    wrong = [hex(code) for code in range(sys.maxunicode + 1) if 0xD800 > code or code > 0xDFFF
             if _accepts(require_key_name, f"log{chr(code)}name") != allowed_in_name(chr(code))]
    assert wrong == []


def test_the_first_offending_character_is_named() -> None:
    with pytest.raises(MalformedNoteError, match=r"found '\\x01'"):
        require_note_text("ok\x01then\x02\n")
    with pytest.raises(MalformedNoteError, match="no whitespace and no '\\+'"):
        require_key_name("a+b")
