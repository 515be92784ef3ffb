"""The aiohttp transport under PTB: what reaches the server, and how failures read."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from telegram import InputFile
from telegram.error import NetworkError, TimedOut
from telegram.request import RequestData
from telegram.request._requestparameter import RequestParameter

from bot.telegram_http import AiohttpRequest
from tests.fakes.server import serve
from tests.fakes.telegram import read_request

seen: list[dict[str, object]] = []


async def echo(request: Request) -> JSONResponse:
    params, files = await read_request(request)  # the fake Bot API's own, strict parsing
    fields: dict[str, object] = dict(params)
    fields.update({name: (f.filename, f.content_type, f.data) for name, f in files.items()})
    seen.append({"content_type": request.headers["content-type"].split(";")[0], "fields": fields})
    return JSONResponse({"ok": True, "result": True})


async def slow(request: Request) -> JSONResponse:
    await asyncio.sleep(1)
    return JSONResponse({"ok": True, "result": True})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    seen.clear()
    app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/slow", slow, methods=["POST"])])
    async with serve(app) as url:
        yield url


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpRequest]:
    request = AiohttpRequest(read_timeout=0.3)
    await request.initialize()
    yield request
    await request.shutdown()


async def test_parameters_are_form_fields_and_files_go_multipart(server: str, transport: AiohttpRequest) -> None:
    plain = RequestData([RequestParameter.from_input("chat_id", 42), RequestParameter.from_input("text", "hi <b>there</b>")])
    assert await transport.do_request(f"{server}/echo", "POST", plain) == (200, b'{"ok":true,"result":true}')
    photo = InputFile(b"\x89PNG fake bytes", filename="result.png")
    upload = RequestData([RequestParameter.from_input("chat_id", 42), RequestParameter.from_input("photo", photo)])
    await transport.do_request(f"{server}/echo", "POST", upload)
    form, multipart = seen
    assert form == {"content_type": "application/x-www-form-urlencoded", "fields": {"chat_id": "42", "text": "hi <b>there</b>"}}
    assert multipart["content_type"] == "multipart/form-data"
    fields = multipart["fields"]
    assert isinstance(fields, dict) and fields["chat_id"] == "42"
    assert fields["photo"] == ("result.png", "image/png", b"\x89PNG fake bytes")


async def test_a_slow_answer_is_timed_out(server: str, transport: AiohttpRequest) -> None:
    with pytest.raises(TimedOut):
        await transport.do_request(f"{server}/slow", "POST", RequestData([RequestParameter.from_input("chat_id", 1)]))


async def test_no_server_is_a_network_error(transport: AiohttpRequest) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    with pytest.raises(NetworkError, match="aiohttp"):
        await transport.do_request(f"http://127.0.0.1:{port}/echo", "POST")


async def test_used_before_initialize_or_after_shutdown_is_refused() -> None:
    request = AiohttpRequest()
    with pytest.raises(RuntimeError):
        await request.do_request("http://127.0.0.1:9/x", "POST")
    await request.initialize()
    await request.shutdown()
    with pytest.raises(RuntimeError):
        await request.do_request("http://127.0.0.1:9/x", "POST")
    await request.initialize()  # a shut-down transport can start again (PTB may re-initialize)
    await request.shutdown()


async def test_a_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """As with PTB's httpx transport: Telegram is often reached through a proxy."""
    targets: list[str] = []

    async def proxy(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        targets.append(scope["raw_path"].decode())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok":true,"result":true}'})

    async with serve(proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        request = AiohttpRequest()
        await request.initialize()
        try:
            status, _ = await request.do_request("http://api.telegram.invalid/botTOKEN/getMe", "POST")
        finally:
            await request.shutdown()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        bypassing = AiohttpRequest()
        await bypassing.initialize()
        try:
            with pytest.raises(NetworkError):  # NO_PROXY: straight to a port where nobody listens
                await bypassing.do_request("http://127.0.0.1:9/botTOKEN/getMe", "POST")
        finally:
            await bypassing.shutdown()
    assert status == 200
    assert targets == ["http://api.telegram.invalid/botTOKEN/getMe"]  # asked of the proxy, in absolute form
