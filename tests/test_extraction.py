"""extract_files on real message layouts, TNEF, ZIP archives, damage and size."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import random
import re
import struct
import tracemalloc
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

from extraction import (
    ExtractionOptions,
    ExtractionResult,
    MessageInfo,
    extract_files,
    parse_message_info,
    spool,
)

_extract_from_bytes = extract_files


def _extract_from_file(
    raw: bytes | io.BytesIO, workdir: Path, options: ExtractionOptions = ExtractionOptions()
) -> ExtractionResult:
    source = raw if isinstance(raw, io.BytesIO) else io.BytesIO(raw)
    return _extract_from_bytes(source, workdir, options)


@pytest.fixture(autouse=True, params=["bytes", "file"])
def message_source(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test on the raw bytes and again on a file with all bodies spooled.

    With a minimum run of one byte, every line that can stay in the file does, so each
    test also checks that the spooled parse gives the same result as the one in memory.
    """
    if request.param == "file":
        monkeypatch.setattr(spool, "MIN_RUN_BYTES", 1)
        monkeypatch.setitem(globals(), "extract_files", _extract_from_file)
    return str(request.param)


def wire(data: bytes) -> bytes:
    """Return ``data`` with CRLF line endings, as a message arrives over IMAP."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def names(result: ExtractionResult) -> list[str]:
    return [extracted.name for extracted in result.files]


def digests(result: ExtractionResult) -> dict[str, str]:
    return {extracted.name: extracted.sha256 for extracted in result.files}


def assert_files_on_disk(result: ExtractionResult, workdir: Path) -> None:
    """Check that every file is a uuid-named file in workdir with the reported bytes."""
    for extracted in result.files:
        assert extracted.path.parent == workdir
        assert re.fullmatch(r"[0-9a-f]{32}", extracted.path.name)
        content = extracted.path.read_bytes()
        assert len(content) == extracted.size
        assert sha(content) == extracted.sha256
    on_disk = sorted(path.name for path in workdir.iterdir())
    assert on_disk == sorted(extracted.path.name for extracted in result.files)


def message_with_attachment(
    data: bytes, filename: str, maintype: str = "application", subtype: str = "octet-stream"
) -> bytes:
    message = EmailMessage()
    message["From"] = "client@example.com"
    message["To"] = "intake@example.com"
    message["Subject"] = "Files"
    message.set_content("Please translate the attached files.")
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


# Message info


def test_message_info_decoded() -> None:
    raw = wire(
        b"From: =?iso-8859-1?Q?M=FCller=2C_Anna?= <anna.mueller@example.com>\n"
        b"Subject: =?utf-8?B?w5xiZXJzZXR6dW5n?= =?utf-8?Q?_Vertrag_?=\n"
        b" =?utf-8?Q?Nr=2E_7?=\n"
        b"Date: Tue, 5 Dec 2023 10:15:42 +0100\n"
        b"Message-ID:\n <AM0PR01MB1234@example.outlook.com>\n"
        b"\n"
        b"body\n"
    )

    info = parse_message_info(raw)

    assert info == MessageInfo(
        message_id="<AM0PR01MB1234@example.outlook.com>",
        sender="Müller, Anna <anna.mueller@example.com>",
        subject="Übersetzung Vertrag Nr. 7",
        date=datetime(2023, 12, 5, 10, 15, 42, tzinfo=timezone(timedelta(hours=1))),
    )


@pytest.mark.parametrize(
    ("date_header", "expected"),
    [
        (b"Tue, 5 Dec 2023 10:15:42 -0500", datetime(2023, 12, 5, 15, 15, 42, tzinfo=UTC)),
        (b"Tue, 5 Dec 2023 10:15:42 -0000", datetime(2023, 12, 5, 10, 15, 42, tzinfo=UTC)),
        (b"Tue, 5 Dec 2023 10:15:42", datetime(2023, 12, 5, 10, 15, 42, tzinfo=UTC)),
        (b"5 Dec 2023 10:15:42 GMT", datetime(2023, 12, 5, 10, 15, 42, tzinfo=UTC)),
        (b"not a date", None),
        (b"Tue, 5 Dec 2023 25:99:00 +0100", None),
    ],
)
def test_message_info_date(date_header: bytes, expected: datetime | None) -> None:
    info = parse_message_info(b"Date: " + date_header + b"\r\n\r\n")

    assert info.date == expected
    if info.date is not None:
        assert info.date.tzinfo is not None


def test_message_info_missing_headers() -> None:
    assert parse_message_info(b"\r\nbody only\r\n") == MessageInfo(None, None, None, None)


def test_message_info_from_file() -> None:
    # A header block of about 100 KB ends in the second read of the file.
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (index, b"x" * 60) for index in range(1500))
    raw = b"Subject: Padded\r\n" + padding + b"From: x@example.com\r\n\r\nbody\r\n" * 2

    info = parse_message_info(io.BytesIO(raw))

    assert info == parse_message_info(raw)
    assert info.subject == "Padded"
    assert info.sender == "x@example.com"


def test_message_info_raw_8bit_subject() -> None:
    info = parse_message_info(b"Subject: \xdcbersetzung \xc3\xbc\r\nFrom: x@example.com\r\n\r\n")

    # The whole value is not valid UTF-8, so it is read as Windows-1252.
    assert info.subject == "Übersetzung Ã¼"
    assert info.sender == "x@example.com"


def test_unknown_charset_in_subject_reported(tmp_path: Path) -> None:
    raw = wire(b"Subject: =?x-klingon?Q?caf=E9?=\nContent-Type: text/plain\n\nbody\n")

    result = extract_files(raw, tmp_path)

    assert result.info.subject == "café"
    assert result.problems == ["Subject: unknown charset 'x-klingon', decoded as Latin-1"]


# Message layouts of common clients


def test_email_package_message(tmp_path: Path) -> None:
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 4
    image = b"\x89PNG\r\n\x1a\n" + bytes(200)
    message = EmailMessage()
    message["From"] = "Jürgen Weiß <juergen@example.com>"
    message["Subject"] = "Angebot für Übersetzung"
    message["Message-ID"] = "<1@example.com>"
    message.set_content("Hallo")
    message.add_alternative("<p>Hallo</p>", subtype="html")
    message.add_attachment(
        pdf, maintype="application", subtype="pdf", filename="Angebot für Müller.pdf"
    )
    message.add_attachment(image, maintype="image", subtype="png", filename="scan.png")
    message.add_attachment("a;b\r\nc;d\r\n", subtype="csv", filename="glossary.csv")

    result = extract_files(message.as_bytes(), tmp_path)

    assert result.info.subject == "Angebot für Übersetzung"
    assert result.info.sender == "Jürgen Weiß <juergen@example.com>"
    assert names(result) == ["Angebot für Müller.pdf", "scan.png", "glossary.csv"]
    assert [extracted.content_type for extracted in result.files] == [
        "application/pdf",
        "image/png",
        "text/csv",
    ]
    assert [extracted.origin for extracted in result.files] == ["attachment"] * 3
    assert digests(result) == {
        "Angebot für Müller.pdf": sha(pdf),
        "scan.png": sha(image),
        "glossary.csv": sha(b"a;b\nc;d\n"),
    }
    assert result.problems == []
    assert_files_on_disk(result, tmp_path)


OUTLOOK_MESSAGE = wire(
    b"From: =?iso-8859-1?Q?M=FCller=2C_Anna?= <anna.mueller@example.com>\n"
    b"To: intake@example.com\n"
    b"Subject: =?iso-8859-1?Q?=DCbersetzung_Vertrag?=\n"
    b"Date: Tue, 5 Dec 2023 10:15:42 +0000\n"
    b"Message-ID: <AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod.outlook.com>\n"
    b"Content-Language: de-DE\n"
    b"Content-Type: multipart/mixed;\n"
    b'\tboundary="_004_AM0PR01MB1234_"\n'
    b"MIME-Version: 1.0\n"
    b"\n"
    b"--_004_AM0PR01MB1234_\n"
    b"Content-Type: multipart/related;\n"
    b'\tboundary="_003_AM0PR01MB1234_";\n'
    b'\ttype="multipart/alternative"\n'
    b"\n"
    b"--_003_AM0PR01MB1234_\n"
    b"Content-Type: multipart/alternative;\n"
    b'\tboundary="_000_AM0PR01MB1234_"\n'
    b"\n"
    b"--_000_AM0PR01MB1234_\n"
    b'Content-Type: text/plain; charset="iso-8859-1"\n'
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Bitte =FCbersetzen.\n"
    b"\n"
    b"--_000_AM0PR01MB1234_\n"
    b'Content-Type: text/html; charset="iso-8859-1"\n'
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b'<html><body><p>Bitte =FCbersetzen.</p><img width=3D"120" src=3D"cid:image001.pn=\n'
    b'g@01DA2775.3A6F2B10" alt=3D"Logo"></body></html>\n'
    b"\n"
    b"--_000_AM0PR01MB1234_--\n"
    b"\n"
    b"--_003_AM0PR01MB1234_\n"
    b'Content-Type: image/png; name="image001.png"\n'
    b"Content-Description: image001.png\n"
    b'Content-Disposition: inline; filename="image001.png"; size=4;\n'
    b'\tcreation-date="Tue, 05 Dec 2023 10:15:41 GMT";\n'
    b'\tmodification-date="Tue, 05 Dec 2023 10:15:41 GMT"\n'
    b"Content-ID: <image001.png@01DA2775.3A6F2B10>\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"iVBORw==\n"
    b"\n"
    b"--_003_AM0PR01MB1234_--\n"
    b"\n"
    b"--_004_AM0PR01MB1234_\n"
    b"Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document;\n"
    b'\tname="=?iso-8859-1?Q?Vertrag_=DCbersetzung.docx?="\n'
    b"Content-Description: =?iso-8859-1?Q?Vertrag_=DCbersetzung.docx?=\n"
    b"Content-Disposition: attachment;\n"
    b'\tfilename="=?iso-8859-1?Q?Vertrag_=DCbersetzung.docx?="; size=8;\n'
    b'\tcreation-date="Tue, 05 Dec 2023 10:15:41 GMT";\n'
    b'\tmodification-date="Tue, 05 Dec 2023 10:15:41 GMT"\n'
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"UEsDBAAAAAA=\n"
    b"\n"
    b"--_004_AM0PR01MB1234_\n"
    b'Content-Type: application/pdf; name="Preisliste.pdf"\n'
    b"Content-Description: Preisliste.pdf\n"
    b'Content-Disposition: inline; filename="Preisliste.pdf"; size=9;\n'
    b'\tcreation-date="Tue, 05 Dec 2023 10:15:41 GMT";\n'
    b'\tmodification-date="Tue, 05 Dec 2023 10:15:41 GMT"\n'
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"JVBERi0xLjcK\n"
    b"\n"
    b"--_004_AM0PR01MB1234_--\n"
)


def test_outlook_signature_image_skipped(tmp_path: Path) -> None:
    result = extract_files(OUTLOOK_MESSAGE, tmp_path)

    assert result.info.sender == "Müller, Anna <anna.mueller@example.com>"
    assert result.info.subject == "Übersetzung Vertrag"
    assert names(result) == ["Vertrag Übersetzung.docx", "Preisliste.pdf"]
    assert [extracted.origin for extracted in result.files] == ["attachment", "inline"]
    assert digests(result) == {
        "Vertrag Übersetzung.docx": sha(b"PK\x03\x04\x00\x00\x00\x00"),
        "Preisliste.pdf": sha(b"%PDF-1.7\n"),
    }
    assert result.problems == []
    assert_files_on_disk(result, tmp_path)


def test_inline_images_included_on_request(tmp_path: Path) -> None:
    options = ExtractionOptions(include_inline_images=True)

    result = extract_files(OUTLOOK_MESSAGE, tmp_path, options)

    assert names(result) == ["image001.png", "Vertrag Übersetzung.docx", "Preisliste.pdf"]
    assert result.files[0].origin == "inline"
    assert result.files[0].content_type == "image/png"
    assert result.files[0].sha256 == sha(b"\x89PNG")


def test_lf_only_message(tmp_path: Path) -> None:
    raw = OUTLOOK_MESSAGE.replace(b"\r\n", b"\n")

    result = extract_files(raw, tmp_path)

    assert names(result) == ["Vertrag Übersetzung.docx", "Preisliste.pdf"]
    assert result.problems == []


def test_related_image_without_reference_skipped(tmp_path: Path) -> None:
    raw = OUTLOOK_MESSAGE.replace(b"cid:image001.pn=\r\ng@01DA2775", b"logo.png\r\n")

    result = extract_files(raw, tmp_path)

    assert names(result) == ["Vertrag Übersetzung.docx", "Preisliste.pdf"]


def test_cid_referenced_attachment_skipped(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b"Content-Type: text/html; charset=utf-8\n"
        b"\n"
        b'<p>Regards</p><img src="CID:Logo%40example">\n'
        b"--b\n"
        b'Content-Type: image/gif; name="logo.gif"\n'
        b'Content-Disposition: attachment; filename="logo.gif"\n'
        b"Content-ID: <logo@example>\n"
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"R0lGODlh\n"
        b"--b\n"
        b'Content-Type: image/jpeg; name="photo.jpg"\n'
        b'Content-Disposition: attachment; filename="photo.jpg"\n'
        b"Content-ID: <photo@example>\n"
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"/9j/4AAQ\n"
        b"--b--\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["photo.jpg"]
    assert result.files[0].sha256 == sha(b"\xff\xd8\xff\xe0\x00\x10")


def test_apple_mail_inline_image_kept(tmp_path: Path) -> None:
    raw = wire(
        b"From: Anna <anna@example.com>\n"
        b"Content-Type: multipart/mixed;\n"
        b'\tboundary="Apple-Mail=_5F3C8E2A-1B2C-4D5E-8F90-123456789ABC"\n'
        b"Mime-Version: 1.0 (Mac OS X Mail 16.0)\n"
        b"Subject: Seite 1\n"
        b"\n"
        b"\n"
        b"--Apple-Mail=_5F3C8E2A-1B2C-4D5E-8F90-123456789ABC\n"
        b"Content-Transfer-Encoding: 7bit\n"
        b"Content-Type: text/plain;\n"
        b"\tcharset=us-ascii\n"
        b"\n"
        b"Photo of the page:\n"
        b"--Apple-Mail=_5F3C8E2A-1B2C-4D5E-8F90-123456789ABC\n"
        b"Content-Disposition: inline;\n"
        b"\tfilename=Seite1.jpg\n"
        b"Content-Type: image/jpeg;\n"
        b"\tx-unix-mode=0644;\n"
        b'\tname="Seite1.jpg"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"/9j/4AAQ\n"
        b"--Apple-Mail=_5F3C8E2A-1B2C-4D5E-8F90-123456789ABC\n"
        b"Content-Transfer-Encoding: 7bit\n"
        b"Content-Type: text/plain;\n"
        b"\tcharset=us-ascii\n"
        b"\n"
        b"Thanks\n"
        b"--Apple-Mail=_5F3C8E2A-1B2C-4D5E-8F90-123456789ABC--\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["Seite1.jpg"]
    assert result.files[0].origin == "inline"
    assert result.files[0].content_type == "image/jpeg"
    assert result.files[0].sha256 == sha(b"\xff\xd8\xff\xe0\x00\x10")


def test_text_parts_with_names_are_files(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"\n"
        b"Body text\n"
        b"--b\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Disposition: inline\n"
        b"\n"
        b"Second body text, inline without a name\n"
        b"--b\n"
        b'Content-Type: text/plain; charset=utf-8; name="terms.txt"\n'
        b"Content-Disposition: inline; filename=terms.txt\n"
        b"\n"
        b"term=Begriff\n"
        b"--b\n"
        b"Content-Type: text/html; charset=utf-8\n"
        b"Content-Disposition: attachment\n"
        b"\n"
        b"<p>page</p>\n"
        b"--b--\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["terms.txt", "attachment-1.html"]
    assert [extracted.origin for extracted in result.files] == ["inline", "attachment"]
    assert digests(result) == {
        "terms.txt": sha(b"term=Begriff"),
        "attachment-1.html": sha(b"<p>page</p>"),
    }


def test_unnamed_parts_numbered(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b"Content-Type: application/pdf\n"
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"JVBERi0xLjcK\n"
        b"--b\n"
        b"Content-Type: application/octet-stream\n"
        b"Content-Disposition: attachment\n"
        b"\n"
        b"raw\n"
        b"--b\n"
        b"Content-Type: application/x-unheard-of\n"
        b"\n"
        b"raw\n"
        b"--b--\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["attachment-1.pdf", "attachment-2.bin", "attachment-3"]
    assert [extracted.content_type for extracted in result.files] == [
        "application/pdf",
        "application/octet-stream",
        "application/x-unheard-of",
    ]


def test_octet_stream_type_guessed_from_name(tmp_path: Path) -> None:
    raw = message_with_attachment(b"PK\x03\x04", "Vertrag.docx")

    result = extract_files(raw, tmp_path)

    assert result.files[0].content_type == (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    )


def test_quoted_printable_and_8bit_attachments(tmp_path: Path) -> None:
    csv = "Begriff;Übersetzung;" + "x" * 100 + "\r\nHaus;house\r\n"
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b'Content-Type: text/csv; charset=iso-8859-1; name="terms.csv"\n'
        b"Content-Transfer-Encoding: quoted-printable\n"
        b'Content-Disposition: attachment; filename="terms.csv"\n'
        b"\n"
        b"Begriff;=DCbersetzung;" + b"x" * 50 + b"=\n" + b"x" * 50 + b"\n"
        b"Haus;house\n"
        b"\n"
        b"--b\n"
        b'Content-Type: text/plain; charset=utf-8; name="notes.txt"\n'
        b"Content-Transfer-Encoding: 8bit\n"
        b'Content-Disposition: attachment; filename="notes.txt"\n'
        b"\n"
        b"Gr\xc3\xbc\xc3\x9fe\n"
        b"--b--\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["terms.csv", "notes.txt"]
    assert digests(result) == {
        "terms.csv": sha(csv.encode("iso-8859-1")),
        "notes.txt": sha("Grüße".encode()),
    }


def test_signature_part_skipped(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\n'
        b'\tmicalg=sha-256; boundary="signed"\n'
        b"\n"
        b"--signed\n"
        b'Content-Type: multipart/mixed; boundary="mixed"\n'
        b"\n"
        b"--mixed\n"
        b"Content-Type: text/plain\n"
        b"\n"
        b"Signed text\n"
        b"--mixed\n"
        b'Content-Type: application/pdf; name="order.pdf"\n'
        b'Content-Disposition: attachment; filename="order.pdf"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"JVBERi0xLjcK\n"
        b"--mixed--\n"
        b"\n"
        b"--signed\n"
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"\n'
        b"Content-Transfer-Encoding: base64\n"
        b'Content-Disposition: attachment; filename="smime.p7s"\n'
        b"\n"
        b"MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAA==\n"
        b"--signed--\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["order.pdf"]


def test_unknown_transfer_encoding_kept_raw(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b'Content-Type: application/pdf; name="a.pdf"\n'
        b"Content-Transfer-Encoding: x-compressed\n"
        b"\n"
        b"abc\n"
        b"--b--\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["a.pdf"]
    assert result.files[0].sha256 == sha(b"abc")
    assert result.problems == [
        "Part 1 (a.pdf): unknown transfer encoding 'x-compressed', saved the data undecoded"
    ]


def test_single_part_message_attachment(tmp_path: Path) -> None:
    raw = wire(
        b"Subject: scan\n"
        b'Content-Type: application/pdf; name="scan.pdf"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"JVBERi0xLjcK\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["scan.pdf"]
    assert result.files[0].sha256 == sha(b"%PDF-1.7\n")


# Attached messages


def _attached_message_raw() -> tuple[bytes, bytes]:
    """Return an outer message and the exact bytes of the message attached to it."""
    inner = wire(
        b"From: Kunde <kunde@example.com>\n"
        b"Subject: =?utf-8?Q?Urspr=C3=BCngliche_Anfrage?=\n"
        b"Date: Mon, 4 Dec 2023 09:00:00 +0100\n"
        b"Received: from mail.example.com (mail.example.com [192.0.2.1])\n"
        b"\tby mx.example.net with ESMTPS id abc123\n"
        b"\tfor <intake@example.com>; Mon, 4 Dec 2023 09:00:01 +0100\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="inner"\n'
        b"\n"
        b"--inner\n"
        b"Content-Type: text/plain\n"
        b"\n"
        b"See glossary.\n"
        b"--inner\n"
        b"Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet;\n"
        b' name="Glossar.xlsx"\n'
        b'Content-Disposition: attachment; filename="Glossar.xlsx"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"UEsDBBQAAAAI\n"
        b"--inner--\n"
    )
    outer = (
        wire(
            b"From: pm@example.com\n"
            b"Subject: Fwd: Anfrage\n"
            b'Content-Type: multipart/mixed; boundary="outer"\n'
            b"\n"
            b"--outer\n"
            b"Content-Type: text/plain\n"
            b"\n"
            b"Forwarding.\n"
            b"--outer\n"
            b"Content-Type: message/rfc822\n"
            b"Content-Disposition: attachment\n"
            b"\n"
        )
        + inner
        + wire(b"\n--outer--\n")
    )
    return outer, inner


def test_attached_message_kept_and_unpacked(tmp_path: Path) -> None:
    outer, inner = _attached_message_raw()

    result = extract_files(outer, tmp_path)

    assert names(result) == ["Ursprüngliche Anfrage.eml", "Glossar.xlsx"]
    assert [extracted.origin for extracted in result.files] == ["nested-message", "attachment"]
    assert result.files[0].content_type == "message/rfc822"
    assert digests(result) == {
        "Ursprüngliche Anfrage.eml": sha(inner),
        "Glossar.xlsx": sha(b"PK\x03\x04\x14\x00\x00\x00\x08"),
    }
    assert result.problems == []
    assert_files_on_disk(result, tmp_path)


def test_attached_message_lf_bytes_exact(tmp_path: Path) -> None:
    outer, inner = _attached_message_raw()

    result = extract_files(outer.replace(b"\r\n", b"\n"), tmp_path)

    assert result.files[0].sha256 == sha(inner.replace(b"\r\n", b"\n"))


def test_attached_message_not_kept(tmp_path: Path) -> None:
    outer, _inner = _attached_message_raw()

    result = extract_files(outer, tmp_path, ExtractionOptions(keep_nested_message=False))

    assert names(result) == ["Glossar.xlsx"]
    assert_files_on_disk(result, tmp_path)


def test_attached_message_named_by_client(tmp_path: Path) -> None:
    outer, _inner = _attached_message_raw()
    raw = outer.replace(
        b"Content-Type: message/rfc822\r\n",
        b'Content-Type: message/rfc822; name="Anfrage vom Montag"\r\n',
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["Anfrage vom Montag.eml", "Glossar.xlsx"]


def test_attached_message_base64_encoded(tmp_path: Path) -> None:
    _outer, inner = _attached_message_raw()
    encoded = base64.encodebytes(inner).replace(b"\n", b"\r\n")
    raw = (
        wire(
            b'Content-Type: multipart/mixed; boundary="outer"\n'
            b"\n"
            b"--outer\n"
            b"Content-Type: message/rfc822\n"
            b"Content-Transfer-Encoding: base64\n"
            b"\n"
        )
        + encoded
        + wire(b"--outer--\n")
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["Ursprüngliche Anfrage.eml", "Glossar.xlsx"]
    assert result.files[0].sha256 == sha(inner)
    assert result.problems == []


def _nested_chain(levels: int) -> bytes:
    """Build a message whose attachment level-0.txt sits next to a chain of attached
    messages, each with its own level-N.txt."""
    raw = b""
    for level in range(levels, -1, -1):
        nested = b""
        if raw:
            nested = (
                b"--b" + str(level).encode() + b"\nContent-Type: message/rfc822\n\n" + raw + b"\n"
            )
        boundary = b"b" + str(level).encode()
        raw = (
            b"Subject: Level " + str(level).encode() + b"\n"
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\n'
            b"\n"
            b"--" + boundary + b"\n"
            b"Content-Type: text/plain\n"
            b'Content-Disposition: attachment; filename="level-' + str(level).encode() + b'.txt"\n'
            b"\n"
            b"level " + str(level).encode() + b"\n" + nested + b"--" + boundary + b"--\n"
        )
    return wire(raw)


def test_attached_message_depth_limit(tmp_path: Path) -> None:
    result = extract_files(_nested_chain(7), tmp_path)

    assert names(result) == [
        "level-0.txt",
        "Level 1.eml",
        "level-1.txt",
        "Level 2.eml",
        "level-2.txt",
        "Level 3.eml",
        "level-3.txt",
        "Level 4.eml",
        "level-4.txt",
        "Level 5.eml",
        "level-5.txt",
        "Level 6.eml",
    ]
    assert result.problems == [
        "Part 2.2.2.2.2.2: attached messages nested deeper than 5 levels, kept this one whole"
    ]


# TNEF (winmail.dat)


def _tnef_object(level: int, attribute: int, attribute_type: int, data: bytes) -> bytes:
    """Encode one TNEF attribute: level, id, type, length, data, 16-bit byte sum."""
    header = struct.pack("<BHHI", level, attribute, attribute_type, len(data))
    return header + data + struct.pack("<H", sum(data) & 0xFFFF)


def _mapi_properties(properties: list[tuple[int, int, bytes]]) -> bytes:
    """Encode MAPI properties of variable length (strings) as attAttachment carries them."""
    out = struct.pack("<I", len(properties))
    for property_type, property_id, value in properties:
        padding = b"\x00" * (-len(value) % 4)
        out += struct.pack("<HHII", property_type, property_id, 1, len(value)) + value + padding
    return out


def build_tnef(
    attachments: list[dict[str, bytes | str | None]], body: bytes | None = None
) -> bytes:
    """Build a TNEF stream like Outlook's: message attributes, then per attachment the
    rendering data, title (8.3 name), data and MAPI properties."""
    out = struct.pack("<IH", 0x223E9F78, 0x5A3C)
    out += _tnef_object(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))
    out += _tnef_object(1, 0x9007, 0x0006, struct.pack("<II", 1252, 0))
    out += _tnef_object(1, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\x00")
    if body is not None:
        out += _tnef_object(1, 0x800C, 0x0002, body)
    for attachment in attachments:
        out += _tnef_object(2, 0x9002, 0x0006, struct.pack("<HiHHI", 1, -1, 0, 0, 0))
        title = attachment.get("title")
        if isinstance(title, str):
            out += _tnef_object(2, 0x8010, 0x0001, title.encode("cp1252") + b"\x00")
        data = attachment.get("data")
        if isinstance(data, bytes):
            out += _tnef_object(2, 0x800F, 0x0006, data)
        properties = []
        embedded = attachment.get("embedded")
        if isinstance(embedded, bytes):
            # PR_ATTACH_DATA_OBJ: the IMessage interface id, then the item as TNEF.
            interface_id = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
            properties.append((0x000D, 0x3701, interface_id + embedded))
        long_name = attachment.get("long_name")
        if isinstance(long_name, str):
            properties.append((0x001F, 0x3707, (long_name + "\x00").encode("utf-16-le")))
        mime_tag = attachment.get("mime_tag")
        if isinstance(mime_tag, str):
            properties.append((0x001E, 0x370E, mime_tag.encode("ascii") + b"\x00"))
        out += _tnef_object(2, 0x9005, 0x0006, _mapi_properties(properties))
    return out


DOCX_BYTES = b"PK\x03\x04" + bytes(range(1, 200)) + b"PK\x05\x06" + b"\x00" * 18
NOTES_BYTES = b"hello\r\n"


def _tnef_attachments() -> list[dict[str, bytes | str | None]]:
    return [
        {"title": "BERSET~1.DOC", "long_name": "Übersetzung – Entwurf.docx", "data": DOCX_BYTES},
        {"title": "notes.txt", "data": NOTES_BYTES, "mime_tag": "text/plain"},
    ]


def message_with_tnef(tnef: bytes) -> bytes:
    encoded = base64.encodebytes(tnef).replace(b"\n", b"\r\n")
    return (
        wire(
            b"From: Outlook <outlook@example.com>\n"
            b"Subject: Auftrag\n"
            b'Content-Type: multipart/mixed; boundary="_002_tnef_"\n'
            b"\n"
            b"--_002_tnef_\n"
            b'Content-Type: text/plain; charset="us-ascii"\n'
            b"\n"
            b"See attachments.\n"
            b"--_002_tnef_\n"
            b'Content-Type: application/ms-tnef; name="winmail.dat"\n'
            b"Content-Transfer-Encoding: base64\n"
            b'Content-Disposition: attachment; filename="winmail.dat"\n'
            b"\n"
        )
        + encoded
        + wire(b"\n--_002_tnef_--\n")
    )


def test_tnef_attachments_unpacked(tmp_path: Path) -> None:
    raw = message_with_tnef(build_tnef(_tnef_attachments()))

    result = extract_files(raw, tmp_path)

    assert names(result) == ["Übersetzung – Entwurf.docx", "notes.txt"]
    assert [extracted.origin for extracted in result.files] == ["tnef", "tnef"]
    assert [extracted.content_type for extracted in result.files] == [
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "text/plain",
    ]
    assert digests(result) == {
        "Übersetzung – Entwurf.docx": sha(DOCX_BYTES),
        "notes.txt": sha(NOTES_BYTES),
    }
    assert result.problems == []
    assert_files_on_disk(result, tmp_path)


def test_tnef_embedded_item_unpacked(tmp_path: Path) -> None:
    inner_pdf = b"%PDF-1.7\n" + bytes(100)
    item = build_tnef([{"title": "inner.pdf", "data": inner_pdf}])
    outer = build_tnef(
        [{"title": "Anfrage", "embedded": item}, {"title": "notes.txt", "data": NOTES_BYTES}]
    )

    result = extract_files(message_with_tnef(outer), tmp_path)

    assert names(result) == ["inner.pdf", "notes.txt"]
    assert digests(result) == {"inner.pdf": sha(inner_pdf), "notes.txt": sha(NOTES_BYTES)}
    assert result.problems == []


def test_tnef_without_content_type(tmp_path: Path) -> None:
    raw = message_with_tnef(build_tnef(_tnef_attachments())).replace(
        b"application/ms-tnef", b"application/octet-stream"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["Übersetzung – Entwurf.docx", "notes.txt"]


@pytest.mark.parametrize(
    ("tnef", "reason"),
    [
        (b"not TNEF at all", "ValueError: Wrong TNEF signature: 0x20746f6e"),
        (
            build_tnef(_tnef_attachments())[:-40],
            "the data ends inside a TNEF object, the file is truncated",
        ),
    ],
    ids=["bad-signature", "truncated"],
)
def test_tnef_damaged_kept_whole(tnef: bytes, reason: str, tmp_path: Path) -> None:
    result = extract_files(message_with_tnef(tnef), tmp_path)

    assert names(result) == ["winmail.dat"]
    assert result.files[0].sha256 == sha(tnef)
    assert result.files[0].origin == "attachment"
    assert result.problems == [
        f"Part 2 (winmail.dat): could not unpack TNEF ({reason}), kept the file as it is"
    ]
    assert_files_on_disk(result, tmp_path)


def test_tnef_checksum_mismatch_reported(tmp_path: Path) -> None:
    tnef = bytearray(build_tnef(_tnef_attachments()))
    data_end = tnef.index(DOCX_BYTES) + len(DOCX_BYTES)
    tnef[data_end] ^= 0xFF

    result = extract_files(message_with_tnef(bytes(tnef)), tmp_path)

    assert names(result) == ["Übersetzung – Entwurf.docx", "notes.txt"]
    assert result.files[0].sha256 == sha(DOCX_BYTES)
    assert result.problems == [
        "Part 2 (winmail.dat): TNEF checksum of 'Übersetzung – Entwurf.docx' is wrong, "
        "the file may be damaged"
    ]


def test_tnef_body_only_dropped(tmp_path: Path) -> None:
    raw = message_with_tnef(build_tnef([], body=b"Formatted text\x00"))

    result = extract_files(raw, tmp_path)

    assert names(result) == []
    assert result.problems == []
    assert_files_on_disk(result, tmp_path)


def test_tnef_empty_kept(tmp_path: Path) -> None:
    tnef = build_tnef([])

    result = extract_files(message_with_tnef(tnef), tmp_path)

    assert names(result) == ["winmail.dat"]
    assert result.problems == [
        "Part 2 (winmail.dat): TNEF contains neither attachments nor text, kept the file as it is"
    ]


# ZIP archives


def make_zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_message(archive: bytes, name: str = "docs.zip") -> bytes:
    return message_with_attachment(archive, name, "application", "zip")


UNPACK = ExtractionOptions(unpack_zip=True)


def test_zip_kept_by_default(tmp_path: Path) -> None:
    archive = make_zip([("a.txt", b"a")])

    result = extract_files(zip_message(archive), tmp_path)

    assert names(result) == ["docs.zip"]
    assert result.files[0].content_type == "application/zip"
    assert result.files[0].sha256 == sha(archive)


def test_zip_members_unpacked(tmp_path: Path) -> None:
    members = [
        ("de/Handbuch.docx", b"PK\x03\x04 manual"),
        ("fr/Handbuch.docx", b"PK\x03\x04 manuel"),
        ("readme.txt", b"read me"),
        ("empty-folder/", b""),
    ]
    archive = make_zip(members)

    result = extract_files(zip_message(archive), tmp_path, UNPACK)

    assert names(result) == ["Handbuch.docx", "Handbuch (2).docx", "readme.txt"]
    assert [extracted.origin for extracted in result.files] == ["zip"] * 3
    assert result.files[2].content_type == "text/plain"
    assert digests(result) == {
        "Handbuch.docx": sha(b"PK\x03\x04 manual"),
        "Handbuch (2).docx": sha(b"PK\x03\x04 manuel"),
        "readme.txt": sha(b"read me"),
    }
    assert result.problems == []
    assert_files_on_disk(result, tmp_path)


def test_zip_slip_names_reduced(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    archive = make_zip(
        [
            ("../../evil.txt", b"evil"),
            ("/etc/passwd", b"root"),
            ("..\\..\\win.ini", b"ini"),
            ("C:/Windows/system.ini", b"system"),
            ("sub/../../../../tmp/x.sh", b"sh"),
        ]
    )

    result = extract_files(zip_message(archive), workdir, UNPACK)

    assert names(result) == ["evil.txt", "passwd", "win.ini", "system.ini", "x.sh"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["work"]
    assert_files_on_disk(result, workdir)


def test_zip_member_limit(tmp_path: Path) -> None:
    archive = make_zip([(f"f{index}.txt", b"x") for index in range(6)])
    options = ExtractionOptions(unpack_zip=True, zip_max_members=5)

    result = extract_files(zip_message(archive), tmp_path, options)

    assert names(result) == ["docs.zip"]
    assert result.files[0].sha256 == sha(archive)
    assert result.problems == ["Part 2 (docs.zip): more than 5 members, kept the archive whole"]
    assert_files_on_disk(result, tmp_path)


def test_zip_size_limit(tmp_path: Path) -> None:
    archive = make_zip([(f"f{index}.txt", b"x" * 400) for index in range(3)])
    options = ExtractionOptions(unpack_zip=True, zip_max_total_bytes=1000)

    result = extract_files(zip_message(archive), tmp_path, options)

    assert names(result) == ["docs.zip"]
    assert result.problems == [
        "Part 2 (docs.zip): more than 1000 bytes when uncompressed, kept the archive whole"
    ]
    assert_files_on_disk(result, tmp_path)


def test_zip_size_limit_counts_nested(tmp_path: Path) -> None:
    inner = make_zip([("big.txt", b"y" * 900)], zipfile.ZIP_STORED)
    archive = make_zip([("a.txt", b"x" * 50), ("inner.zip", inner)])
    options = ExtractionOptions(unpack_zip=True, zip_max_total_bytes=1500)

    result = extract_files(zip_message(archive), tmp_path, options)

    assert names(result) == ["docs.zip"]
    assert result.problems == [
        "Part 2 (docs.zip): more than 1500 bytes when uncompressed, kept the archive whole"
    ]
    assert_files_on_disk(result, tmp_path)


def test_zip_nested_within_depth(tmp_path: Path) -> None:
    inner = make_zip([("inner.txt", b"inner")])
    archive = make_zip([("outer.txt", b"outer"), ("inner.zip", inner)])

    result = extract_files(zip_message(archive), tmp_path, UNPACK)

    assert names(result) == ["outer.txt", "inner.txt"]
    assert digests(result) == {"outer.txt": sha(b"outer"), "inner.txt": sha(b"inner")}
    assert result.problems == []
    assert_files_on_disk(result, tmp_path)


def test_zip_depth_limit(tmp_path: Path) -> None:
    innermost = make_zip([("deep.txt", b"deep")])
    middle = make_zip([("innermost.zip", innermost)])
    archive = make_zip([("outer.txt", b"outer"), ("middle.zip", middle)])

    result = extract_files(zip_message(archive), tmp_path, UNPACK)

    assert names(result) == ["docs.zip"]
    assert result.problems == [
        "Part 2 (docs.zip): archives nested deeper than 2 levels, kept the archive whole"
    ]
    assert_files_on_disk(result, tmp_path)


def _set_flag_bits(archive: bytes, flag: int) -> bytes:
    """Set general-purpose flag bits in every local and central directory header."""
    patched = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        for match in re.finditer(re.escape(signature), archive):
            position = match.start() + offset
            (flags,) = struct.unpack_from("<H", patched, position)
            struct.pack_into("<H", patched, position, flags | flag)
    return bytes(patched)


def test_zip_encrypted_member(tmp_path: Path) -> None:
    archive = _set_flag_bits(make_zip([("secret.txt", b"secret")], zipfile.ZIP_STORED), 0x1)

    result = extract_files(zip_message(archive), tmp_path, UNPACK)

    assert names(result) == ["docs.zip"]
    assert result.problems == [
        "Part 2 (docs.zip): member 'secret.txt' is encrypted, kept the archive whole"
    ]


def test_zip_corrupt_archive(tmp_path: Path) -> None:
    result = extract_files(zip_message(b"PK\x03\x04 not really a zip"), tmp_path, UNPACK)

    assert names(result) == ["docs.zip"]
    assert result.problems == [
        "Part 2 (docs.zip): not a readable ZIP archive (File is not a zip file), "
        "kept the archive whole"
    ]


def test_zip_damaged_member(tmp_path: Path) -> None:
    archive = bytearray(make_zip([("a.txt", b"hello world")], zipfile.ZIP_STORED))
    archive[archive.index(b"hello")] ^= 0x20

    result = extract_files(zip_message(bytes(archive)), tmp_path, UNPACK)

    assert names(result) == ["docs.zip"]
    assert result.problems == [
        "Part 2 (docs.zip): member 'a.txt' is damaged (Bad CRC-32 for file 'a.txt'), "
        "kept the archive whole"
    ]
    assert_files_on_disk(result, tmp_path)


def test_zip_symlink_member_skipped(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("real.txt", b"real")

    result = extract_files(zip_message(buffer.getvalue()), tmp_path, UNPACK)

    assert names(result) == ["real.txt"]
    assert result.problems == ["Part 2 (docs.zip): member 'link' is a symbolic link, skipped"]


def test_office_file_not_unpacked(tmp_path: Path) -> None:
    archive = make_zip([("word/document.xml", b"<w:document/>")])
    raw = message_with_attachment(archive, "Vertrag.docx", "application", "zip")

    result = extract_files(raw, tmp_path, UNPACK)

    assert names(result) == ["Vertrag.docx"]
    assert result.files[0].sha256 == sha(archive)


def _legacy_name_zip(placeholder: str, raw_name: bytes, extra: bytes = b"") -> bytes:
    """Build a ZIP whose member name is ``raw_name`` without the UTF-8 flag.

    zipfile always flags non-ASCII names, so an ASCII placeholder of the same length is
    written and then replaced.
    """
    assert len(placeholder) == len(raw_name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        info = zipfile.ZipInfo(placeholder)
        info.extra = extra
        archive.writestr(info, b"content")
    return buffer.getvalue().replace(placeholder.encode("ascii"), raw_name)


@pytest.mark.parametrize(
    ("archive", "expected"),
    [
        (_legacy_name_zip("Xbersicht.txt", b"\x9abersicht.txt"), "Übersicht.txt"),
        (_legacy_name_zip("XXbersicht.txt", "Übersicht.txt".encode()), "Übersicht.txt"),
        (
            _legacy_name_zip(
                "Angebot_FranXais.txt",
                b"Angebot_Fran\x87ais.txt",
                struct.pack("<HHB", 0x7075, 5 + len("Angebot Français.txt".encode()), 1)
                + struct.pack("<I", binascii.crc32(b"Angebot_Fran\x87ais.txt"))
                + "Angebot Français.txt".encode(),
            ),
            "Angebot Français.txt",
        ),
    ],
    ids=["cp437", "utf-8-without-flag", "unicode-path-extra-field"],
)
def test_zip_legacy_member_names(archive: bytes, expected: str, tmp_path: Path) -> None:
    result = extract_files(zip_message(archive), tmp_path, UNPACK)

    assert names(result) == [expected]
    assert result.files[0].sha256 == sha(b"content")


# Damaged messages


def test_broken_base64_reported(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b'Content-Type: application/pdf; name="report.pdf"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"QUJD\n"
        b"#### line damaged in transit ####\n"
        b"REVG\n"
        b"R0g\n"
        b"--b\n"
        b'Content-Type: application/pdf; name="odd.pdf"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"QUJDR\n"
        b"--b--\n"
    )

    result = extract_files(raw, tmp_path)

    # The damaged line contributes "linedamagedintransit", 20 characters, so the groups
    # after it stay aligned and decode.
    damaged = base64.b64decode("QUJDlinedamagedintransitREVGR0g=")
    assert names(result) == ["report.pdf", "odd.pdf"]
    assert digests(result) == {"report.pdf": sha(damaged), "odd.pdf": sha(b"ABC")}
    assert result.problems == [
        "Part 1 (report.pdf): invalid base64, decoded what was readable",
        "Part 2 (odd.pdf): invalid base64, decoded what was readable",
    ]


def test_concatenated_base64_decoded(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: application/octet-stream; name="glued.bin"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"QQ==\n"
        b"QkM=\n"
    )

    result = extract_files(raw, tmp_path)

    assert result.files[0].sha256 == sha(b"ABC")
    assert result.problems == []


def test_truncated_message_keeps_complete_parts(tmp_path: Path) -> None:
    raw = wire(
        b"Subject: cut off\n"
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b"Content-Type: text/plain\n"
        b"\n"
        b"Two files.\n"
        b"--b\n"
        b'Content-Type: application/pdf; name="complete.pdf"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"JVBERi0xLjcK\n"
        b"--b\n"
        b'Content-Type: application/pdf; name="cut.pdf"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"JVBERi0xLjcKJVBERi0xLjcK\n"
        b"JVBER"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["complete.pdf"]
    assert result.files[0].sha256 == sha(b"%PDF-1.7\n")
    assert result.problems == [
        "Part 3 (cut.pdf): the message ends inside this part, the incomplete file was skipped"
    ]
    assert_files_on_disk(result, tmp_path)


def test_missing_closing_boundary_reported(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b'Content-Type: application/pdf; name="a.pdf"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"JVBERi0xLjcK\n"
        b"--b\n"
        b"Content-Type: text/plain\n"
        b"\n"
        b"Regards\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["a.pdf"]
    assert result.problems == [
        "Part 2: closing MIME boundary missing, the message may be truncated"
    ]


def test_missing_closing_boundary_after_file(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b'Content-Type: multipart/alternative; boundary="c"\n'
        b"\n"
        b"--c\n"
        b"Content-Type: text/plain\n"
        b"\n"
        b"Hi\n"
        b"--c--\n"
        b"--b\n"
        b'Content-Type: application/pdf; name="a.pdf"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"JVBERi0xLjcK\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["a.pdf"]
    assert result.files[0].sha256 == sha(b"%PDF-1.7\n")
    assert result.problems == [
        "Part 2 (a.pdf): closing MIME boundary missing after this part, it may be incomplete"
    ]


def test_malformed_charset_8bit_part(tmp_path: Path) -> None:
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="a"\n'
        b"\n"
        b"--a\n"
        b'Content-Type: text/html; charset="utf\x00-8"\n'
        b"\n"
        b"<p>\xff</p>\n"
        b"--a\n"
        b'Content-Type: application/pdf; charset="utf\x00-8"; name="a.pdf"\n'
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"\xff\xfe\n"
        b"--a--\n"
    )

    result = extract_files(raw, tmp_path)

    assert names(result) == ["a.pdf"]
    assert result.files[0].sha256 == sha(b"\xff\xfe")
    assert result.problems == []


def test_multipart_without_boundary(tmp_path: Path) -> None:
    raw = wire(b"Content-Type: multipart/mixed\n\n--x\nContent-Type: text/plain\n\nhi\n--x--\n")

    result = extract_files(raw, tmp_path)

    assert names(result) == []
    assert result.problems == ["Part 1: multipart body without its boundary, contents skipped"]


def _deeply_nested(depth: int) -> bytes:
    raw = b"Content-Type: text/plain\n\ninnermost\n"
    for level in range(depth):
        boundary = b"n" + str(level).encode()
        raw = (
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\n\n'
            b"--" + boundary + b"\n" + raw + b"--" + boundary + b"--\n"
        )
    return raw


GARBAGE_INPUTS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00" * 1000, id="nul-bytes"),
    pytest.param(random.Random(7).randbytes(20000), id="random-bytes"),
    pytest.param(b"Subject: only headers", id="headers-only"),
    pytest.param(b"From: \xff\xfe\r\nSubject: =?utf-8?B?####?=\r\n\r\n", id="bad-headers"),
    pytest.param(b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n' * 50, id="repeat"),
    pytest.param(b"Content-Type: message/rfc822\r\n\r\n", id="empty-attached-message"),
    pytest.param(
        b'Content-Type: application/pdf; name="=?utf-8?B?=?="; name*0*=x\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n====",
        id="odd-parameters",
    ),
    pytest.param(_deeply_nested(300), id="deep-nesting"),
    pytest.param(
        b'Content-Type: multipart/mixed; boundary="a"\r\n\r\n--a\r\n'
        b"Content-Type: application/ms-tnef\r\n\r\n\x78\x9f\x3e\x22\x00\x00\xff\xff\r\n--a--\r\n",
        id="bad-tnef",
    ),
]


@pytest.mark.parametrize("raw", GARBAGE_INPUTS)
def test_garbage_input_never_raises(raw: bytes, tmp_path: Path) -> None:
    result = extract_files(raw, tmp_path, UNPACK)

    assert isinstance(result, ExtractionResult)
    assert_files_on_disk(result, tmp_path)


def test_deep_nesting_reported(tmp_path: Path) -> None:
    result = extract_files(_deeply_nested(60), tmp_path)

    assert result.problems == [
        "Part " + ".".join(["1"] * 50) + ": multiparts nested deeper than 50 levels, "
        "contents skipped"
    ]


def test_missing_workdir_raises(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        extract_files(OUTLOOK_MESSAGE, tmp_path / "missing")


def test_binary_stream_input(tmp_path: Path) -> None:
    result = extract_files(io.BytesIO(OUTLOOK_MESSAGE), tmp_path)

    assert names(result) == ["Vertrag Übersetzung.docx", "Preisliste.pdf"]


# Size


def test_sixty_attachments(tmp_path: Path) -> None:
    message = EmailMessage()
    message["Subject"] = "Many files"
    message.set_content("60 files")
    expected: list[tuple[str, bytes]] = []
    for index in range(60):
        data = random.Random(index).randbytes(1000 + index)
        name = f"Kapitel {index:02d}.docx" if index < 50 else "Anhang.pdf"
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        expected.append((name, data))

    result = extract_files(message.as_bytes(), tmp_path)

    expected_names = (
        [f"Kapitel {index:02d}.docx" for index in range(50)]
        + ["Anhang.pdf"]
        + [f"Anhang ({number}).pdf" for number in range(2, 11)]
    )
    assert names(result) == expected_names
    assert [extracted.sha256 for extracted in result.files] == [sha(data) for _, data in expected]
    assert result.problems == []
    assert_files_on_disk(result, tmp_path)


def test_large_attachment_memory(tmp_path: Path) -> None:
    data = random.Random(12).randbytes(12 * 1024 * 1024)
    raw = message_with_attachment(data, "large.pdf", "application", "pdf")

    tracemalloc.start()
    try:
        result = extract_files(raw, tmp_path)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    ratio = peak / len(raw)
    print(f"message {len(raw)} bytes, peak traced memory {peak} bytes ({ratio:.2f}x)")
    assert names(result) == ["large.pdf"]
    assert result.files[0].sha256 == sha(data)
    assert ratio < 4


def test_line_longer_than_read_chunk(tmp_path: Path) -> None:
    # An 8-bit body without line breaks, longer than one read of a message file.
    long_line = "é".encode() * (spool.READ_CHUNK_BYTES + 1000)
    after = random.Random(13).randbytes(30_000)
    raw = wire(
        b'Content-Type: multipart/mixed; boundary="b"\n'
        b"\n"
        b"--b\n"
        b'Content-Type: text/plain; charset="utf-8"; name="long.txt"\n'
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
    )
    raw += (
        long_line
        + b"\r\n"
        + wire(
            b"--b\n"
            b'Content-Type: application/pdf; name="after.pdf"\n'
            b"Content-Transfer-Encoding: base64\n"
            b"\n" + base64.encodebytes(after) + b"--b--\n"
        )
    )

    result = extract_files(raw, tmp_path)

    assert digests(result) == {"long.txt": sha(long_line), "after.pdf": sha(after)}
    assert result.problems == []


def test_spooled_parse_leaves_bodies_in_file(tmp_path: Path) -> None:
    data = random.Random(14).randbytes(3 * 1024 * 1024)
    path = tmp_path / "message.eml"
    path.write_bytes(message_with_attachment(data, "large.pdf", "application", "pdf"))

    with path.open("rb") as source:
        message, linesep, _bodies = spool.parse_file(source)

    payloads = [part.get_payload() for part in message.walk() if not part.is_multipart()]
    in_memory = sum(len(payload) for payload in payloads)
    assert linesep == "\n"
    assert in_memory < 1000, f"{in_memory} characters of payload in memory"


def test_expanding_writer_joins_split_placeholders() -> None:
    raw = message_with_attachment(random.Random(15).randbytes(5000), "a.pdf").replace(
        b"\n", b"\r\n"
    )
    source = io.BytesIO(raw)
    message, _linesep, bodies = spool.parse_file(source, min_run_bytes=1)
    attachment = list(message.walk())[-1]
    stored = attachment.get_payload()
    assert isinstance(stored, str)
    placeholder = stored.encode()
    out = io.BytesIO()

    writer = bodies.writer(out)
    for index in range(len(placeholder)):
        writer.write(placeholder[index : index + 1])
    writer.close()

    assert len(placeholder) < 100
    assert out.getvalue() == bodies.expand(stored).encode()
    assert out.getvalue() in raw
