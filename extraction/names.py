"""File names: reading them from MIME headers, sanitizing them and keeping them unique."""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from email.message import Message
from email.utils import decode_params
from email.utils import unquote as unquote_param

from .headers import (
    as_latin1_text,
    decode_encoded_words,
    decode_with_charset,
    raw_header,
    unfold,
)

MAX_NAME_BYTES = 200
"""Maximum length of a sanitized name in UTF-8 bytes, which leaves room below the
255-byte limit of common file systems for suffixes such as " (2)"."""

_MAX_EXTENSION_BYTES = 32

_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"{prefix}{digit}" for prefix in ("COM", "LPT") for digit in "0123456789¹²³"]
)

# Bidirectional formatting characters can make "report\u202efdp.exe" display as
# "reportexe.pdf", so they are removed from names.
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_WHITESPACE_CONTROLS = re.compile(r"[\t\n\v\f\r]+")

# Python's built-in table (not the system's mime.types, which differs between machines)
# plus the formats a translation company receives most.
_MIME_TYPES = mimetypes.MimeTypes()
for _extension, _content_type in {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".rtf": "application/rtf",
    ".xlf": "application/xliff+xml",
    ".xliff": "application/xliff+xml",
    ".idml": "application/vnd.adobe.indesign-idml-package",
    ".msg": "application/vnd.ms-outlook",
    ".7z": "application/x-7z-compressed",
    ".rar": "application/vnd.rar",
}.items():
    _MIME_TYPES.add_type(_content_type, _extension)

_PREFERRED_EXTENSIONS = {
    "application/xml": ".xml",
    "text/xml": ".xml",
    "image/jpeg": ".jpg",
    "text/plain": ".txt",
    "message/rfc822": ".eml",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
}

_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def guess_extension(content_type: str | None) -> str:
    """Return the usual extension (with the dot) for a content type, or "" if unknown."""
    if not content_type:
        return ""
    normalized = content_type.split(";", 1)[0].strip().lower()
    preferred = _PREFERRED_EXTENSIONS.get(normalized)
    if preferred:
        return preferred
    return _MIME_TYPES.guess_extension(normalized) or ""


def guess_content_type(name: str) -> str:
    """Return the content type for a file name's extension, or application/octet-stream."""
    guessed, _encoding = _MIME_TYPES.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def normalize_content_type(declared: str, name: str) -> str:
    """Return a clean declared content type, or one guessed from ``name``.

    The guess replaces application/octet-stream and malformed values, because many
    mail clients send Office files with that generic type.
    """
    if _CONTENT_TYPE.fullmatch(declared) and declared != "application/octet-stream":
        return declared
    return guess_content_type(name)


def split_extension(name: str) -> tuple[str, str]:
    """Split ``name`` into stem and extension, keeping ".tar" with its compression suffix.

    A final dot part that is long or contains whitespace ("v1.2 final") is no extension.
    """
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    extension = name[dot:]
    too_long = len(extension.encode("utf-8")) > _MAX_EXTENSION_BYTES
    if too_long or any(char.isspace() for char in extension):
        return name, ""
    stem = name[:dot]
    if stem.lower().endswith(".tar") and len(stem) > 4:
        return stem[:-4], stem[-4:] + extension
    return stem, extension


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _fit_name(stem: str, suffix: str, extension: str) -> str:
    """Join the parts, shortening ``stem`` so the result fits MAX_NAME_BYTES."""
    room = MAX_NAME_BYTES - len((suffix + extension).encode("utf-8"))
    stem = _truncate_utf8(stem, max(room, 1)).rstrip(". ")
    return stem + suffix + extension


def sanitize_name(name: str) -> str:
    """Apply the rules of safe_filename, returning "" where it would use the fallback."""
    text = unicodedata.normalize("NFC", name)
    segments = [segment for segment in re.split(r"[/\\]", text) if segment.strip()]
    text = segments[-1] if segments else ""
    text = _WHITESPACE_CONTROLS.sub(" ", text)
    text = "".join(
        char
        for char in text
        if unicodedata.category(char) not in ("Cc", "Cs") and char not in _BIDI_CONTROLS
    )
    while True:
        trimmed = text.strip().lstrip(".").rstrip(".")
        if trimmed == text:
            break
        text = trimmed
    if not text:
        return ""

    if text.split(".", 1)[0].rstrip().upper() in _WINDOWS_RESERVED:
        text = "_" + text
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        stem, extension = split_extension(text)
        text = _fit_name(stem, "", extension)
    return text


