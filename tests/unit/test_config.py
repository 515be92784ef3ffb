"""bot/config.py load_settings, and `python -m bot check` as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No setting leaks in from the developer's environment or a .env file."""
    names = {name.upper() for name in Settings.model_fields}
    for key in list(os.environ):
        if key.upper() in names:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    return TOKEN


def config_error(**env: str) -> str:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with pytest.raises(ConfigError) as info:
            load_settings()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message, repr(message)
    return message


# --------------------------------------------------------------------------- #
# Defaults and the token
# --------------------------------------------------------------------------- #


def test_defaults(token: str) -> None:
    s = load_settings()
    assert s.token == TOKEN
    assert s.telegram_api_url == "https://api.telegram.org"
    assert s.telegram_webhook_url == ""
    assert s.database_url == "sqlite:///data/drawbridge.db"
    assert s.sqlite_path == Path("data/drawbridge.db")
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert s.public_base_url == "" and s.default_provider == ""
    assert s.admin_user_ids == s.allowed_user_ids == s.allowed_chat_ids == frozenset()
    assert (s.max_active_tasks_per_user, s.daily_tasks_per_user, s.task_timeout_seconds) == (3, 0, 600)
    assert s.banned_words == ()
    assert s.allow_private_urls is False
    assert (s.log_level, s.log_format) == ("INFO", "text")
    assert s.zhiqite_base_url == ""  # the adapter picks the host by credential mode
    assert s.juhe_base_url == "https://gpt.juhe.cn"
    assert s.sandbox_enabled is False


def test_missing_token() -> None:
    message = config_error()
    assert "TELEGRAM_BOT_TOKEN" in message
    assert "required" in message


@pytest.mark.parametrize("bad", ["abc", "123456", "123456:", ":ABCDEF", "abc:def", "12a:xyz", " "])
def test_malformed_token(bad: str) -> None:
    message = config_error(TELEGRAM_BOT_TOKEN=bad)
    assert message.startswith("TELEGRAM_BOT_TOKEN")


def test_malformed_token_value_not_echoed() -> None:
    message = config_error(TELEGRAM_BOT_TOKEN="SuperSecretValue-not-a-token")
    assert "TELEGRAM_BOT_TOKEN" in message
    assert "SuperSecretValue" not in message


def test_token_whitespace_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", f"  {TOKEN}\n")
    assert load_settings().token == TOKEN


# --------------------------------------------------------------------------- #
# Other variables
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("port", ["abc", "70000", "-1", "80.5", ""])
def test_bad_http_port(token: str, port: str) -> None:
    assert config_error(HTTP_PORT=port).startswith("HTTP_PORT")


def test_good_http_port(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "9090")
    assert load_settings().http_port == 9090


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TELEGRAM_API_URL", "ftp://api.telegram.org"),
        ("TELEGRAM_API_URL", "api.telegram.org"),
        ("PUBLIC_BASE_URL", "bot.example.com"),
        ("PUBLIC_BASE_URL", "https://"),
        ("TELEGRAM_WEBHOOK_URL", "file:///etc/passwd"),
        ("ZHIQITE_BASE_URL", "not a url"),
        ("JUHE_BASE_URL", "//gpt.juhe.cn"),
    ],
)
def test_bad_url(token: str, variable: str, value: str) -> None:
    message = config_error(**{variable: value})
    assert message.startswith(variable)
    assert "URL" in message


