"""File names: safe_filename rules and decoding names the way mail clients send them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from extraction import extract_files, safe_filename


def wire(data: bytes) -> bytes:
    """Return ``data`` with CRLF line endings, as a message arrives over IMAP."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\System32\\evil.dll", "evil.dll"),
        ("C:\\Users\\anna\\Desktop\\Angebot.docx", "Angebot.docx"),
        ("/absolute/path/file.txt", "file.txt"),
        ("folder/", "folder"),
        ("a\x00b.pdf", "ab.pdf"),
        ("line\r\nbreak.pdf", "line break.pdf"),
        ("tab\tname.pdf", "tab name.pdf"),
        ("bell\x07\x1b.pdf", "bell.pdf"),
        ("\x7fdel\x85.pdf", "del.pdf"),
        (".htaccess", "htaccess"),
        ("...hidden.txt", "hidden.txt"),
        (". .dotted", "dotted"),
        ("  spaced  .pdf  ", "spaced  .pdf"),
        ("trailing. . .", "trailing"),
        ("name.pdf.", "name.pdf"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("NUL.tar.gz", "_NUL.tar.gz"),
        ("COM1.docx", "_COM1.docx"),
        ("lpt9", "_lpt9"),
        ("AUX .txt", "_AUX .txt"),
        ("COM\u00b9.txt", "_COM\u00b9.txt"),
        ("CONTRACT.pdf", "CONTRACT.pdf"),
        ("console.log", "console.log"),
        ("U\u0308bersetzung.pdf", "\u00dcbersetzung.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("O'Brien's \"final\" offer.docx", "O'Brien's \"final\" offer.docx"),
        ("Preis: 100 €?.xlsx", "Preis: 100 €?.xlsx"),
        ("資料.pdf", "資料.pdf"),
        ("lone\udcffsurrogate.txt", "lonesurrogate.txt"),
    ],
)
def test_safe_filename_rules(raw_name: str, expected: str) -> None:
    assert safe_filename(raw_name) == expected


@pytest.mark.parametrize("raw_name", [None, "", "   ", "...", ". . .", "/", "\\\\", "\x00\x01"])
def test_safe_filename_empty_uses_fallback(raw_name: str | None) -> None:
    assert safe_filename(raw_name) == "file"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/pdf", "attachment-1.pdf"),
        ("image/jpeg", "attachment-1.jpg"),
        ("image/png", "attachment-1.png"),
        ("text/plain; charset=utf-8", "attachment-1.txt"),
        ("message/rfc822", "attachment-1.eml"),
        ("application/xml", "attachment-1.xml"),
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "attachment-1.docx",
        ),
        ("APPLICATION/PDF", "attachment-1.pdf"),
        ("application/x-made-up", "attachment-1"),
        (None, "attachment-1"),
    ],
)
def test_safe_filename_fallback_extension(content_type: str | None, expected: str) -> None:
    assert safe_filename(None, fallback_stem="attachment-1", content_type=content_type) == expected


def test_safe_filename_fallback_stem_sanitized() -> None:
    assert safe_filename("", fallback_stem="../x") == "x"


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        ("a" * 300 + ".docx", "a" * 195 + ".docx"),
        ("ü" * 150 + ".pdf", "ü" * 98 + ".pdf"),
        ("€" * 100 + ".xlsx", "€" * 65 + ".xlsx"),
        ("b" * 250, "b" * 200),
        ("c" * 190 + " " * 20 + ".txt", "c" * 190 + ".txt"),
        ("d" * 300 + ".tar.gz", "d" * 193 + ".tar.gz"),
    ],
)
def test_safe_filename_length_limit(raw_name: str, expected: str) -> None:
    result = safe_filename(raw_name)
    assert result == expected
    assert len(result.encode("utf-8")) <= 200


def _single_attachment(part_headers: bytes) -> bytes:
    """Build a message with one base64 attachment whose content is b"ABC"."""
    return wire(
        b"From: sender@example.com\n"
        b"To: intake@example.com\n"
        b"Subject: names\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="----=_Part_0"\n'
        b"\n"
        b"------=_Part_0\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"\n"
        b"See attachment.\n"
        b"------=_Part_0\n" + part_headers + b"\n"
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"QUJD\n"
        b"------=_Part_0--\n"
    )


