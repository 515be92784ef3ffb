"""providers/http.py and providers/credentials.py: the one HTTP call every
adapter makes, its status table and hook, its logging, and credentials."""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import pytest

from providers.credentials import CredentialError, Credentials, redact
from providers.errors import (
    AuthError,
    BadRequest,
    ContentRejected,
    JobNotFound,
    MalformedResponse,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    Unavailable,
    VendorTimeout,
)
from providers.http import HeaderAuth, HttpProvider, status_error
from providers.types import Capability, JobState, JobStatus, Submitted
from tests.vendor_kit import Recorder, json_response, make_spec, mock_provider

KEY = "echo-SECRET-key-123"
BASE = "https://echo.example.test"


class Echo(HttpProvider):
    """The smallest adapter: everything but the transforms is the skeleton's."""

    id: ClassVar[str] = "echo"
    title: ClassVar[str] = "Echo"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.TXT2IMG})
    credentials: ClassVar[Credentials] = Credentials.one("echo_key")
    base_url_setting: ClassVar[str] = "echo_base_url"

    def make_auth(self, secrets: Mapping[str, str]) -> httpx.Auth:
        return HeaderAuth({"X-Key": secrets["echo_key"]})

    def error_for_status(self, response: httpx.Response, endpoint: str) -> ProviderError | None:
        if response.status_code == 451:  # the vendor's own meaning, ahead of the table
            return ContentRejected("HTTP 451")
        return super().error_for_status(response, endpoint)

    async def submit(self, spec: Any) -> Submitted:
        return await self.call("submit", _read_submit, path="/v1/submit", payload={"prompt": spec.params.prompt})

    async def poll(self, job_id: str) -> JobState:
        return await self.call("query", lambda body: JobState(status=JobStatus(body["status"])),
                               method="GET", path=f"/v1/jobs/{job_id}")


def _read_submit(body: dict[str, Any]) -> Submitted:
    if body.get("error"):
        raise BadRequest(str(body["error"]))
    return Submitted(job_id=str(body["id"]))


def echo(recorder: Recorder) -> Any:
    return mock_provider(Echo, recorder, BASE, echo_key=KEY)


async def test_request_carries_json_utf8_auth_and_accept() -> None:
    recorder = Recorder(json_response({"id": 7}))
    async with echo(recorder) as provider:
        submitted = await provider.submit(make_spec(prompt="一只猫"))
    assert submitted.job_id == "7"
    request = recorder.requests[0]
    assert str(request.url) == f"{BASE}/v1/submit"
    assert request.headers["X-Key"] == KEY
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    assert "一只猫".encode() in request.content  # not \\u escapes
    assert json.loads(request.content) == {"prompt": "一只猫"}


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequest), (401, AuthError), (403, AuthError), (402, QuotaExceeded), (404, Unavailable),
     (405, Unavailable), (422, BadRequest), (429, RateLimited), (500, Unavailable), (503, Unavailable)],
)
def test_default_status_table(status: int, error: type[ProviderError]) -> None:
    found = status_error(status, {})
    assert type(found) is error
    assert found.vendor_message == f"HTTP {status}"


def test_success_statuses_are_no_error() -> None:
    assert status_error(200, {}) is None
    assert status_error(302, {}) is None


def test_retry_after_is_kept() -> None:
    assert status_error(429, {"retry-after": "7"}).retry_after == 7.0
    assert status_error(503, {"retry-after": "12"}).retry_after == 12.0


async def test_vendor_hook_comes_before_the_table() -> None:
    async with echo(Recorder(httpx.Response(451))) as provider:
        with pytest.raises(ContentRejected):
            await provider.submit(make_spec())
    async with echo(Recorder(httpx.Response(403))) as provider:
        with pytest.raises(AuthError):
            await provider.submit(make_spec())


@pytest.mark.parametrize(
    ("exception", "error"),
    [(httpx.ConnectTimeout("timed out to https://x/?key=" + KEY), VendorTimeout),
     (httpx.ReadTimeout("read"), VendorTimeout),
     (httpx.ConnectError("refused https://x/?key=" + KEY), Unavailable)],
)
async def test_transport_errors_are_mapped_without_the_url(exception: Exception, error: type[ProviderError]) -> None:
    async with echo(Recorder(exception)) as provider:
        with pytest.raises(error) as caught:
            await provider.submit(make_spec())
    assert KEY not in str(caught.value) and "https://" not in str(caught.value)


