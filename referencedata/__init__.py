"""Reference data a translation company needs before its first connector."""

from __future__ import annotations

import pycountry
import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import BudgetCode, Client, Language, Service, Specialization, User

SERVICES = (
    "Translation",
    "Translation and Proofreading",
    "Proofreading",
    "Machine Translation Post-editing",
    "Localization",
    "Desktop Publishing",
    "Transcription",
    "Subtitling",
    "Interpreting",
)

SPECIALIZATIONS = (
    "General",
    "Legal",
    "Medical",
    "Pharmaceutical",
    "Technical",
    "Financial",
    "Marketing",
    "Software and IT",
    "Patents",
    "Automotive",
)

# Fictitious sample clients on example.com, a domain reserved by RFC 2606.
SAMPLE_CLIENTS = (
    (
        "Northwind Pharma GmbH",
        "Greta Vogel",
        "greta.vogel@northwind.example.com",
        ("NWP-2026", "NWP-REG"),
    ),
    (
        "Contoso Legal LLP",
        "Daniel Okafor",
        "d.okafor@contoso-legal.example.com",
        ("CL-LIT", "CL-CORP"),
    ),
    ("Fabrikam Motors", "Aiko Tanaka", "aiko.tanaka@fabrikam.example.com", ("FM-MANUALS",)),
)

SAMPLE_USERS = (
    ("Maria Lopez", "maria.lopez@example.com"),
    ("Tomasz Nowak", "tomasz.nowak@example.com"),
)


def language_rows() -> list[tuple[str, str]]:
    """Return (ISO 639-1 code, English name) of every language that has one."""
    rows = [
        (language.alpha_2, language.name)
        for language in pycountry.languages
        if hasattr(language, "alpha_2")
    ]
    return sorted(rows, key=lambda row: row[1])


def seed(session: Session, *, samples: bool = True) -> dict[str, int]:
    """Insert what is missing and return how many rows of each kind were added.

    Running it again adds nothing, so it is safe in deploy scripts.
    """
    added = {"languages": 0, "services": 0, "specializations": 0, "clients": 0, "users": 0}

    existing = set(session.scalars(sa.select(Language.code)))
    for code, name in language_rows():
        if code not in existing:
            session.add(Language(code=code, name=name))
            added["languages"] += 1

    for model, names, key in (
        (Service, SERVICES, "services"),
        (Specialization, SPECIALIZATIONS, "specializations"),
    ):
        present = set(session.scalars(sa.select(model.name)))
        for name in names:
            if name not in present:
                session.add(model(name=name))
                added[key] += 1

    if samples:
        present = set(session.scalars(sa.select(Client.name)))
        for name, contact, email, codes in SAMPLE_CLIENTS:
            if name in present:
                continue
            client = Client(name=name, contact_name=contact, contact_email=email)
            client.budget_codes = [BudgetCode(code=code) for code in codes]
            session.add(client)
            added["clients"] += 1
        present = set(session.scalars(sa.select(User.email)))
        for name, email in SAMPLE_USERS:
            if email not in present:
                # No password: they can be Person Responsible but cannot log in.
                session.add(User(name=name, email=email, password_hash=None))
                added["users"] += 1

    session.commit()
    return added