NAME_CASES = [
    pytest.param(
        # Outlook folds a long name into several encoded-words and cuts the UTF-8 bytes
        # of "ü" between the first and the second word.
        b"Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml"
        b".document;\n"
        b'\tname="=?utf-8?B?w5xiZXJzZXR6dW5nIGbD?=\n'
        b'\t=?utf-8?B?vHIgS3VuZGUg4oCTIEVuZGZhc3N1bmcuZG9jeA==?="\n'
        b"Content-Description: =?utf-8?B?w5xiZXJzZXR6dW5nIGbD?=\n"
        b"Content-Disposition: attachment;\n"
        b'\tfilename="=?utf-8?B?w5xiZXJzZXR6dW5nIGbD?=\n'
        b'\t=?utf-8?B?vHIgS3VuZGUg4oCTIEVuZGZhc3N1bmcuZG9jeA==?="; size=3;\n'
        b'\tcreation-date="Tue, 05 Dec 2023 10:00:00 GMT";\n'
        b'\tmodification-date="Tue, 05 Dec 2023 10:00:00 GMT"',
        "Übersetzung für Kunde – Endfassung.docx",
        id="outlook-rfc2047-split-character",
    ),
    pytest.param(
        b'Content-Type: application/vnd.ms-excel; name="=?iso-8859-1?Q?=DCbersicht_2024.xls?="\n'
        b'Content-Disposition: attachment; filename="=?iso-8859-1?Q?=DCbersicht_2024.xls?="',
        "Übersicht 2024.xls",
        id="outlook-iso-8859-1-q",
    ),
    pytest.param(
        b'Content-Type: application/pdf; name="=?UTF-8?B?w5xiZXJzZXR6dW5nLnBkZg==?="\n'
        b'Content-Disposition: attachment; filename="=?UTF-8?B?w5xiZXJzZXR6dW5nLnBkZg==?="\n'
        b"Content-ID: <f_lq2x3y4z0>\n"
        b"X-Attachment-Id: f_lq2x3y4z0",
        "Übersetzung.pdf",
        id="gmail-rfc2047-b",
    ),
    pytest.param(
        b"Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml"
        b".document;\n"
        b' name="=?UTF-8?Q?Auftrag_f=C3=BCr_die_=C3=9Cbersetzung_ins_Franz=C3=B6sische_und_?='
        b"\n"
        b' =?UTF-8?Q?Italienische_=E2=80=93_Endfassung_2024=2Edocx?="\n'
        b"Content-Disposition: attachment;\n"
        b" filename*0*=UTF-8''Auftrag%20f%C3%BCr%20die%20%C3%9Cbersetzung%20ins%20Fra;\n"
        b" filename*1*=nz%C3%B6sische%20und%20Italienische%20%E2%80%93%20Endfassu;\n"
        b" filename*2*=ng%202024.docx",
        "Auftrag für die Übersetzung ins Französische und Italienische – Endfassung 2024.docx",
        id="thunderbird-rfc2231-continuations",
    ),
    pytest.param(
        b"Content-Disposition: attachment;\n"
        b"\tfilename*=utf-8''U%CC%88bersetzung.pdf\n"
        b"Content-Type: application/pdf;\n"
        b"\tx-unix-mode=0644;\n"
        b'\tname="=?utf-8?Q?U=CC=88bersetzung=2Epdf?="',
        "Übersetzung.pdf",
        id="apple-mail-nfd",
    ),
    pytest.param(
        b"Content-Type: application/pdf\n"
        b"Content-Disposition: attachment; filename*=iso-8859-1'de'%DCbersicht.pdf",
        "Übersicht.pdf",
        id="rfc2231-language",
    ),
    pytest.param(
        b"Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml"
        b".document\n"
        b"Content-Disposition: attachment; filename*=UTF-8''O%27Brien%27s%20notes.docx",
        "O'Brien's notes.docx",
        id="rfc2231-apostrophes",
    ),
    pytest.param(
        b"Content-Type: text/plain\n"
        b'Content-Disposition: attachment; filename="say \\"hi\\" to O\'Brien.txt"',
        'say "hi" to O\'Brien.txt',
        id="quoted-string-escapes",
    ),
    pytest.param(
        b"Content-Type: application/pdf; name=\"O'Brien's offer; final.pdf\"",
        "O'Brien's offer; final.pdf",
        id="semicolon-in-quotes-name-only",
    ),
    pytest.param(
        b"Content-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename="\xc3\x9cbersicht.pdf"',
        "Übersicht.pdf",
        id="raw-utf-8",
    ),
    pytest.param(
        b'Content-Type: application/pdf; name="\xdcbersicht.pdf"\n'
        b'Content-Disposition: attachment; filename="\xdcbersicht.pdf"',
        "Übersicht.pdf",
        id="raw-latin-1",
    ),
    pytest.param(
        b"Content-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename="Preis \x80 \x84neu\x93.pdf"',
        "Preis € „neu“.pdf",
        id="raw-windows-1252",
    ),
    pytest.param(
        b"Content-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename="old.pdf";\n'
        b" filename*=UTF-8''%E2%82%AC%20new.pdf",
        "€ new.pdf",
        id="extended-parameter-wins",
    ),
    pytest.param(
        b"Content-Type: application/pdf\n"
        b"Content-Disposition: attachment; filename=report final.pdf",
        "report final.pdf",
        id="unquoted-with-space",
    ),
    pytest.param(
        b"Content-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename*0="a long "; filename*1="name.pdf"',
        "a long name.pdf",
        id="rfc2231-plain-continuations",
    ),
    pytest.param(
        b'Content-Type: application/pdf; name="=?ISO-2022-JP?B?GyRCO3FOQRsoQi5wZGY=?="',
        "資料.pdf",
        id="iso-2022-jp",
    ),
    pytest.param(
        b"Content-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename="Angebot =?utf-8?q?M=C3=BCller?=.pdf"',
        "Angebot Müller.pdf",
        id="encoded-word-inside-text",
    ),
    pytest.param(
        b"Content-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename="../../../etc/=?utf-8?q?cron=2Ed?="',
        "cron.d",
        id="encoded-path-traversal",
    ),
    pytest.param(
        b'Content-Type: application/pdf\nContent-Disposition: attachment; filename="unclosed.pdf',
        "unclosed.pdf",
        id="unclosed-quote",
    ),
    pytest.param(
        b"Content-Type: application/pdf\nContent-Disposition: attachment",
        "attachment-1.pdf",
        id="missing-name",
    ),
    pytest.param(
        b'Content-Type: application/pdf\nContent-Disposition: attachment; filename=""',
        "attachment-1.pdf",
        id="empty-name",
    ),
]


