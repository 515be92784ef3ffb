"""Operator configuration (PRODUCT.md §2). The variable names are a contract.

Loaded once, in ``bot.__main__``; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IdList = Annotated[frozenset[int], NoDecode]
WordList = Annotated[tuple[str, ...], NoDecode]


class ConfigError(Exception):
    """A bad or missing setting; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    telegram_bot_token: SecretStr
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_url: str = ""
    database_url: str = "sqlite:///data/drawbridge.db"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    public_base_url: str = ""
    default_provider: str = ""
    admin_user_ids: IdList = frozenset()
    allowed_user_ids: IdList = frozenset()
    allowed_chat_ids: IdList = frozenset()
    max_active_tasks_per_user: int = Field(default=3, ge=1)
    daily_tasks_per_user: int = Field(default=0, ge=0)
    task_timeout_seconds: int = Field(default=600, ge=10)
    banned_words: WordList = ()
    allow_private_urls: bool = False
    log_level: str = "INFO"
    log_format: str = "text"

    aichatapi_api_key: SecretStr | None = None
    aichatapi_base_url: str = "https://aichatapi.com"
    aichatapi_query_url: str = "https://open.aichatapi.com"
    # Requests per second (submits and queries together): 1 on the free tier.
    aichatapi_qps: float = Field(default=1.0, gt=0.0, le=100.0)
    apispace_token: SecretStr | None = None
    apispace_base_url: str = "https://23329.o.apispace.com"
    zhiqite_app_code: SecretStr | None = None
    zhiqite_access_key_id: SecretStr | None = None
    zhiqite_access_key_secret: SecretStr | None = None
    # Empty: the host that goes with the credential mode (providers/zhiqite.py).
    zhiqite_base_url: str = ""
    juhe_api_key: SecretStr | None = None
    juhe_base_url: str = "https://gpt.juhe.cn"
    aihuihua_api_key: SecretStr | None = None
    aihuihua_base_url: str = "https://api.aihuihua.com"
    # Several named instances of a vendor kind (TOML; providers/instances.py).
    providers_file: str = ""
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    # Any model the endpoint serves; a relay's own model name works too.
    openai_image_model: str = "gpt-image-1"
    # A midjourney-proxy: set = enabled; the secret only if the proxy has one.
    mj_proxy_base_url: str = ""
    mj_proxy_api_secret: SecretStr | None = None
    # An AUTOMATIC1111 / Forge webui with --api: set = enabled; user:pass for --api-auth.
    a1111_base_url: str = ""
    a1111_auth: SecretStr | None = None
    # A ComfyUI: set = enabled; a bearer token for a proxy in front; the
    # operator's API-format workflows, <capability>.json (shipped defaults for the rest).
    comfyui_base_url: str = ""
    comfyui_token: SecretStr | None = None
    comfyui_workflows_dir: str = ""
    sandbox_enabled: bool = False
    # Not part of the operator contract: how long a sandbox job pretends to take.
    sandbox_job_seconds: float = Field(default=4.0, ge=0.0, le=600.0)

    @field_validator("telegram_bot_token", mode="after")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value().strip()
        head, _, tail = token.partition(":")
        if not (head.isdigit() and tail):
            raise ValueError("must look like 123456:ABC... (from @BotFather)")
        return SecretStr(token)

    @field_validator(
        "telegram_api_url",
        "telegram_webhook_url",
        "public_base_url",
        "aichatapi_base_url",
        "aichatapi_query_url",
        "apispace_base_url",
        "zhiqite_base_url",
        "juhe_base_url",
        "aihuihua_base_url",
        "openai_base_url",
        "mj_proxy_base_url",
        "a1111_base_url",
        "comfyui_base_url",
    )
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http(s) URL")
        return value

    @field_validator("admin_user_ids", "allowed_user_ids", "allowed_chat_ids", mode="before")
    @classmethod
    def _id_list(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return frozenset(int(part) for part in value.split(",") if part.strip())
            except ValueError:
                raise ValueError("must be comma-separated integer ids") from None
        return value

    @field_validator("banned_words", mode="before")
    @classmethod
    def _word_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(w.strip().lower() for w in value.split(",") if w.strip())
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        value = value.lower()
        if value not in ("text", "json"):
            raise ValueError("must be text or json")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            if value.startswith(("postgresql://", "postgres://")):
                raise ValueError("PostgreSQL is not supported yet; use sqlite:///path")
            raise ValueError("must be sqlite:///path/to/file.db")
        return value

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def token(self) -> str:
        return self.telegram_bot_token.get_secret_value()

    def secrets(self) -> list[str]:
        """Every secret value, for log redaction."""
        values = [self.token]
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        return sorted(set(values), key=len, reverse=True)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and .env), or ConfigError with one line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = field.upper()
        if error["type"] == "missing":
            raise ConfigError(f"{variable} is required but not set") from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{variable} is invalid: {message}") from None