def test_urls_lose_trailing_slash(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://bot.example.com/")
    monkeypatch.setenv("TELEGRAM_API_URL", "http://127.0.0.1:8081/")
    s = load_settings()
    assert s.public_base_url == "https://bot.example.com"
    assert s.telegram_api_url == "http://127.0.0.1:8081"


def test_id_lists(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_USER_IDS", "1, 22 ,333")
    monkeypatch.setenv("ALLOWED_USER_IDS", "7")
    monkeypatch.setenv("ALLOWED_CHAT_IDS", "-1001234567890,-42,")
    s = load_settings()
    assert s.admin_user_ids == frozenset({1, 22, 333})
    assert s.allowed_user_ids == frozenset({7})
    assert s.allowed_chat_ids == frozenset({-1001234567890, -42})


def test_empty_id_list(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_USER_IDS", "")
    assert load_settings().admin_user_ids == frozenset()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ADMIN_USER_IDS", "1,x"), ("ADMIN_USER_IDS", "1;2"), ("ALLOWED_USER_IDS", "@alice"), ("ALLOWED_CHAT_IDS", "1.5")],
)
def test_bad_id_list(token: str, variable: str, value: str) -> None:
    message = config_error(**{variable: value})
    assert message.startswith(variable)


def test_banned_words_lowercased(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANNED_WORDS", "Foo, BAR ,,Ünïcode Word,")
    assert load_settings().banned_words == ("foo", "bar", "ünïcode word")


@pytest.mark.parametrize(("value", "expected"), [("text", "text"), ("JSON", "json"), ("Json", "json")])
def test_log_format(token: str, monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("LOG_FORMAT", value)
    assert load_settings().log_format == expected


@pytest.mark.parametrize("value", ["xml", "", "yaml"])
def test_bad_log_format(token: str, value: str) -> None:
    assert config_error(LOG_FORMAT=value).startswith("LOG_FORMAT")


def test_log_level(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert load_settings().log_level == "DEBUG"
    assert config_error(LOG_LEVEL="verbose").startswith("LOG_LEVEL")


@pytest.mark.parametrize("url", ["postgresql://user:pw@localhost/db", "postgres://localhost/db"])
def test_postgresql_url_clear_message(token: str, url: str) -> None:
    message = config_error(DATABASE_URL=url)
    assert message.startswith("DATABASE_URL")
    assert "PostgreSQL" in message and "not supported" in message
    assert "pw" not in message


def test_other_database_url(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_error(DATABASE_URL="mysql://localhost/db").startswith("DATABASE_URL")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///var/db/x.db")
    assert load_settings().sqlite_path == Path("var/db/x.db")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MAX_ACTIVE_TASKS_PER_USER", "0"), ("DAILY_TASKS_PER_USER", "-1"), ("TASK_TIMEOUT_SECONDS", "5"),
     ("ALLOW_PRIVATE_URLS", "maybe"), ("SANDBOX_ENABLED", "sometimes")],
)
def test_bad_numbers_and_booleans(token: str, variable: str, value: str) -> None:
    assert config_error(**{variable: value}).startswith(variable)


def test_env_file_in_cwd_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "TELEGRAM_BOT_TOKEN=555:fromdotenv\nHTTP_PORT=9999\nBANNED_WORDS=Alpha,Beta\n", encoding="utf-8"
    )
    s = load_settings()
    assert s.token == "555:fromdotenv"
    assert s.http_port == 9999
    assert s.banned_words == ("alpha", "beta")


def test_environment_beats_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("TELEGRAM_BOT_TOKEN=555:fromdotenv\n", encoding="utf-8")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    assert load_settings().token == TOKEN


def test_env_file_errors_name_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TELEGRAM_BOT_TOKEN=1:a\nHTTP_PORT=eighty\n", encoding="utf-8")
    assert config_error().startswith("HTTP_PORT")


def test_secrets_lists_token_and_vendor_keys(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIQITE_APP_CODE", "zq-app-code-123")
    monkeypatch.setenv("ZHIQITE_ACCESS_KEY_ID", "zq-key-id")
    monkeypatch.setenv("ZHIQITE_ACCESS_KEY_SECRET", "zq-key-secret-456")
    monkeypatch.setenv("JUHE_API_KEY", "juhe-key-789")
    monkeypatch.setenv("AICHATAPI_API_KEY", "aichat-key")
    monkeypatch.setenv("APISPACE_TOKEN", "apispace-token")
    monkeypatch.setenv("AIHUIHUA_API_KEY", "aihuihua-key")
    s = load_settings()
    secrets = s.secrets()
    for value in (TOKEN, "zq-app-code-123", "zq-key-id", "zq-key-secret-456", "juhe-key-789",
                  "aichat-key", "apispace-token", "aihuihua-key"):
        assert value in secrets
    assert "https://zhiqite.market.alicloudapi.com" not in secrets
    assert len(secrets) == len(set(secrets))
    # longest first, so a secret containing another is replaced whole
    assert [len(v) for v in secrets] == sorted((len(v) for v in secrets), reverse=True)


def test_repr_hides_token_and_keys(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUHE_API_KEY", "juhe-key-789")
    s = load_settings()
    for text in (repr(s), str(s), f"{s!r}"):
        assert TOKEN not in text
        assert TOKEN.split(":")[1] not in text
        assert "juhe-key-789" not in text


def test_overrides_argument(token: str) -> None:
    assert load_settings(http_port=1234).http_port == 1234
    with pytest.raises(ConfigError, match="^HTTP_PORT"):
        load_settings(http_port=-5)


# --------------------------------------------------------------------------- #
# python -m bot check
# --------------------------------------------------------------------------- #


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), **extra}


TWO_RELAYS = """
[[providers]]
id = "relay-a"
kind = "openai"
base_url = "{dead}/v1"
secret_env = "RELAY_A_KEY"
model = "flux-1-schnell"

[[providers]]
id = "relay-b"
kind = "openai"
base_url = "{dead}/v1"
secret_env = "RELAY_B_KEY"
model = "dall-e-3"
price = 3
"""


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """The four `check` runs, started together to keep the suite fast."""
    dead = f"http://127.0.0.1:{_closed_port()}"  # loopback only: no network in tests
    cases = {
        "ok": _cli_env(TELEGRAM_BOT_TOKEN="123:abc"),
        "no_token": _cli_env(),
        "zhiqite": _cli_env(TELEGRAM_BOT_TOKEN="123:abc", ZHIQITE_APP_CODE="app-code-secret", ZHIQITE_BASE_URL=dead),
        "bad_default": _cli_env(
            TELEGRAM_BOT_TOKEN="123:abc", ZHIQITE_APP_CODE="app-code-secret", ZHIQITE_BASE_URL=dead,
            DEFAULT_PROVIDER="juhe",
        ),
    }
    files = tmp_path_factory.mktemp("providers-files")
    (files / "two.toml").write_text(TWO_RELAYS.format(dead=dead), "utf-8")
    (files / "unset.toml").write_text(TWO_RELAYS.format(dead=dead).replace("RELAY_B_KEY", "NOT_SET_KEY"), "utf-8")
    cases["instances"] = _cli_env(
        TELEGRAM_BOT_TOKEN="123:abc", PROVIDERS_FILE=str(files / "two.toml"),
        RELAY_A_KEY="relay-a-secret", RELAY_B_KEY="relay-b-secret",
    )
    cases["instance_unset"] = _cli_env(
        TELEGRAM_BOT_TOKEN="123:abc", PROVIDERS_FILE=str(files / "unset.toml"), RELAY_A_KEY="relay-a-secret",
    )
    procs = {}
    for name, env in cases.items():
        cwd = tmp_path_factory.mktemp(f"cli-{name}")
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "bot", "check"], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def test_cli_check_ok_lists_sandbox(cli_runs: dict) -> None:
    run = cli_runs["ok"]
    assert run.returncode == 0, run.stderr
    assert "sandbox" in run.stdout
    vendor_lines = [line for line in run.stdout.splitlines() if line.startswith("  sandbox")]
    assert vendor_lines and "(default)" in vendor_lines[0]
    assert "txt2img" in vendor_lines[0]
    assert "123:abc" not in run.stdout + run.stderr


def test_cli_check_without_token(cli_runs: dict) -> None:
    run = cli_runs["no_token"]
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "TELEGRAM_BOT_TOKEN" in lines[0]
    assert run.stdout == ""


def test_cli_check_with_zhiqite(cli_runs: dict) -> None:
    run = cli_runs["zhiqite"]
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("  zhiqite (default):") for line in lines), run.stdout
    assert "sandbox" not in run.stdout
    # without PUBLIC_BASE_URL, the capabilities needing it are marked
    assert "needs PUBLIC_BASE_URL" in run.stdout
    assert "app-code-secret" not in run.stdout + run.stderr


def test_cli_check_unconfigured_default(cli_runs: dict) -> None:
    run = cli_runs["bad_default"]
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "DEFAULT_PROVIDER" in lines[0]
    assert "juhe" in lines[0]


def test_cli_check_lists_each_providers_file_instance(cli_runs: dict) -> None:
    run = cli_runs["instances"]
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("  relay-a (default) [model flux-1-schnell]: ") and "edit" in line for line in lines), run.stdout
    # dall-e-3 makes images from text only: its instance says so.
    assert any(line.startswith("  relay-b [model dall-e-3]: txt2img") and "edit" not in line for line in lines), run.stdout
    assert "sandbox" not in run.stdout
    assert "relay-a-secret" not in run.stdout + run.stderr and "relay-b-secret" not in run.stdout + run.stderr


def test_cli_check_names_an_instance_whose_secret_is_unset(cli_runs: dict) -> None:
    run = cli_runs["instance_unset"]
    assert run.returncode == 2
    assert run.stderr.strip() == "drawbridge: PROVIDERS_FILE entry 'relay-b' (openai): NOT_SET_KEY is not set"