@pytest.mark.parametrize(("part_headers", "expected"), NAME_CASES)
def test_attachment_name_decoding(part_headers: bytes, expected: str, tmp_path: Path) -> None:
    result = extract_files(_single_attachment(part_headers), tmp_path)

    assert [extracted.name for extracted in result.files] == [expected]
    assert result.files[0].sha256 == hashlib.sha256(b"ABC").hexdigest()
    assert result.problems == []


def test_mixed_rfc2231_forms_use_plain_name(tmp_path: Path) -> None:
    raw = _single_attachment(
        b'Content-Type: application/pdf; name="a.pdf"\n'
        b"Content-Disposition: attachment; filename*=utf-8''b.pdf; filename*0*=utf-8''c.pdf"
    )

    result = extract_files(raw, tmp_path)

    assert [extracted.name for extracted in result.files] == ["a.pdf"]
    assert result.problems == [
        "Part 2 (a.pdf): file name: malformed RFC 2231 parameters, used the plain ones"
    ]


def test_unknown_charset_falls_back_to_latin1(tmp_path: Path) -> None:
    raw = _single_attachment(
        b"Content-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename="=?x-klingon?Q?caf=E9.pdf?="'
    )

    result = extract_files(raw, tmp_path)

    assert [extracted.name for extracted in result.files] == ["café.pdf"]
    assert result.problems == [
        "Part 2 (café.pdf): file name: unknown charset 'x-klingon', decoded as Latin-1"
    ]


def test_unknown_rfc2231_charset_falls_back(tmp_path: Path) -> None:
    raw = _single_attachment(
        b"Content-Type: application/pdf\n"
        b"Content-Disposition: attachment; filename*=x-klingon''caf%E9.pdf"
    )

    result = extract_files(raw, tmp_path)

    assert [extracted.name for extracted in result.files] == ["café.pdf"]
    assert result.problems == [
        "Part 2 (café.pdf): file name: unknown charset 'x-klingon', decoded as Latin-1"
    ]


def test_invalid_bytes_in_declared_charset(tmp_path: Path) -> None:
    raw = _single_attachment(
        b"Content-Type: application/pdf\n"
        b"Content-Disposition: attachment; filename*=utf-8''caf%E9.pdf"
    )

    result = extract_files(raw, tmp_path)

    assert [extracted.name for extracted in result.files] == ["caf\ufffd.pdf"]
    assert result.problems == [
        "Part 2 (caf\ufffd.pdf): file name: text is not valid utf-8, unreadable bytes replaced"
    ]


def test_duplicate_names_numbered(tmp_path: Path) -> None:
    names = [
        "report.pdf",
        "report.pdf",
        "Report.PDF",
        "notes",
        "notes",
        "archive.tar.gz",
        "archive.tar.gz",
        "dir/report.pdf",
    ]
    parts = b"".join(
        b"------=_Part_0\n"
        b"Content-Type: application/octet-stream\n"
        b'Content-Disposition: attachment; filename="' + name.encode() + b'"\n'
        b"\n"
        b"data\n"
        for name in names
    )
    raw = wire(
        b"Subject: duplicates\n"
        b'Content-Type: multipart/mixed; boundary="----=_Part_0"\n'
        b"\n" + parts + b"------=_Part_0--\n"
    )

    result = extract_files(raw, tmp_path)

    assert [extracted.name for extracted in result.files] == [
        "report.pdf",
        "report (2).pdf",
        "Report (3).PDF",
        "notes",
        "notes (2)",
        "archive.tar.gz",
        "archive (2).tar.gz",
        "report (4).pdf",
    ]


def test_duplicate_of_long_name_stays_within_limit(tmp_path: Path) -> None:
    long_name = ("x" * 250 + ".pdf").encode()
    part = (
        b"------=_Part_0\n"
        b"Content-Type: application/pdf\n"
        b'Content-Disposition: attachment; filename="' + long_name + b'"\n'
        b"\n"
        b"data\n"
    )
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="----=_Part_0"\n\n'
        + part
        + part
        + b"------=_Part_0--\n"
    )

    result = extract_files(raw, tmp_path)

    assert [extracted.name for extracted in result.files] == [
        "x" * 196 + ".pdf",
        "x" * 192 + " (2).pdf",
    ]