async def test_body_that_is_not_json_is_malformed() -> None:
    async with echo(Recorder(httpx.Response(200, text="<html>gateway</html>"))) as provider:
        with pytest.raises(MalformedResponse):
            await provider.submit(make_spec())


async def test_errors_are_logged_once_with_secrets_redacted(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(json_response({"error": f"bad key {KEY}"}))
    caplog.set_level(logging.INFO, logger="providers")
    async with echo(recorder) as provider:
        with pytest.raises(BadRequest) as caught:
            await provider.submit(make_spec())
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    records = [r for r in caplog.records if r.name == "providers"]
    assert len(records) == 1
    assert "echo submit" in records[0].getMessage() and KEY not in records[0].getMessage()


async def test_get_with_a_path() -> None:
    recorder = Recorder(json_response({"status": "running"}))
    async with echo(recorder) as provider:
        state = await provider.poll("42")
    assert state.status is JobStatus.RUNNING
    assert recorder.requests[0].method == "GET" and recorder.requests[0].url.path == "/v1/jobs/42"


async def test_repr_never_shows_secrets() -> None:
    async with echo(Recorder(json_response({}))) as provider:
        assert KEY not in repr(provider) and KEY not in repr(provider.auth)


# ---- credentials ------------------------------------------------------------

TWO_MODES = Credentials((("zhiqite_app_code",), ("zhiqite_access_key_id", "zhiqite_access_key_secret")))


def settings(**values: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**values)


def test_first_complete_mode_wins() -> None:
    assert TWO_MODES.lookup(settings(zhiqite_app_code=" code ")) == {"zhiqite_app_code": "code"}
    pair = settings(zhiqite_access_key_id="id", zhiqite_access_key_secret="secret")
    assert TWO_MODES.lookup(pair) == {"zhiqite_access_key_id": "id", "zhiqite_access_key_secret": "secret"}


def test_nothing_set_is_not_configured() -> None:
    assert TWO_MODES.lookup(settings()) is None
    assert TWO_MODES.lookup(settings(zhiqite_app_code="  ")) is None


def test_half_a_mode_names_what_is_missing() -> None:
    with pytest.raises(CredentialError, match="ZHIQITE_ACCESS_KEY_SECRET must be set together with ZHIQITE_ACCESS_KEY_ID"):
        TWO_MODES.lookup(settings(zhiqite_access_key_id="id"))


def test_a_complete_mode_beats_a_half_one() -> None:
    assert TWO_MODES.lookup(settings(zhiqite_app_code="c", zhiqite_access_key_id="id")) == {"zhiqite_app_code": "c"}


def test_describe_says_what_to_set() -> None:
    assert TWO_MODES.describe() == "ZHIQITE_APP_CODE, or ZHIQITE_ACCESS_KEY_ID + ZHIQITE_ACCESS_KEY_SECRET"


def test_secret_str_values_are_read() -> None:
    from pydantic import SecretStr

    assert Credentials.one("echo_key").lookup(settings(echo_key=SecretStr("s"))) == {"echo_key": "s"}


async def test_from_settings_builds_or_declines() -> None:
    async with httpx.AsyncClient() as client:
        assert Echo.from_settings(settings(echo_key=None, echo_base_url=BASE), client) is None
        built = Echo.from_settings(settings(echo_key=KEY, echo_base_url=BASE + "/"), client)
        assert built is not None and built.base_url == BASE and built.secret("echo_key") == KEY


def test_redact() -> None:
    assert redact(f"a {KEY} b {KEY}", [KEY, ""]) == "a *** b ***"


async def test_unknown_job_404_is_not_job_not_found_by_default() -> None:
    # An unknown job is a body code at these vendors; a 404 means a wrong URL.
    async with echo(Recorder(httpx.Response(404))) as provider:
        with pytest.raises(Unavailable):
            await provider.poll("1")
    assert not issubclass(Unavailable, JobNotFound)
