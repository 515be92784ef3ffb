"""Bad input through the real bot: each is answered with one short,
localized line (or, for images that only prove bad once fetched, a failed
task with the 'input image could not be used' sentence), nothing crashes,
no task starts where nothing should, and no vendor is called."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from bot.i18n import t
from bot.keyboards import Action, ButtonPress, CallbackCodec
from bot.parsing import ParseError, parse_prompt, strip_command
from providers.types import GenerationParams
from tests.e2e.conftest import TOKEN, ZHIQITE_APP_CODE, make_settings, running_bot
from tests.e2e.helpers import is_result, png, result_after
from tests.fakes.juhe import FakeJuhe
from tests.fakes.server import serve
from tests.fakes.telegram import FakeTelegram, StoredMessage
from tests.reliability.support import (
    animated_gif,
    bot_with,
    corrupt_png,
    decompression_bomb,
    final_task,
    oversized_document,
)

USER = 6401  # private chat id = user id
OTHER = 6402
GROUP = -1006403


async def answer_to(telegram: FakeTelegram, chat_id: int, request: dict[str, Any], timeout: float = 5.0) -> StoredMessage:
    """The bot's reply quoting ``request``."""
    return await telegram.wait_for_message(
        chat_id, lambda m: m.reply_to_message_id == request["message_id"], timeout=timeout
    )


def parser_says(text: str, language: str = "en") -> str:
    """What the parser objects to in ``text``, in the user's words."""
    try:
        parse_prompt(strip_command(text), GenerationParams())
    except ParseError as exc:
        return t(language, exc.key, **exc.values)
    raise AssertionError(f"the parser accepts {text!r}")


# (message, a word the answer must contain: the flag, or what is wrong)
BAD_PROMPTS = [
    ("/imagine", "/imagine"),
    ("/imagine      ", "/imagine"),
    ("/imagine --ar 16:9 --n 2", "/imagine"),  # flags, no prompt
    ("/imagine " + "a very long prompt " * 80, "1500"),  # 1520 characters
    ("a very long private-chat prompt " * 50, "1500"),  # plain text is /imagine in private chats
    ("/imagine a fox --ar 99:1", "--ar"),
    ("/imagine a fox --ar 16-9", "--ar"),
    ("/imagine a fox ——ar 0:0", "--ar"),  # a Chinese input method's dash
    ("/imagine a fox --n 9", "--n"),
    ("/imagine a fox --n two", "--n"),
    ("/imagine a fox --seed -1", "--seed"),
    ("/imagine a fox --cfg nan", "--cfg"),
    ("/imagine a fox --strength 1.5", "--strength"),
    ("/imagine a fox --size 10x10", "--size"),
    ("/imagine a fox --size 4096x4096", "--size"),
    ("/imagine a fox --steps 0", "--steps"),
    ("/imagine a fox --frobnicate 3", "--frobnicate"),
    ("/imagine a fox --ar", "--ar"),  # no value
    ("/imagine a fox --n 2 --n 3", "--n"),  # twice
    ("/imagine a fox --model <script>", "--model"),
    ("/imagine a fox --<i>oops", "--<i>oops"),  # the user's own text, quoted back: must not be taken for HTML
]


