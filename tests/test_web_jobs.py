"""Project and quote pages, file downloads, and the JSON API the forms use."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from models import (
    AuthMethod,
    BudgetCode,
    Client,
    Connector,
    Job,
    JobFile,
    JobKind,
    Language,
    Service,
    Specialization,
    User,
)
from referencedata import seed

START = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


def add_jobs(services: Any, kind: JobKind, count: int, prefix: str) -> list[int]:
    """Add ``count`` jobs, each a minute newer than the one before, and return their ids."""
    with services.db.session() as session:
        client = session.scalars(sa.select(Client).where(Client.name == "Lark Media")).first()
        client = client or Client(name="Lark Media")
        jobs = [
            Job(
                kind=kind,
                name=f"{prefix} {number:02d}",
                client=client,
                created_at=START + timedelta(minutes=number),
            )
            for number in range(1, count + 1)
        ]
        session.add_all(jobs)
        session.commit()
        return [job.id for job in jobs]


def store_file(services: Any, tmp_path: Path, job_id: int, name: str, content: bytes) -> int:
    source = tmp_path / "upload"
    source.write_bytes(content)
    storage_name = services.store.add(source)
    with services.db.session() as session:
        stored = JobFile(
            job_id=job_id,
            original_name=name,
            storage_name=storage_name,
            content_type="application/pdf",
            size=len(content),
            sha256="0" * 64,
        )
        session.add(stored)
        session.commit()
        return stored.id


@pytest.fixture
def full_job(services: Any) -> int:
    """A project with every field set, made by a connector, without files."""
    with services.db.session() as session:
        seed(session, samples=False)
        client = Client(name="Kestrel Motors", budget_codes=[BudgetCode(code="KM-MANUALS")])
        language = {
            row.code: row
            for row in session.scalars(
                sa.select(Language).where(Language.code.in_(["en", "de", "ja"]))
            )
        }
        connector = Connector(
            name="Kestrel manuals",
            client=client,
            host="imap.example.com",
            username="manuals@example.com",
            auth_method=AuthMethod.PASSWORD,
        )
        job = Job(
            kind=JobKind.PROJECT,
            name="Service manual 2026",
            client=client,
            budget_code="KM-MANUALS",
            connector=connector,
            person_responsible=User(name="Maria Lopez", email="maria.lopez@example.test"),
            source_language=language["en"],
            target_languages=[language["de"], language["ja"]],
            service=session.scalars(sa.select(Service).where(Service.name == "Translation")).one(),
            specialization=session.scalars(
                sa.select(Specialization).where(Specialization.name == "Automotive")
            ).one(),
            source_sender="Aiko Tanaka <aiko.tanaka@kestrel.test>",
            source_subject="Manual for translation",
            source_date=datetime(2026, 1, 9, 16, 30, tzinfo=UTC),
            source_message_id="<manual-1@kestrel.test>",
            created_at=START,
        )
        session.add(job)
        session.commit()
        return job.id


# Lists ----------------------------------------------------------------------


def job_links(html: str) -> list[str]:
    return re.findall(r'<a href="/jobs/\d+">([^<]+)</a>', html)


def job_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<a href="/jobs/(\d+)">', html)]


def test_project_list_paginates_newest_first(logged_in, services) -> None:
    add_jobs(services, JobKind.PROJECT, 51, "Project")
    add_jobs(services, JobKind.QUOTE, 2, "Quote")

    first = logged_in.get("/projects")
    assert first.status_code == 200
    names = job_links(first.text)
    assert len(names) == 50
    assert names[0] == "Project 51"
    assert names[-1] == "Project 02"
    assert "51 projects, newest first." in first.text
    newest_id, oldest_shown = job_ids(first.text)[0], job_ids(first.text)[-1]
    assert f'href="/projects?before={oldest_shown}">Older</a>' in first.text
    assert ">Newer</span>" in first.text  # nothing is newer than the first page

    second = logged_in.get(f"/projects?before={oldest_shown}")
    assert job_links(second.text) == ["Project 01"]
    assert "51 projects, newest first." in second.text
    assert ">Older</span>" in second.text
    back = logged_in.get(f"/projects?after={job_ids(second.text)[0]}")
    # Fewer than a page is newer, so "Newer" shows the full newest page.
    assert job_links(back.text) == names
    assert job_ids(back.text)[0] == newest_id

    assert logged_in.get("/projects?before=abc").status_code == 404
    assert logged_in.get("/projects?before=%C2%B2").status_code == 404  # a Unicode digit
    assert logged_in.get("/projects?before=999999").status_code == 404


def test_job_list_cursors_walk_the_whole_list(logged_in, services) -> None:
    add_jobs(services, JobKind.PROJECT, 120, "Project")
    add_jobs(services, JobKind.QUOTE, 3, "Quote")
    seen: list[str] = []
    page = logged_in.get("/projects")
    pages = [page]
    while "Older</a>" in page.text:
        older = re.search(r'href="(/projects\?before=\d+)">Older</a>', page.text)
        assert older is not None
        page = logged_in.get(older.group(1))
        pages.append(page)
    for listed in pages:
        seen.extend(job_links(listed.text))
    assert seen == [f"Project {number:02}" for number in range(120, 0, -1)]
    assert [len(job_links(listed.text)) for listed in pages] == [50, 50, 20]

    # Newer from the last page goes back to the middle page, a full one.
    middle_first = job_ids(pages[1].text)[0]
    newer = re.search(r'href="(/projects\?after=\d+)">Newer</a>', pages[2].text)
    assert newer is not None
    back = logged_in.get(newer.group(1))
    assert job_ids(back.text)[0] == middle_first
    assert job_links(back.text) == job_links(pages[1].text)

    # A quote's id is no cursor in the project list.
    quote_id = job_ids(logged_in.get("/quotes").text)[0]
    assert logged_in.get(f"/projects?before={quote_id}").status_code == 404


def test_cursor_orders_ties_by_id(logged_in, services) -> None:
    with services.db.session() as session:
        client = Client(name="Lark Media")
        session.add_all(
            Job(kind=JobKind.PROJECT, name=f"Same {number:02d}", client=client, created_at=START)
            for number in range(1, 61)
        )
        session.commit()
    first = logged_in.get("/projects")
    older = re.search(r'href="(/projects\?before=\d+)">Older</a>', first.text)
    assert older is not None
    second = logged_in.get(older.group(1))
    assert job_links(first.text) + job_links(second.text) == [
        f"Same {number:02d}" for number in range(60, 0, -1)
    ]


def test_job_count_follows_new_jobs(logged_in, services) -> None:
    add_jobs(services, JobKind.PROJECT, 2, "Project")
    assert "2 projects, newest first." in logged_in.get("/projects").text
    add_jobs(services, JobKind.PROJECT, 1, "Late")
    assert "3 projects, newest first." in logged_in.get("/projects").text
    assert "1 quote, newest first." not in logged_in.get("/quotes").text
    add_jobs(services, JobKind.QUOTE, 1, "Quote")
    assert "1 quote, newest first." in logged_in.get("/quotes").text


def test_quote_list_shows_only_quotes(logged_in, services) -> None:
    add_jobs(services, JobKind.PROJECT, 3, "Project")
    add_jobs(services, JobKind.QUOTE, 2, "Quote")
    page = logged_in.get("/quotes")
    assert page.status_code == 200
    assert job_links(page.text) == ["Quote 02", "Quote 01"]
    assert "Older" not in page.text  # one page needs no page links


def test_empty_list_says_so(logged_in) -> None:
    page = logged_in.get("/quotes")
    assert page.status_code == 200
    assert "No quotes yet." in page.text


def test_list_row_columns(logged_in, services, tmp_path, full_job) -> None:
    store_file(services, tmp_path, full_job, "manual.pdf", b"%PDF-1.7 one")
    store_file(services, tmp_path, full_job, "parts.pdf", b"%PDF-1.7 two")
    page = logged_in.get("/projects")
    row = page.text.split(f"<td>{full_job}</td>", 1)[1].split("</tr>", 1)[0]
    assert f'<a href="/jobs/{full_job}">Service manual 2026</a>' in row
    assert "<td>Kestrel Motors</td>" in row
    assert "en → de, ja" in row
    assert "<td>2</td>" in row
    assert ">Kestrel manuals</a>" in row
    assert "Aiko Tanaka &lt;aiko.tanaka@kestrel.test&gt;" in row
    assert "Manual for translation" in row
    assert "2026-01-09 16:30 UTC" in row
    assert "2026-01-10 09:00 UTC" in row


def test_job_page_shows_all_fields(logged_in, services, tmp_path, full_job) -> None:
    file_id = store_file(services, tmp_path, full_job, "Übersetzung.pdf", b"%PDF-1.7 x" * 300)
    page = logged_in.get(f"/jobs/{full_job}")
    assert page.status_code == 200
    for text in (
        "Service manual 2026", "Project", "Kestrel Motors", "KM-MANUALS",
        "Maria Lopez (maria.lopez@example.test)", "English (en)", "German (de), Japanese (ja)",
        "Translation", "Automotive", "Kestrel manuals",
        "Aiko Tanaka &lt;aiko.tanaka@kestrel.test&gt;", "Manual for translation",
        "2026-01-09 16:30 UTC", "&lt;manual-1@kestrel.test&gt;", "2026-01-10 09:00 UTC",
        "Übersetzung.pdf", "3.0 kB", 'title="3000 bytes"',
    ):  # fmt: skip
        assert text in page.text, text
    assert f'href="/jobs/{full_job}/files/{file_id}"' in page.text


def test_unknown_job_is_404(logged_in) -> None:
    assert logged_in.get("/jobs/999").status_code == 404


def test_anonymous_is_sent_to_login(client, full_job) -> None:
    for url in ("/projects", "/quotes", f"/jobs/{full_job}"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next="), url


# Downloads ----------------------------------------------------------------


def test_download_sends_file_bytes(logged_in, services, tmp_path, full_job) -> None:
    content = bytes(range(256)) * 40
    file_id = store_file(services, tmp_path, full_job, "Übersetzung 1.pdf", content)
    with logged_in.get(f"/jobs/{full_job}/files/{file_id}") as response:
        assert response.status_code == 200
        assert response.data == content
        assert response.headers["Content-Type"] == "application/pdf"
        disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%C3%9Cbersetzung%201.pdf" in disposition


def test_download_of_other_jobs_file_is_404(logged_in, services, tmp_path, full_job) -> None:
    (other_job,) = add_jobs(services, JobKind.QUOTE, 1, "Other")
    file_id = store_file(services, tmp_path, full_job, "manual.pdf", b"%PDF")
    assert logged_in.get(f"/jobs/{other_job}/files/{file_id}").status_code == 404
    assert logged_in.get(f"/jobs/{full_job}/files/{file_id + 1}").status_code == 404


def test_download_missing_from_store_is_404(logged_in, services, tmp_path, full_job) -> None:
    file_id = store_file(services, tmp_path, full_job, "manual.pdf", b"%PDF")
    with services.db.session() as session:
        services.store.remove(session.get(JobFile, file_id).storage_name)
    assert logged_in.get(f"/jobs/{full_job}/files/{file_id}").status_code == 404


# API ------------------------------------------------------------------------


@pytest.fixture
def many_clients(services: Any) -> None:
    with services.db.session() as session:
        for number in range(25):
            session.add(Client(name=f"Zenith Branch {number:02d}"))
        session.add(Client(name="Big Zenith AG"))
        session.add(Client(name="100% Translations"))
        session.add(Client(name="Under_score Ltd"))
        session.add(
            Client(name="Aurora", budget_codes=[BudgetCode(code="B-2"), BudgetCode(code="A-1")])
        )
        session.commit()


def test_client_search_ignores_case(logged_in, many_clients) -> None:
    response = logged_in.get("/api/clients?q=AURO")
    assert response.status_code == 200
    assert [row["name"] for row in response.json] == ["Aurora"]
    assert isinstance(response.json[0]["id"], int)


def test_client_search_limits_to_20(logged_in, many_clients) -> None:
    names = [row["name"] for row in logged_in.get("/api/clients?q=zenith").json]
    assert len(names) == 20
    assert names[0] == "Zenith Branch 00"  # names that start with the text come first
    assert "Big Zenith AG" not in names


def test_client_search_prefix_first(logged_in, many_clients) -> None:
    names = [row["name"] for row in logged_in.get("/api/clients?q=zenith ag").json]
    assert names == ["Big Zenith AG"]
    names = [row["name"] for row in logged_in.get("/api/clients?q=zenith branch 1").json]
    assert names == [f"Zenith Branch {number}" for number in range(10, 20)]


def test_client_search_treats_wildcards_as_text(logged_in, many_clients) -> None:
    assert [r["name"] for r in logged_in.get("/api/clients?q=%25").json] == ["100% Translations"]
    assert [r["name"] for r in logged_in.get("/api/clients?q=r_s").json] == ["Under_score Ltd"]


def test_client_search_without_text(logged_in, many_clients) -> None:
    names = [row["name"] for row in logged_in.get("/api/clients").json]
    assert names[:3] == ["100% Translations", "Aurora", "Big Zenith AG"]
    assert len(names) == 20


def test_budget_codes_of_client(logged_in, services, many_clients) -> None:
    with services.db.session() as session:
        aurora = session.scalars(sa.select(Client.id).where(Client.name == "Aurora")).one()
        plain = session.scalars(sa.select(Client.id).where(Client.name == "Big Zenith AG")).one()
    assert logged_in.get(f"/api/clients/{aurora}/budget-codes").json == ["A-1", "B-2"]
    assert logged_in.get(f"/api/clients/{plain}/budget-codes").json == []
    missing = logged_in.get("/api/clients/9999/budget-codes")
    assert missing.status_code == 404
    assert missing.json == {"error": "Client 9999 does not exist."}


def test_api_needs_login(client: FlaskClient, many_clients) -> None:
    for url in ("/api/clients?q=a", "/api/clients/1/budget-codes"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.json == {"error": "Not logged in; log in to Mailroom and try again."}


def test_job_page_shows_deadline_and_notes(logged_in, services, seeded) -> None:
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from models import Client, Job, JobKind

    with services.db.session() as session:
        client = session.scalars(sa.select(Client)).first()
        job = Job(
            kind=JobKind.PROJECT,
            name="Leaflet",
            client=client,
            deadline=datetime(2026, 12, 9, 9, 15, tzinfo=UTC),
            notes="Use the NWP glossary.",
        )
        session.add(job)
        session.commit()
        job_id = job.id
    page = logged_in.get(f"/jobs/{job_id}")
    assert "2026-12-09 09:15 UTC" in page.text
    assert "Use the NWP glossary." in page.text


def test_missing_pages_keep_the_layout(logged_in) -> None:
    for path in ("/jobs/999999", "/projects?before=abc", "/no-such-page"):
        page = logged_in.get(path)
        assert page.status_code == 404, path
        assert "<title>Not found · Mailroom</title>" in page.text
        assert 'href="/">Go to the dashboard</a>' in page.text
        assert 'rel="icon"' in page.text
