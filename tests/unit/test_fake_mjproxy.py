"""FakeMjProxy over real loopback HTTP: both flavours' routes, codes,
lifecycle, buttons, MODAL, callbacks and pictures."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.mjproxy import FakeMjProxy, data_uri, sample_png
from tests.fakes.server import serve

SECRET = "mj-secret-1"
FAST = {"queue_seconds": 0.02, "run_seconds": 0.08}


@contextlib.asynccontextmanager
async def running(flavour: str = "novicezk", *, frozen: bool = True, **options: Any
                  ) -> AsyncIterator[tuple[FakeMjProxy, httpx.AsyncClient]]:
    """A served fake; ``frozen``: its clock moves only by ``advance``."""
    if frozen:
        options.setdefault("clock", lambda: 1000.0)
    fake = FakeMjProxy(flavour, **{**FAST, **options})
    headers = {"mj-api-secret": options["api_secret"]} if options.get("api_secret") else {}
    try:
        async with serve(fake.app) as url, httpx.AsyncClient(base_url=url,
                                                             headers=headers) as client:
            yield fake, client
    finally:
        await fake.aclose()


async def submit(client: httpx.AsyncClient, route: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/mj/{route}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def fetch(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/mj/task/{task_id}/fetch")
    assert response.status_code == 200
    task: dict[str, Any] = response.json()
    return task


async def done(fake: FakeMjProxy, client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    fake.advance(10)
    return await fetch(client, task_id)


async def picture(client: httpx.AsyncClient, url: str) -> Image.Image:
    response = await client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(response.content))
    img.load()
    return img


def has_grid_lines(img: Image.Image) -> bool:
    rgb = img.convert("RGB")
    w, h = rgb.size
    dark = (20, 20, 20)
    return rgb.getpixel((w // 2, h // 4)) == dark and rgb.getpixel((w // 4, h // 2)) == dark


async def imagine_done(fake: FakeMjProxy, client: httpx.AsyncClient,
                       prompt: str = "a red fox") -> dict[str, Any]:
    answer = await submit(client, "submit/imagine", prompt=prompt)
    assert answer["code"] == 1
    return await done(fake, client, answer["result"])


# ---- imagine, fetch, list ---------------------------------------------------------


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_imagine_lifecycle_fetch_and_list(flavour: str) -> None:
    async with running(flavour, progress_steps=4) as (fake, client):
        answer = await submit(client, "submit/imagine", prompt="  a red fox --ar 3:2 ",
                              state="chat-7", botType="MID_JOURNEY", unknownField=[1])
        assert answer["code"] == 1 and answer["description"] == "提交成功"
        task_id = answer["result"]
        assert task_id.isdigit() and len(task_id) == 16

        task = await fetch(client, task_id)
        assert task["status"] == "SUBMITTED" and task["progress"] == "0%"
        assert task["action"] == "IMAGINE" and task["prompt"] == "a red fox --ar 3:2"
        assert task["description"] == "/imagine a red fox --ar 3:2"
        assert task["state"] == "chat-7" and isinstance(task["submitTime"], int)

        fake.advance(0.03)  # into IN_PROGRESS, step 0 of 4
        running_task = await fetch(client, task_id)
        assert running_task["status"] == "IN_PROGRESS" and running_task["progress"] == "20%"
        preview = await picture(client, running_task["imageUrl"])
        fake.advance(0.04)
        later = await fetch(client, task_id)
        assert later["status"] == "IN_PROGRESS" and later["progress"] == "60%"
        assert later["imageUrl"] != running_task["imageUrl"]

        final = await done(fake, client, task_id)
        assert final["status"] == "SUCCESS" and final["progress"] == "100%"
        assert final["finishTime"] >= final["startTime"] >= final["submitTime"]
        assert final["properties"]["finalPrompt"] == "a red fox --ar 3:2"
        grid = await picture(client, final["imageUrl"])
        assert grid.size == (512, 340) and has_grid_lines(grid)
        assert preview.width < grid.width
        if flavour == "trueai":
            assert len(final["buttons"]) == 9 and len(final["imageUrls"]) == 4
            cell = await picture(client, final["imageUrls"][1]["url"])
            assert cell.size == (256, 170)
        else:
            assert "buttons" not in final and "imageUrls" not in final

        listed = (await client.post("/mj/task/list-by-condition",
                                    json={"ids": [task_id, "404404"]})).json()
        assert [t["id"] for t in listed] == [task_id]
        assert (await client.post("/mj/task/list-by-condition", json={})).json() == []

        unknown = await client.get("/mj/task/1234/fetch")
        assert unknown.content == b""
        assert unknown.status_code == (204 if flavour == "trueai" else 200)


async def test_result_files_expire() -> None:
    async with running(url_ttl=60) as (fake, client):
        final = await imagine_done(fake, client)
        fake.advance(61)
        assert (await client.get(final["imageUrl"])).status_code == 403


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_auth(flavour: str) -> None:
    fake = FakeMjProxy(flavour, api_secret=SECRET)
    try:
        async with serve(fake.app) as url, httpx.AsyncClient(base_url=url) as client:
            for headers in ({}, {"mj-api-secret": "wrong"}):
                response = await client.post("/mj/submit/imagine", json={"prompt": "x"},
                                             headers=headers)
                assert response.status_code == 401
                assert response.text == ("Authorization header missing."
                                         if flavour == "trueai" else "")
            assert (await client.get("/mj/task/1/fetch")).status_code == 401
            ok = await client.post("/mj/submit/imagine", json={"prompt": "x"},
                                   headers={"mj-api-secret": SECRET})
            assert ok.json()["code"] == 1
    finally:
        await fake.aclose()


# ---- codes 22, 23, 24, 4, 9 ---------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_queue_codes(flavour: str) -> None:
    async with running(flavour, concurrency=1, queue_size=2) as (fake, client):
        first = await submit(client, "submit/imagine", prompt="one")
        second = await submit(client, "submit/imagine", prompt="two")
        third = await submit(client, "submit/imagine", prompt="three")
        # The executor's queue was empty when "two" came: code 1, though it waits.
        assert first["code"] == 1 and second["code"] == 1
        assert third["code"] == 22 and third["description"] == "排队中，前面还有1个任务"
        assert third["properties"]["numberOfQueues"] == 1
        assert (await fetch(client, second["result"]))["status"] == "NOT_START"
        assert (await fetch(client, first["result"]))["status"] == "SUBMITTED"
        full = await submit(client, "submit/imagine", prompt="four")
        assert (full["code"], full["result"]) == ((9, None) if flavour == "trueai"
                                                  else (23, None))
        fake.advance(0.1)  # "one" done, "two" runs, "three" waits
        assert (await fetch(client, first["result"]))["status"] == "SUCCESS"
        assert (await fetch(client, second["result"]))["status"] == "SUBMITTED"
        assert (await fetch(client, third["result"]))["status"] == "NOT_START"
        assert (await done(fake, client, third["result"]))["status"] == "SUCCESS"


async def test_banned_prompt() -> None:
    async with running(banned_words=("nsfwword", "blood")) as (_, client):
        answer = await submit(client, "submit/imagine", prompt="a NSFWWord cat")
        assert answer == {"code": 24, "description": "可能包含敏感词", "result": None,
                          "properties": {"promptEn": "a NSFWWord cat",
                                         "bannedWord": "NSFWWord"}}
        assert (await submit(client, "submit/imagine", prompt="bloodhound"))["code"] == 1


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_validation_errors(flavour: str) -> None:
    async with running(flavour) as (fake, client):
        blank = await submit(client, "submit/imagine", prompt="  ")
        assert (blank["code"], blank["description"]) == (4, "prompt不能为空")
        not_uri = await submit(client, "submit/imagine", prompt="x", base64Array=["iVBORw0K"])
        assert (not_uri["code"], not_uri["description"]) == (4, "base64格式错误")
        not_image = data_uri(b"definitely not a png")
        assert (await submit(client, "submit/imagine", prompt="x",
                             base64Array=[not_image]))["code"] == 4
        good = await submit(client, "submit/imagine", prompt="x",
                            base64Array=[data_uri(sample_png(seed=1))])
        assert good["code"] == 1
        task = await done(fake, client, good["result"])
        assert task["prompt"].startswith("http") and task["prompt"].endswith(" x")

        wrong_type = await client.post("/mj/submit/imagine", json={"prompt": ["x"]})
        assert wrong_type.status_code == 400
        bad_enum = await client.post("/mj/submit/blend", json={
            "base64Array": [data_uri(sample_png())] * 2, "dimensions": "WIDE"})
        assert bad_enum.status_code == 400
        form = await client.post("/mj/submit/imagine", content=b"prompt=x",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415
        missing = await client.post("/mj/submit/nothing", json={})
        assert missing.status_code == 404


async def test_faults() -> None:
    async with running() as (fake, client):
        fake.fail_next(9)
        answer = await submit(client, "submit/imagine", prompt="x")
        assert (answer["code"], answer["description"]) == (9, "提交失败，系统异常")
        fake.fail_next("auth")
        assert (await client.get("/mj/task/1/fetch")).status_code == 401
        fake.fail_task_next("[Invalid parameter] Invalid value")
        failing = await submit(client, "submit/imagine", prompt="x")
        task = await done(fake, client, failing["result"])
        assert task["status"] == "FAILURE" and task["progress"] == ""
        assert task["failReason"] == "[Invalid parameter] Invalid value"


# ---- change / action ------------------------------------------------------------------


async def test_change_on_novicezk() -> None:
    async with running() as (fake, client):
        grid = await imagine_done(fake, client)
        up = await submit(client, "submit/change", taskId=grid["id"], action="UPSCALE",
                          index=2)
        assert up["code"] == 1
        upscaled = await done(fake, client, up["result"])
        assert upscaled["action"] == "UPSCALE" and upscaled["status"] == "SUCCESS"
        assert upscaled["description"] == f"/up {grid['id']} U2"
        img = await picture(client, upscaled["imageUrl"])
        assert img.size == (512, 512) and not has_grid_lines(img)

        again = await submit(client, "submit/change", taskId=upscaled["id"],
                             action="VARIATION", index=1)
        assert (again["code"], again["description"]) == (4, "关联任务不允许执行变化")
        missing = await submit(client, "submit/change", taskId="9", action="UPSCALE", index=1)
        assert (missing["code"], missing["description"]) == (3, "关联任务不存在或已失效")
        assert (await submit(client, "submit/change", taskId=grid["id"], action="UPSCALE",
                             index=5))["code"] == 4
        assert (await submit(client, "submit/change", taskId=grid["id"],
                             action="DESCRIBE"))["code"] == 4
        fresh = await submit(client, "submit/imagine", prompt="y")
        early = await submit(client, "submit/change", taskId=fresh["result"],
                             action="VARIATION", index=1)
        assert (early["code"], early["description"]) == (4, "关联任务状态错误")
        reroll = await submit(client, "submit/change", taskId=grid["id"], action="REROLL")
        rerolled = await done(fake, client, reroll["result"])
        assert rerolled["action"] == "REROLL"
        assert has_grid_lines(await picture(client, rerolled["imageUrl"]))


async def test_trueai_upscale_then_vary_strong_and_subtle() -> None:
    async with running("trueai") as (fake, client):
        grid = await imagine_done(fake, client)
        u2 = next(b["customId"] for b in grid["buttons"] if b["label"] == "U2")
        assert u2 == f"MJ::JOB::upsample::2::{grid['properties']['messageHash']}"
        up = await submit(client, "submit/action", taskId=grid["id"], customId=u2)
        upscaled = await done(fake, client, up["result"])
        assert upscaled["action"] == "UPSCALE" and upscaled["parentId"] == grid["id"]
        labels = {b["label"]: b for b in upscaled["buttons"]}
        for label in ("Vary (Strong)", "Vary (Subtle)", "Zoom Out 2x", "Zoom Out 1.5x",
                      "Custom Zoom", "Upscale (Subtle)", "Upscale (Creative)", "Vary (Region)"):
            assert label in labels
        assert {b["emoji"] for b in upscaled["buttons"]} >= {"⬅️", "➡️", "⬆️", "⬇️"}
        assert all(b["type"] == 2 for b in upscaled["buttons"])
        for label in ("Vary (Strong)", "Vary (Subtle)"):
            custom_id = labels[label]["customId"]
            assert ("high" if "Strong" in label else "low") + "_variation::1::" in custom_id
            vary = await submit(client, "submit/action", taskId=upscaled["id"],
                                customId=custom_id)
            assert vary["code"] == 1
            varied = await done(fake, client, vary["result"])
            assert varied["action"] == "VARIATION" and varied["status"] == "SUCCESS"
            assert has_grid_lines(await picture(client, varied["imageUrl"]))
        hd = await submit(client, "submit/action", taskId=upscaled["id"],
                          customId=labels["Upscale (Subtle)"]["customId"])
        hd_task = await done(fake, client, hd["result"])
        assert hd_task["action"] == "UPSCALE_HD"
        assert (await picture(client, hd_task["imageUrl"])).size == (1024, 1024)


async def test_trueai_action_refusals() -> None:
    async with running("trueai") as (fake, client):
        grid = await imagine_done(fake, client)
        forged = f"MJ::JOB::upsample::2::{'0' * 8}-0000-0000-0000-{'0' * 12}"
        answer = await submit(client, "submit/action", taskId=grid["id"], customId=forged)
        assert answer["code"] == 4 and answer["result"] is None
        unknown = await submit(client, "submit/action", taskId=grid["id"],
                               customId="MJ::JOB::nonsense::1")
        assert (unknown["code"], unknown["description"]) == (4, "未知的 Action 类型")
        missing = await client.post("/mj/submit/action",
                                    json={"taskId": "777", "customId": forged})
        assert missing.status_code == 404 and missing.json()["code"] == 3
        assert (await submit(client, "submit/action", taskId=grid["id"]))["code"] == 4
        # novicezk has no /action, /modal or face swap
    async with running() as (_, client):
        for route in ("submit/action", "submit/modal", "insight-face/swap"):
            assert (await client.post(f"/mj/{route}", json={})).status_code == 404


# ---- MODAL ----------------------------------------------------------------------------


async def test_custom_zoom_waits_in_modal_then_runs() -> None:
    async with running("trueai") as (fake, client):
        grid = await imagine_done(fake, client)
        up = await submit(client, "submit/action", taskId=grid["id"],
                          customId=grid["buttons"][0]["customId"])
        upscaled = await done(fake, client, up["result"])
        zoom_id = next(b["customId"] for b in upscaled["buttons"]
                       if b["label"] == "Custom Zoom")
        answer = await submit(client, "submit/action", taskId=upscaled["id"], customId=zoom_id)
        assert (answer["code"], answer["description"]) == (21, "Waiting for window confirm")
        assert answer["properties"]["remix"] is True
        fake.advance(10)
        waiting = await fetch(client, answer["result"])
        assert waiting["status"] == "MODAL" and waiting["action"] == "ZOOM"

        assert (await submit(client, "submit/modal", taskId=grid["id"],
                             prompt="x"))["code"] == 4  # not in MODAL
        modal = await submit(client, "submit/modal", taskId=answer["result"],
                             prompt="a red fox --zoom 1.8")
        assert modal["code"] == 1
        assert (await fetch(client, answer["result"]))["status"] == "SUBMITTED"
        zoomed = await done(fake, client, answer["result"])
        assert zoomed["status"] == "SUCCESS" and zoomed["prompt"] == "a red fox --zoom 1.8"
        assert has_grid_lines(await picture(client, zoomed["imageUrl"]))
        missing = await client.post("/mj/submit/modal", json={"taskId": "1"})
        assert missing.status_code == 404


async def test_vary_region_needs_a_mask_and_remix_needs_the_account() -> None:
    async with running("trueai") as (fake, client):
        grid = await imagine_done(fake, client)
        up = await submit(client, "submit/action", taskId=grid["id"],
                          customId=grid["buttons"][3]["customId"])
        upscaled = await done(fake, client, up["result"])
        region = next(b["customId"] for b in upscaled["buttons"]
                      if b["label"] == "Vary (Region)")
        answer = await submit(client, "submit/action", taskId=upscaled["id"], customId=region)
        assert answer["code"] == 21
        assert (await submit(client, "submit/modal", taskId=answer["result"]))["code"] == 4
        mask = data_uri(sample_png(128, 128, seed=3))
        ok = await submit(client, "submit/modal", taskId=answer["result"], maskBase64=mask)
        assert ok["code"] == 1  # the prompt falls back to the parent's
        region_task = await done(fake, client, answer["result"])
        assert region_task["status"] == "SUCCESS" and region_task["prompt"] == "a red fox"

        v1 = grid["buttons"][5]["customId"]
        refused = await submit(client, "submit/action", taskId=grid["id"], customId=v1,
                               enableRemix=True)
        assert refused["code"] == 4
        fake.remix = True
        remixed = await submit(client, "submit/action", taskId=grid["id"], customId=v1,
                               enableRemix=True)
        assert remixed["code"] == 21 and fake.status(remixed["result"]) == "MODAL"
        plain = await submit(client, "submit/action", taskId=grid["id"], customId=v1)
        assert plain["code"] == 1 and fake.status(plain["result"]) == "SUBMITTED"


# ---- describe, blend, face swap --------------------------------------------------------


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_describe(flavour: str) -> None:
    async with running(flavour) as (fake, client):
        assert (await submit(client, "submit/describe"))["code"] == 4
        answer = await submit(client, "submit/describe",
                              base64=data_uri(sample_png(80, 60, seed=2)))
        task = await done(fake, client, answer["result"])
        assert task["action"] == "DESCRIBE" and task["status"] == "SUCCESS"
        lines = task["properties"]["finalPrompt"].split("\n\n")
        assert [line[:2] for line in lines] == ["1\ufe0f", "2\ufe0f", "3\ufe0f", "4\ufe0f"]
        assert task["prompt"] == task["properties"]["finalPrompt"]
        assert "--ar 80:60" in lines[0]
        assert (await picture(client, task["imageUrl"])).size == (80, 60)


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_blend(flavour: str) -> None:
    async with running(flavour) as (fake, client):
        one = [data_uri(sample_png(seed=1))]
        refused = await submit(client, "submit/blend", base64Array=one, dimensions="SQUARE")
        assert refused["code"] == 4
        two = [*one, data_uri(sample_png(seed=2))]
        answer = await submit(client, "submit/blend", base64Array=two, dimensions="LANDSCAPE")
        assert answer["code"] == 1
        task = await done(fake, client, answer["result"])
        assert task["action"] == "BLEND" and task["description"] == f"/blend {task['id']} 2"
        img = await picture(client, task["imageUrl"])
        assert img.width > img.height and has_grid_lines(img)
        six = await submit(client, "submit/blend", base64Array=two * 3, dimensions="SQUARE")
        assert six["code"] == 4


async def test_face_swap() -> None:
    source, target = data_uri(sample_png(seed=1)), data_uri(sample_png(96, 96, seed=2))
    async with running("trueai") as (fake, client):
        same = await submit(client, "insight-face/swap", sourceBase64=source,
                            targetBase64=source)
        assert same["code"] == 4
        answer = await submit(client, "insight-face/swap", sourceBase64=source,
                              targetBase64=target)
        assert answer["code"] == 1
        task = await done(fake, client, answer["result"])
        assert task["action"] == "SWAP_FACE" and task["status"] == "SUCCESS"
        assert (await picture(client, task["imageUrl"])).size == (96, 96)
        assert task["buttons"] == [] and len(task["imageUrls"]) == 1
    async with running() as (_, client):
        response = await client.post("/mj/insight-face/swap",
                                     json={"sourceBase64": source, "targetBase64": target})
        assert response.status_code == 404


# ---- notifyHook, cancel ---------------------------------------------------------------


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.bodies.append(await request.json())
        return Response("ok", self.status)


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_notify_hook_deliveries_with_progress(flavour: str) -> None:
    receiver = Receiver()
    timings = {"queue_seconds": 0.04, "run_seconds": 0.24, "progress_steps": 4}
    async with serve(receiver.app) as hook_base, running(
            flavour, frozen=False, **timings) as (fake, client):
        answer = await submit(client, "submit/imagine", prompt="cat",
                              notifyHook=f"{hook_base}/hook", state="s1")
        finals = await fake.wait_for_callbacks(1, timeout=5)
        assert finals[0].payload["status"] == "SUCCESS" and finals[0].accepted
        seen = [(b["status"], b["progress"]) for b in receiver.bodies]
        assert seen[0] == ("SUBMITTED", "0%") and seen[-1] == ("SUCCESS", "100%")
        assert [p for s, p in seen if s == "IN_PROGRESS"] == ["20%", "40%", "60%", "80%"]
        assert all(b["id"] == answer["result"] and b["state"] == "s1" for b in receiver.bodies)
        assert len(fake.callbacks) == len(receiver.bodies)


async def test_notify_hook_is_not_retried() -> None:
    receiver = Receiver(status=500)
    async with serve(receiver.app) as hook_base, running(frozen=False) as (fake, client):
        await submit(client, "submit/imagine", prompt="cat", notifyHook=f"{hook_base}/hook")
        finals = await fake.wait_for_callbacks(1, timeout=5)
        assert not finals[0].accepted and finals[0].attempt == 1
        await asyncio.sleep(0.05)
        assert len([a for a in fake.callbacks if a.final]) == 1


@pytest.mark.parametrize("flavour", ["novicezk", "trueai"])
async def test_cancel(flavour: str) -> None:
    async with running(flavour, concurrency=1) as (fake, client):
        first = await submit(client, "submit/imagine", prompt="one")
        second = await submit(client, "submit/imagine", prompt="two")
        fake.cancel(first["result"])
        task = await fetch(client, first["result"])
        assert task["status"] == ("CANCEL" if flavour == "trueai" else "FAILURE")
        # the slot is free at once: the waiting task starts
        assert (await fetch(client, second["result"]))["status"] == "SUBMITTED"
        if flavour == "trueai":
            cancel = await client.post(f"/mj/task/{second['result']}/cancel")
            assert cancel.status_code == 200
            cancelled = await fetch(client, second["result"])
            assert (cancelled["status"], cancelled["failReason"]) == ("FAILURE", "取消任务")
        assert fake.api_requests("submit/imagine")[0].body == {"prompt": "one"}
