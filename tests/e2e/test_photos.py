"""Photos in, images out: caption edits, /edit and /upscale as replies,
/faceswap as an album, as a reply and as a guided flow."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import make_settings, running_bot
from tests.e2e.helpers import image_size, photos, png, result_after
from tests.fakes.telegram import FakeTelegram

CHAT = USER = 3030


async def test_photo_with_caption_is_edited(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        sent = telegram.user_message(CHAT, USER, photo=png(), caption="make it snowy")
        result = await result_after(telegram, CHAT, sent["message_id"])
        task = (await bot.store.tasks.recent(USER))[0]
    assert task.kind == "edit" and task.params["prompt"] == "make it snowy"
    assert result.reply_to_message_id == sent["message_id"]
    assert "make it snowy" in result.caption


async def test_reply_edit_and_reply_upscale(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        original = telegram.user_message(CHAT, USER, photo=png(300, 200))
        hint = await telegram.wait_for_message(CHAT)
        assert "/edit" in hint.text  # a bare photo gets a hint, not silence
        edit = telegram.user_message(CHAT, USER, "/edit add a rainbow", reply_to_message_id=original["message_id"])
        edited = await result_after(telegram, CHAT, edit["message_id"])
        upscale = telegram.user_message(CHAT, USER, "/upscale", reply_to_message_id=original["message_id"])
        upscaled = await result_after(telegram, CHAT, upscale["message_id"])
        kinds = [t.kind for t in await bot.store.tasks.recent(USER)]
    assert kinds == ["upscale", "edit"]
    assert "add a rainbow" in edited.caption
    assert image_size(telegram, upscaled) == (600, 400)


async def test_edit_without_a_photo_is_explained(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)):
        telegram.user_message(CHAT, USER, "/edit add a rainbow")
        answer = await telegram.wait_for_message(CHAT)
        telegram.user_message(CHAT, USER, document=b"%PDF-1.4 not an image", document_mime="application/pdf", file_name="a.pdf")
        refusal = await telegram.wait_for_message(CHAT, after_message_id=answer.message_id)
    assert "/edit" in answer.text and "photo" in answer.text
    assert "JPEG" in refusal.text


async def test_album_faceswap(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        face = telegram.user_message(CHAT, USER, photo=png(200, 200, (250, 200, 150)), caption="/faceswap", media_group_id="album-1")
        telegram.user_message(CHAT, USER, photo=png(400, 300, (20, 80, 160)), media_group_id="album-1")
        result = await result_after(telegram, CHAT, face["message_id"] + 1)
        tasks = await bot.store.tasks.recent(USER)
    assert [t.kind for t in tasks] == ["faceswap"]
    assert len(tasks[0].inputs) == 2
    assert image_size(telegram, result) == (400, 300)  # the target's size


async def test_guided_faceswap_and_cancel(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        start = telegram.user_message(CHAT, USER, "/faceswap")
        ask_face = await telegram.wait_for_message(CHAT, after_message_id=start["message_id"])
        telegram.user_message(CHAT, USER, photo=png(120, 120))
        ask_target = await telegram.wait_for_message(CHAT, after_message_id=ask_face.message_id)
        target = telegram.user_message(CHAT, USER, photo=png(360, 240))
        result = await result_after(telegram, CHAT, target["message_id"])
        assert image_size(telegram, result) == (360, 240)

        again = telegram.user_message(CHAT, USER, "/faceswap")
        await telegram.wait_for_message(CHAT, after_message_id=again["message_id"])
        leave = telegram.user_message(CHAT, USER, "/cancel")
        left = await telegram.wait_for_message(CHAT, after_message_id=leave["message_id"])
        later = telegram.user_message(CHAT, USER, photo=png())
        hint = await telegram.wait_for_message(CHAT, after_message_id=later["message_id"])
        kinds = [t.kind for t in await bot.store.tasks.recent(USER)]
    assert "face" in ask_face.text and "face" in ask_target.text
    assert left.text == "Cancelled."
    assert "/faceswap" in hint.text  # the flow is over: a photo gets the hint
    assert kinds == ["faceswap"]


async def test_reply_faceswap_with_the_face_attached(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with running_bot(make_settings(tmp_path, telegram)) as bot:
        target = telegram.user_message(CHAT, USER, photo=png(500, 250))
        await telegram.wait_for_message(CHAT)  # the hint for a bare photo
        face = telegram.user_message(CHAT, USER, photo=png(100, 100), caption="/faceswap", reply_to_message_id=target["message_id"])
        result = await result_after(telegram, CHAT, face["message_id"])
        task = (await bot.store.tasks.recent(USER))[0]
    assert task.kind == "faceswap"
    assert image_size(telegram, result) == (500, 250)
    assert len(photos(telegram, CHAT)) == 1