async def test_bad_prompts_get_one_short_line_and_no_task(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        sent = [(text, word, telegram.user_message(USER, USER, text)) for text, word in BAD_PROMPTS]
        zh = telegram.user_message(OTHER, OTHER, "/imagine --n 9", language_code="zh-hans")
        unknown_vendor = telegram.user_message(USER, USER, "/imagine a fox --provider nosuchvendor")
        with contextlib.suppress(AssertionError):  # a missing answer is reported below, with the others
            await telegram.wait_for(lambda: len(telegram.bot_messages(USER)) >= len(sent) + 1, timeout=5)
        answers = {m.reply_to_message_id: m.content for m in telegram.bot_messages(USER)}
        problems = []
        for text, word, request in sent:
            answer = answers.get(request["message_id"])
            expected = parser_says(text)
            if answer != expected or word not in answer or len(answer) > 300:
                problems.append(f"{text[:40]!r}: answered {answer!r}, expected {expected[:100]!r} naming {word!r}")
        if any(t("en", "err_internal") in m.content for m in telegram.bot_messages(USER)):
            problems.append(f"the bot said {t('en', 'err_internal')!r}: a handler crashed")
        zh_answer = (await answer_to(telegram, OTHER, zh)).content
        vendor_answer = (await answer_to(telegram, USER, unknown_vendor)).content
        help_reply = await answer_to(telegram, USER, telegram.user_message(USER, USER, "/help"))  # still alive
        await asyncio.sleep(0.3)
        tasks = await bot.store.tasks.recent(USER) + await bot.store.tasks.recent(OTHER)  # type: ignore[union-attr]
    assert not problems, "\n".join(problems)
    assert zh_answer == parser_says("/imagine --n 9", "zh") and "--n" in zh_answer
    assert "nosuchvendor" in vendor_answer and "/providers" in vendor_answer
    assert help_reply.content
    assert tasks == [], "a refused request became a task"
    assert len(telegram.bot_messages(USER)) == len(BAD_PROMPTS) + 2  # one answer per message


async def test_prompt_over_a_vendors_own_limit(tmp_path: Path, telegram: FakeTelegram) -> None:
    """juhe takes at most 800 characters (it would silently cut the rest):
    routing knows the limit, so with no other vendor the user is told at once
    and nothing is stored or sent."""
    fake = FakeJuhe()
    prompt = ("a lantern festival on the river " * 30)[:900]
    async with serve(fake.app) as url:
        async with bot_with(tmp_path, telegram, public=False, juhe_api_key=fake.key, juhe_base_url=url) as bot:
            sent = telegram.user_message(USER, USER, f"/imagine {prompt}")
            told = await telegram.wait_for_message(USER, lambda m: bool(m.text), after_message_id=sent["message_id"])
            tasks = await bot.store.tasks.recent(USER)
        await fake.aclose()
    assert tasks == []
    assert not fake.requests, "the over-long prompt was sent to juhe"
    assert told.text == t("en", "err_vendor_prompt_limit", length=len(prompt.strip()), limit=800)


def sticker_message(telegram: FakeTelegram, chat_id: int, message_id: int, animated: bool = True) -> dict:
    user = telegram.add_user(chat_id)
    return {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": "private", "first_name": "Test"},
        "from": user,
        "sticker": {
            "file_id": "CAACAgIAAxkBAAIBfakesticker", "file_unique_id": "AgADfakesticker",
            "width": 512, "height": 512, "is_animated": animated, "is_video": False, "type": "regular",
        },
    }


def animation_message(telegram: FakeTelegram, chat_id: int, message_id: int) -> dict:
    """A GIF as Telegram delivers it: converted to MP4, both as `animation`
    and as `document`."""
    user = telegram.add_user(chat_id)
    media = {"file_id": "CgACAgQAAxkBAAIBfakegif", "file_unique_id": "AgADfakegif", "file_size": 48213}
    return {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": "private", "first_name": "Test"},
        "from": user,
        "caption": "make it snow",
        "animation": {**media, "width": 320, "height": 240, "duration": 2, "mime_type": "video/mp4", "file_name": "fun.gif.mp4"},
        "document": {**media, "mime_type": "video/mp4", "file_name": "fun.gif.mp4"},
    }


async def test_bad_files_are_answered_and_bad_images_never_reach_a_vendor(
    tmp_path: Path, telegram: FakeTelegram, fast_zhiqite
) -> None:
    _, url, arrivals = fast_zhiqite
    async with bot_with(tmp_path, telegram, zhiqite_app_code=ZHIQITE_APP_CODE, zhiqite_base_url=url) as bot:
        refused: dict[str, str] = {}  # case → the bot's answer
        files: dict[str, str] = {}  # case → the document's file_id
        for case, kwargs in {
            "pdf": {"document": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "document_mime": "application/pdf", "file_name": "report.pdf"},
            "gif document": {"document": animated_gif(), "document_mime": "image/gif", "file_name": "dance.gif"},
            "21 MB png": {"document": oversized_document(), "document_mime": "image/png", "file_name": "huge.png"},
        }.items():
            request = telegram.user_message(USER, USER, caption="make it blue", **kwargs)
            refused[case] = (await answer_to(telegram, USER, request)).content
            files[case] = request["document"]["file_id"]
        last = telegram.last_bot_message(USER).message_id  # type: ignore[union-attr]
        for case, payload in {
            "sticker": sticker_message(telegram, USER, 90001),
            "animation": animation_message(telegram, USER, 90002),
        }.items():
            telegram.inject_update("message", payload)
            answer = await telegram.wait_for_message(USER, after_message_id=last)
            refused[case], last = answer.content, answer.message_id
        text_only = telegram.user_message(USER, USER, "just words")
        await answer_to(telegram, USER, text_only)  # the acknowledgement of a text prompt: not a file case
        not_a_photo = telegram.user_message(USER, USER, "/upscale", reply_to_message_id=text_only["message_id"])
        refused["/upscale on text"] = (await answer_to(telegram, USER, not_a_photo)).content
        tasks_after_refusals = await bot.store.tasks.recent(USER)  # type: ignore[union-attr]

        # These look like images until fetched: a task starts, then fails with a message.
        for name, data in {"corrupt png": corrupt_png(), "decompression bomb": decompression_bomb()}.items():
            telegram.user_message(USER, USER, caption=f"make it blue ({name})", document=data, document_mime="image/png", file_name="x.png")
        tasks = await final_task(bot, USER, timeout=8, count=3)
        vendor_calls = [a.path for a in arrivals]

    unsupported, too_big = t("en", "err_unsupported_file"), t("en", "err_file_too_big", size=21.0, limit=20)
    assert refused == {
        "pdf": unsupported,
        "gif document": unsupported,
        "21 MB png": too_big,
        "sticker": unsupported,
        "animation": unsupported,
        "/upscale on text": t("en", "err_reply_to_photo", command="/upscale"),
    }
    assert [t.kind for t in tasks_after_refusals] == ["txt2img"]  # only "just words"
    fetched = {c.params.get("file_id") for c in telegram.calls("getFile")}
    assert not fetched & set(files.values()), "a refused file was downloaded"
    bad = [task for task in tasks if task.kind != "txt2img"]
    assert [(task.status.value, task.error_kind) for task in bad] == [("failed", "bad_input")] * 2, [(t.status, t.error_kind, t.error_detail) for t in bad]
    bomb = next(task for task in bad if "bomb" in task.params.get("prompt", ""))
    assert "bomb" in (bomb.error_detail or "") or "pixels" in (bomb.error_detail or ""), bomb.error_detail
    for task in bad:
        assert sum(t("en", "fail_bad_input") in text and f"#{task.id}" in text for text in (m.content for m in telegram.bot_messages(USER))) == 1
    assert not [p for p in vendor_calls if "image2image" in p], "a bad image was sent to the vendor"
    assert not any(t("en", "err_internal") in m.content for m in telegram.bot_messages(USER))


async def test_forged_stale_and_foreign_references(tmp_path: Path, telegram: FakeTelegram) -> None:
    """Button data that is forged, tampered with, from another chat, or not
    ours at all; /task and /cancel naming another user's task."""
    codec = CallbackCodec(TOKEN.encode())
    async with running_bot(make_settings(tmp_path, telegram, sandbox_job_seconds=2.0)) as bot:
        first = telegram.user_message(USER, USER, "/imagine a guarded gate")
        result = await result_after(telegram, USER, first["message_id"])
        upscale = result.button("Upscale")["callback_data"]
        running = telegram.user_message(USER, USER, "/imagine a second gate, still running")
        await answer_to(telegram, USER, running)
        other_chat = telegram.user_message(OTHER, OTHER, "/help")
        other_reply = await answer_to(telegram, OTHER, other_chat)

        presses = {
            "bad signature": (USER, result.message_id, "a:1:U:AAAAAAAA"),
            "tampered action": (USER, result.message_id, upscale.replace(":U:", ":V:")),
            "signed, no such task": (USER, result.message_id, codec.encode(ButtonPress(987654, Action.UPSCALE, 0), single=True)),
            "signed, task not finished": (USER, result.message_id, codec.encode(ButtonPress(2, Action.REROLL, 0))),
            "another chat's button": (OTHER, other_reply.message_id, upscale),
            "too long": (USER, result.message_id, upscale + "X" * 60),
            "not ours at all": (USER, result.message_id, "zz:garbage"),
        }
        queries = {
            case: telegram.press_button(chat, chat, message_id, data, check_button=False)
            for case, (chat, message_id, data) in presses.items()
        }
        replies = {}
        for chat, text in ((OTHER, "/task 1"), (OTHER, "/cancel 2"), (OTHER, "/task abc"), (OTHER, "/task 99999999999999999999")):
            request = telegram.user_message(chat, chat, text)
            replies[text] = (await answer_to(telegram, chat, request)).content
        with contextlib.suppress(AssertionError):  # what stays unanswered is reported below
            await telegram.wait_for(lambda: all(telegram.callback_queries[q].answered for q in queries.values()), timeout=2)
        answers = {case: telegram.callback_queries[query] for case, query in queries.items()}
        tasks = await final_task(bot, USER, timeout=10, count=2)
        others = await bot.store.tasks.recent(OTHER)  # type: ignore[union-attr]

    unanswered = [case for case, record in answers.items() if not record.answered]
    assert not unanswered, f"button presses left unanswered (the user's spinner keeps spinning): {unanswered}"
    wrong = {case: r.text for case, r in answers.items() if r.text != t("en", "btn_invalid") or not r.show_alert}
    assert not wrong, wrong
    assert [t.status.value for t in tasks] == ["delivered", "delivered"]  # the /cancel from OTHER changed nothing
    assert others == []  # no press started anything
    assert replies == {
        "/task 1": t("en", "task_not_found", task_id=1),
        "/cancel 2": t("en", "task_not_found", task_id=2),
        "/task abc": t("en", "task_usage").replace("&lt;", "<").replace("&gt;", ">"),
        "/task 99999999999999999999": t("en", "task_usage").replace("&lt;", "<").replace("&gt;", ">"),
    }
    assert not any(is_result(m) for m in telegram.bot_messages(OTHER))  # /task 1 resent nothing


async def test_unknown_commands_are_ignored_in_groups_and_answered_in_private(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        ignored = [
            telegram.user_message(GROUP, USER, text)
            for text in ("/frobnicate", "/frobnicate now please", "/imagine@some_other_bot a cat", "/start@some_other_bot")
        ]
        private = telegram.user_message(USER, USER, "/frobnicate")
        private_answer = (await answer_to(telegram, USER, private)).content
        help_request = telegram.user_message(GROUP, USER, "/help")  # answered: proves the group is read
        await answer_to(telegram, GROUP, help_request)
        await asyncio.sleep(0.5)
        tasks = await bot.store.tasks.recent(USER)  # type: ignore[union-attr]
    answered = {m.reply_to_message_id for m in telegram.bot_messages(GROUP)}
    assert answered == {help_request["message_id"]}, [m.summary() for m in telegram.bot_messages(GROUP)]
    assert not answered & {m["message_id"] for m in ignored}
    assert private_answer == t("en", "err_unknown_command")
    assert tasks == []


def test_hostile_images_are_what_they_claim(tmp_path: Path) -> None:
    """The crafted files: a bomb that is a valid PNG declaring 30000×30000
    in ~100 KB, a PNG signature followed by garbage, and a real animated GIF."""
    import io
    import warnings

    from PIL import Image

    bomb = decompression_bomb()
    assert len(bomb) < 200_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Image.MAX_IMAGE_PIXELS, saved = None, Image.MAX_IMAGE_PIXELS
        try:
            with Image.open(io.BytesIO(bomb)) as image:
                assert image.size == (30000, 30000) and image.format == "PNG"
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    assert corrupt_png().startswith(b"\x89PNG")
    try:
        with Image.open(io.BytesIO(corrupt_png())) as image:
            image.load()
        raise AssertionError("the corrupt PNG decodes")
    except (OSError, SyntaxError, ValueError):
        pass
    with Image.open(io.BytesIO(animated_gif())) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
    assert len(png()) > 0
