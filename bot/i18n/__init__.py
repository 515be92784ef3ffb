"""Message catalogs and the lookup. Languages: en (default), zh."""

from __future__ import annotations

from bot.i18n import en, zh

CATALOGS: dict[str, dict[str, str]] = {"en": en.MESSAGES, "zh": zh.MESSAGES}
LANGUAGES = tuple(CATALOGS)
DEFAULT_LANGUAGE = "en"


def pick_language(override: str | None, language_code: str | None) -> str:
    """/settings wins; else Telegram's language_code (zh, zh-hans, zh-hant…)."""
    if override in CATALOGS:
        return override  # type: ignore[return-value]
    if language_code and language_code.lower().split("-")[0] in CATALOGS:
        return language_code.lower().split("-")[0]
    return DEFAULT_LANGUAGE


def t(language: str, key: str, **values: object) -> str:
    catalog = CATALOGS.get(language, CATALOGS[DEFAULT_LANGUAGE])
    template = catalog.get(key) or CATALOGS[DEFAULT_LANGUAGE][key]
    return template.format(**values) if values else template
