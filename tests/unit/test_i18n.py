"""bot/i18n: the en and zh catalogs agree, every message formats, and every key
the code asks for exists."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from bot.i18n import CATALOGS, DEFAULT_LANGUAGE, LANGUAGES, pick_language, t
from bot.i18n import en, zh

BOT_DIR = Path(__file__).resolve().parents[2] / "bot"


def placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


class Dummy(dict):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def test_languages() -> None:
    assert LANGUAGES == ("en", "zh")
    assert DEFAULT_LANGUAGE == "en"
    assert CATALOGS["en"] is en.MESSAGES and CATALOGS["zh"] is zh.MESSAGES


def test_same_keys() -> None:
    missing_in_zh = set(en.MESSAGES) - set(zh.MESSAGES)
    missing_in_en = set(zh.MESSAGES) - set(en.MESSAGES)
    assert not missing_in_zh, f"missing in zh: {sorted(missing_in_zh)}"
    assert not missing_in_en, f"missing in en: {sorted(missing_in_en)}"


@pytest.mark.parametrize("key", sorted(en.MESSAGES))
def test_same_placeholders(key: str) -> None:
    assert placeholders(en.MESSAGES[key]) == placeholders(zh.MESSAGES[key]), key


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_formats(language: str) -> None:
    for key, template in CATALOGS[language].items():
        assert template.strip(), key
        names = placeholders(template)
        # plain names only: no attribute/index access a user value could abuse
        assert all(re.fullmatch(r"[a-z_]+", n) for n in names), (key, names)
        text = template.format_map(Dummy())
        for name in names:
            assert f"<{name}>" in text, (key, name)
        # t() with every value given formats the same way
        assert t(language, key, **{n: f"<{n}>" for n in names}) == text


def test_messages_are_translated() -> None:
    def words(template: str) -> str:
        text = re.sub(r"\{[a-z_]+\}|<[^>]+>", "", template)
        return "".join(re.findall(r"[A-Za-z]+", text))

    untranslated = [k for k in en.MESSAGES if words(en.MESSAGES[k]) and en.MESSAGES[k] == zh.MESSAGES[k]]
    assert not untranslated, untranslated


def test_t_formats_values() -> None:
    for language in LANGUAGES:
        text = t(language, "err_flag_twice", flag="--ar")
        assert "--ar" in text and "{" not in text
        assert "Ann" in t(language, "start_greeting", name="Ann")
        text = t(language, "err_too_many_active", count=3, limit=3)
        assert text.count("3") >= 2 and "{" not in text
    assert t("en", "err_flag_twice", flag="--ar") != t("zh", "err_flag_twice", flag="--ar")


def test_t_unknown_language_falls_back_to_english() -> None:
    assert t("fr", "btn_upscale") == en.MESSAGES["btn_upscale"]
    assert t("", "tasks_header") == en.MESSAGES["tasks_header"]


def test_t_unknown_key_raises() -> None:
    with pytest.raises(KeyError):
        t("en", "no_such_key")


@pytest.mark.parametrize(
    ("override", "language_code", "expected"),
    [
        (None, None, "en"),
        (None, "en", "en"),
        (None, "en-GB", "en"),
        (None, "zh", "zh"),
        (None, "zh-hans", "zh"),
        (None, "zh-Hant", "zh"),
        (None, "ZH-CN", "zh"),
        (None, "pt-br", "en"),
        (None, "", "en"),
        (None, "fr", "en"),
        ("en", "zh-hans", "en"),  # /settings wins
        ("zh", "en", "zh"),
        ("zh", None, "zh"),
        ("fr", "zh-hans", "zh"),  # an unknown override is ignored
        ("", "zh", "zh"),
    ],
)
def test_pick_language(override: str | None, language_code: str | None, expected: str) -> None:
    assert pick_language(override, language_code) == expected


# --------------------------------------------------------------------------- #
# Keys used by the code exist
# --------------------------------------------------------------------------- #

_SOURCES = {path: path.read_text("utf-8") for path in BOT_DIR.rglob("*.py") if "i18n" not in path.parts}
# t(<language expr>, "key"  — a literal key, not a prefix being concatenated
_T_LITERAL = re.compile(r"(?<![\w.])t\(\s*[^,()]+,\s*[\"']([a-z_]+)[\"'](?!\s*\+)")
_T_FSTRING = re.compile(r"(?<![\w.])t\(\s*[^,()]+,\s*f[\"']([a-z_]+)\{")
_T_CONCAT = re.compile(r"(?<![\w.])t\(\s*[^,()]+,\s*[\"']([a-z_]+)[\"']\s*\+")
_PARSE_ERRORS = re.compile(r"ParseError\(\s*[\"']([a-z_]+)[\"']")


def test_source_scan_finds_calls() -> None:
    literal = {k for src in _SOURCES.values() for k in _T_LITERAL.findall(src)}
    # sanity: the scan sees the calls we know are there
    assert {"help", "err_internal", "caption", "status_queued"} <= literal


@pytest.mark.parametrize("path", sorted(_SOURCES), ids=lambda p: str(p.relative_to(BOT_DIR)))
def test_literal_keys_exist(path: Path) -> None:
    source = _SOURCES[path]
    keys = set(_T_LITERAL.findall(source)) | set(_PARSE_ERRORS.findall(source))
    for language in LANGUAGES:
        missing = sorted(k for k in keys if k not in CATALOGS[language])
        assert not missing, f"{path.name}: {missing} missing in {language}"


def test_prefixes_used_are_known() -> None:
    prefixes = {p for src in _SOURCES.values() for p in _T_FSTRING.findall(src) + _T_CONCAT.findall(src)}
    assert prefixes <= {"err_", "fail_", "st_", "cmd_", "policy_"}, prefixes
    assert {"err_", "st_", "cmd_"} <= prefixes  # the scan is not vacuous


def test_keyboard_labels_exist() -> None:
    labels = re.findall(r"button\(\s*\"(btn_[a-z_]+)\"", _SOURCES[BOT_DIR / "keyboards.py"])
    assert sorted(set(labels)) == ["btn_reroll", "btn_upscale", "btn_vary"]
    for language in LANGUAGES:
        assert all(label in CATALOGS[language] for label in [*labels, "btn_all", "btn_originals_gone", "btn_sending"])


def test_command_menu_keys() -> None:
    from bot.app import MENU_COMMANDS

    for language in LANGUAGES:
        for name in MENU_COMMANDS:
            assert f"cmd_{name}" in CATALOGS[language]


def test_group_policy_keys() -> None:
    from bot.handlers.settings import POLICIES

    for language in LANGUAGES:
        for policy in POLICIES:
            assert f"policy_{policy}" in CATALOGS[language], policy


def test_status_keys() -> None:
    from storage.models import TaskStatus

    for language in LANGUAGES:
        for status in TaskStatus:
            assert f"st_{status.value}" in CATALOGS[language], status


def test_routing_error_keys() -> None:
    import providers.registry as registry

    reasons = set(re.findall(r"\"(unknown_provider|provider_cannot|none_capable)\"", Path(registry.__file__).read_text()))
    assert reasons == {"unknown_provider", "provider_cannot", "none_capable"}
    for language in LANGUAGES:
        for reason in reasons:
            assert f"err_{reason}" in CATALOGS[language]


def test_failure_keys_for_every_error_kind() -> None:
    from providers.errors import ERROR_KINDS

    # kinds the engine records itself, besides the vendor error kinds
    engine_kinds = set()
    for src in _SOURCES.values():
        engine_kinds |= set(re.findall(r"\.fail\(\s*\w+,\s*\"([a-z_]+)\"", src))
    assert "cannot_deliver" in engine_kinds
    kinds = (set(ERROR_KINDS) | engine_kinds) - {"deadline"}  # deadline has its own formatted key
    for language in LANGUAGES:
        missing = sorted(k for k in kinds if f"fail_{k}" not in CATALOGS[language])
        assert not missing, f"{language}: {missing}"
        assert "fail_deadline" in CATALOGS[language]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_valid_telegram_html(language: str) -> None:
    """Messages go out with parse_mode=HTML; a stray '<id>' would make
    Telegram refuse the whole message. Checked with the fake's strict parser."""
    from tests.fakes.telegram import ApiError, parse_html

    for key, template in CATALOGS[language].items():
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        text = template.format(**{name: "x" for name in names})
        try:
            parse_html(text)
        except ApiError as exc:
            pytest.fail(f"{language}:{key} is not valid HTML: {exc}")


@pytest.mark.parametrize("language", ["en", "zh"])
def test_no_message_key_is_written_twice(language: str) -> None:
    """A repeated key in a dict literal silently keeps only the last text
    (err_prompt_too_long once had two meanings this way)."""
    import ast
    from pathlib import Path

    source = Path(__file__).resolve().parents[2] / "bot" / "i18n" / f"{language}.py"
    keys = [node.value for d in ast.walk(ast.parse(source.read_text("utf-8"))) if isinstance(d, ast.Dict)
            for node in d.keys if isinstance(node, ast.Constant)]
    assert sorted({k for k in keys if keys.count(k) > 1}) == []
