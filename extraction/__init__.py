"""Turn one raw e-mail into the files a translation project should get.

extract_files walks the MIME tree, decodes attachments into uuid-named files in a
work directory, unpacks TNEF (winmail.dat) and optionally ZIP archives, and reports
damaged parts in plain English instead of raising.
"""

from .headers import parse_message_info
from .mime import extract_files
from .models import ExtractedFile, ExtractionOptions, ExtractionResult, MessageInfo
from .names import safe_filename

__all__ = [
    "ExtractedFile",
    "ExtractionOptions",
    "ExtractionResult",
    "MessageInfo",
    "extract_files",
    "parse_message_info",
    "safe_filename",
]
