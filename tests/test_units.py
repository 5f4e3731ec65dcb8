"""Settings, secrets, providers and redirect checks, without servers."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet

from config import ConfigError, load_settings
from mailauth import SecretBox, load_providers
from web.security import safe_next


@pytest.fixture
def clean_env(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    for name in ("SECRET_KEY", "ENCRYPTION_KEYS", "OAUTH_PROVIDERS", "MAIL_CA_FILE", "LOG_FORMAT",
                 "BEAT_TICK_SECONDS", "DATABASE_URL", "LOG_ROUTINE_TASKS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_need_secret_key(clean_env, tmp_path) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY is not set; run `make env`"):
        load_settings(tmp_path / "absent.env")


def test_settings_need_encryption_keys(clean_env, tmp_path) -> None:
    clean_env.setenv("SECRET_KEY", "x" * 32)
    with pytest.raises(ConfigError, match="ENCRYPTION_KEYS is not set"):
        load_settings(tmp_path / "absent.env")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OAUTH_PROVIDERS", "{not json", "OAUTH_PROVIDERS is not valid JSON"),
        ("OAUTH_PROVIDERS", "[1, 2]", "must be a JSON object"),
        (
            "MAIL_CA_FILE",
            "/nonexistent/ca.pem",
            "MAIL_CA_FILE='/nonexistent/ca.pem' does not exist",
        ),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' is not valid; use text or json"),
        ("BEAT_TICK_SECONDS", "soon", "BEAT_TICK_SECONDS='soon' is not a number"),
        ("LOG_ROUTINE_TASKS", "maybe", "LOG_ROUTINE_TASKS='maybe' is not valid; use 1 or 0"),
    ],
)
def test_settings_reject_bad_values(clean_env, tmp_path, name, value, message) -> None:
    clean_env.setenv("SECRET_KEY", "x" * 32)
    clean_env.setenv("ENCRYPTION_KEYS", Fernet.generate_key().decode())
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path / "absent.env")
    assert message in str(error.value)


def test_settings_from_env_file(clean_env, tmp_path) -> None:
    key = Fernet.generate_key().decode()
    env_file = tmp_path / "dev.env"
    env_file.write_text(f"SECRET_KEY=abc\nENCRYPTION_KEYS={key}\nBEAT_TICK_SECONDS=2\n")
    settings = load_settings(env_file)
    assert settings.encryption_keys == (key,)
    assert settings.beat_tick_seconds == 2.0
    assert settings.log_routine_tasks is False
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("instance/mailroom.db")


def test_secret_box_round_trip_and_rotation() -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old = SecretBox([old_key])
    stored = old.encrypt("client-secret")
    assert b"client-secret" not in stored
    rotated_box = SecretBox([new_key, old_key])
    assert rotated_box.decrypt(stored) == "client-secret"
    rotated = rotated_box.rotate(stored)
    assert SecretBox([new_key]).decrypt(rotated) == "client-secret"
    with pytest.raises(ValueError, match="cannot be decrypted with ENCRYPTION_KEYS"):
        SecretBox([new_key]).decrypt(stored)
    assert "secret" not in repr(rotated_box)


def test_secret_box_rejects_bad_key() -> None:
    with pytest.raises(ValueError, match="is not a Fernet key"):
        SecretBox(["short"])


def test_default_providers_have_documented_scopes() -> None:
    providers = load_providers({})
    assert providers["google"].scopes == ("https://mail.google.com/",)
    assert providers["google"].authorization_params == {
        "access_type": "offline",
        "prompt": "consent",
    }
    assert set(providers["microsoft"].scopes) == {
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    }


def test_provider_overrides_and_additions() -> None:
    providers = load_providers(
        {
            "microsoft": {"token_url": "http://127.0.0.1:9/token"},
            "zoho": {
                "authorization_url": "http://127.0.0.1:9/auth",
                "token_url": "http://127.0.0.1:9/token",
                "scopes": ["ZohoMail.messages.ALL"],
            },
        }
    )
    assert providers["microsoft"].token_url == "http://127.0.0.1:9/token"
    assert providers["microsoft"].authorization_url.endswith("/oauth2/v2.0/authorize")
    assert providers["zoho"].label == "zoho"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x": {"authorization_url": "http://127.0.0.1/a"}}, "OAUTH_PROVIDERS['x'] is missing"),
        ({"google": {"colour": "blue"}}, "unknown fields ['colour']"),
        ({"google": "yes"}, "must be an object"),
    ],
)
def test_provider_errors(overrides, message) -> None:
    with pytest.raises(ValueError) as error:
        load_providers(overrides)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/"),
        (
            "/configuration/integration/smart-connectors/1",
            "/configuration/integration/smart-connectors/1",
        ),
        ("https://evil.example/", "/"),
        ("//evil.example/path", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("relative/path", "/"),
    ],
)
def test_safe_next(target, expected) -> None:
    assert safe_next(target, "/") == expected


def test_admin_guide_robot_code_example_parses() -> None:
    from pathlib import Path

    from robotcode import parse_robot_code

    guide = (Path(__file__).resolve().parent.parent / "docs" / "admin-guide.md").read_text()
    example = guide.split("```yaml", 1)[1].split("```", 1)[0]
    data = parse_robot_code(example)
    assert data["files_aggregation"] == "per_email"
    assert data["schedule"]["timezone"] == "Europe/Prague"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            [b"[CANNOT] Invalid mailbox name: adjacent hierarchy separators (0.001 + 0.000 secs)."],
            "[CANNOT] Invalid mailbox name: adjacent hierarchy separators",
        ),
        (
            b"Mailbox doesn't exist: Orders (0.001 + 0.000 + 0.001 secs).",
            "Mailbox doesn't exist: Orders",
        ),
        (b"Logged in", "Logged in"),
        (b"Done.", "Done"),
    ],
)
def test_server_reply_without_timings(reply: object, expected: str) -> None:
    from imapsession.session import _reply

    assert _reply(reply) == expected


def test_routine_task_lines_left_out(caplog: pytest.LogCaptureFixture) -> None:
    from logconfig import quiet_routine_tasks

    quiet_routine_tasks(("mailroom.connectors.enqueue_due",))
    trace = logging.getLogger("celery.app.trace")
    with caplog.at_level(logging.INFO):
        trace.info("Task %s[%s] succeeded in 0.01s: None", "mailroom.connectors.enqueue_due", "a1")
        trace.info("Task %s[%s] succeeded in 0.2s: None", "mailroom.connectors.scan", "b2")
        trace.error("Task %s[%s] raised: boom", "mailroom.connectors.enqueue_due", "c3")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Task mailroom.connectors.scan[b2] succeeded in 0.2s: None",
        "Task mailroom.connectors.enqueue_due[c3] raised: boom",
    ]