def safe_filename(
    name: str | None, *, fallback_stem: str = "file", content_type: str | None = None
) -> str:
    """Turn an untrusted attachment name into a display name that is safe as a file name.

    Directory parts (after / or \\), control and bidirectional formatting characters,
    leading dots and trailing dots or spaces are removed. Windows device names (CON,
    NUL, COM1 and so on) get a "_" prefix. The result is NFC-normalized and at most
    MAX_NAME_BYTES UTF-8 bytes long, keeping the extension. An empty result becomes
    ``fallback_stem`` plus the extension guessed from ``content_type``.

    Characters that Windows forbids in names (<>:"|?*) are kept, because the name is
    displayed and never used as a path here.
    """
    cleaned = sanitize_name(name or "")
    if cleaned:
        return cleaned
    stem = sanitize_name(fallback_stem) or "file"
    return _fit_name(stem, "", guess_extension(content_type))


class UniqueNames:
    """Names already used in one result, compared case-insensitively.

    Case is ignored because the files usually end up on Windows or macOS file systems,
    where "Report.pdf" and "report.pdf" are the same file.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, name: str) -> str:
        """Reserve ``name``, adding " (2)", " (3)" and so on before the extension if taken."""
        candidate = name
        stem, extension = split_extension(name)
        number = 1
        while candidate.casefold() in self._taken:
            number += 1
            candidate = _fit_name(stem, f" ({number})", extension)
        self._taken.add(candidate.casefold())
        return candidate


def _split_params(value: str) -> list[tuple[str, str]]:
    """Split a structured header value at semicolons outside quoted strings.

    The first entry is the main value with an empty parameter value.
    """
    segments: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == ";" and not in_quotes:
            segments.append("".join(current))
            current = []
            continue
        current.append(char)
    segments.append("".join(current))

    params = [(segments[0].strip().lower(), "")]
    for segment in segments[1:]:
        key, separator, param_value = segment.partition("=")
        if separator:
            params.append((key.strip().lower(), param_value.strip()))
    return params


def _param_text(header_value: str, param: str, notes: list[str]) -> str | None:
    """Decode parameter ``param`` of a raw header value, or return None if absent.

    An RFC 2231 value (``filename*=`` or ``filename*0*=`` continuations) wins over a
    plain one, as RFC 6266 recommends. A plain value may contain RFC 2047 encoded-words,
    which Outlook and Gmail send although RFC 2047 forbids them in quoted strings.
    """
    text = as_latin1_text(unfold(header_value))
    try:
        params = decode_params(_split_params(text))
    except (TypeError, ValueError):
        # decode_params fails when "name*" and "name*0*" are mixed, because it sorts
        # None with numbers. The plain parameters are still usable.
        notes.append("malformed RFC 2231 parameters, used the plain ones")
        params = [(key, value) for key, value in _split_params(text) if "*" not in key]
    plain: str | None = None
    for key, value in params[1:]:
        if key != param:
            continue
        if isinstance(value, tuple):
            charset, _language, quoted = value
            data = unquote_param(quoted).encode("latin-1")
            return decode_with_charset(data, charset, notes)
        if plain is None:
            plain = unquote_param(value)
    if plain is None:
        return None
    if plain.startswith('"') and plain.count('"') == 1:
        plain = plain[1:]
    return decode_encoded_words(plain, notes)


def part_filename(part: Message, notes: list[str]) -> str | None:
    """Return the decoded, unsanitized file name of a MIME part, or None.

    Content-Disposition ``filename`` comes first, then Content-Type ``name``.
    Decoding damage is appended to ``notes``.
    """
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        value = raw_header(part, header)
        if value is None:
            continue
        name = _param_text(value, param, notes)
        if name and name.strip():
            return name
    return None
