"""bot/keyboards.py: signed callback data and the result keyboards."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.i18n import t
from bot.keyboards import (
    MAX_CALLBACK_BYTES,
    Action,
    ButtonPress,
    CallbackCodec,
    grid_keyboard,
    single_keyboard,
)

SECRET = b"123456789:AAHsecret-token-for-tests_0123456789abc"
LARGEST_ID = 10**15 - 1  # the codec's declared range: 1..15 digits


@pytest.fixture
def codec() -> CallbackCodec:
    return CallbackCodec(SECRET)


ALL_PRESSES = [
    *(ButtonPress(tid, Action.UPSCALE, i) for tid in (1, 42, LARGEST_ID) for i in range(4)),
    *(ButtonPress(tid, Action.VARIATION, i) for tid in (1, 42, LARGEST_ID) for i in range(4)),
    *(ButtonPress(tid, Action.REROLL, 0) for tid in (1, 42, LARGEST_ID)),
]


@pytest.mark.parametrize("press", ALL_PRESSES, ids=str)
def test_round_trip_grid(codec: CallbackCodec, press: ButtonPress) -> None:
    data = codec.encode(press)
    assert len(data.encode()) <= MAX_CALLBACK_BYTES
    assert codec.decode(data) == press


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("task_id", [1, 7, LARGEST_ID])
def test_round_trip_single(codec: CallbackCodec, action: Action, task_id: int) -> None:
    press = ButtonPress(task_id, action, 0)
    data = codec.encode(press, single=True)
    assert len(data.encode()) <= MAX_CALLBACK_BYTES
    assert codec.decode(data) == press


def test_single_and_grid_data_differ(codec: CallbackCodec) -> None:
    # Upscale of image 1 in a grid and the single-image Upscale are different buttons.
    grid = codec.encode(ButtonPress(5, Action.UPSCALE, 0))
    single = codec.encode(ButtonPress(5, Action.UPSCALE, 0), single=True)
    assert grid != single
    # Reroll has one form whatever the layout.
    assert codec.encode(ButtonPress(5, Action.REROLL, 0)) == codec.encode(
        ButtonPress(5, Action.REROLL, 0), single=True
    )


def test_all_data_distinct_per_task(codec: CallbackCodec) -> None:
    datas = [codec.encode(p) for p in ALL_PRESSES]
    assert len(set(datas)) == len(datas)


def test_press_key_distinguishes_action_and_index() -> None:
    keys = {ButtonPress(9, a, i).key for a in (Action.UPSCALE, Action.VARIATION) for i in range(4)}
    keys.add(ButtonPress(9, Action.REROLL, 0).key)
    assert len(keys) == 9
    assert ButtonPress(9, Action.VARIATION, 2).key == "9:v2"


def test_largest_task_id_fits(codec: CallbackCodec) -> None:
    for press in (ButtonPress(LARGEST_ID, Action.VARIATION, 3), ButtonPress(LARGEST_ID, Action.REROLL, 0)):
        assert len(codec.encode(press).encode()) <= MAX_CALLBACK_BYTES
        assert len(codec.encode(press, single=True).encode()) <= MAX_CALLBACK_BYTES


def test_same_secret_same_data_other_secret_differs(codec: CallbackCodec) -> None:
    press = ButtonPress(3, Action.VARIATION, 1)
    assert CallbackCodec(SECRET).encode(press) == codec.encode(press)  # survives a restart
    assert CallbackCodec(b"999:other").encode(press) != codec.encode(press)


# --------------------------------------------------------------------------- #
# Forged / malformed data
# --------------------------------------------------------------------------- #


def _parts(data: str) -> list[str]:
    return data.split(":")


def test_changed_task_id_rejected(codec: CallbackCodec) -> None:
    data = codec.encode(ButtonPress(41, Action.UPSCALE, 0))
    _, tid, code, mac = _parts(data)
    for other in ("42", "4", "410", "14"):
        assert codec.decode(f"a:{other}:{code}:{mac}") is None


def test_changed_action_rejected(codec: CallbackCodec) -> None:
    data = codec.encode(ButtonPress(41, Action.UPSCALE, 0))
    _, tid, code, mac = _parts(data)
    for other in ("u2", "u3", "u4", "v1", "r", "U", "V"):
        assert codec.decode(f"a:{tid}:{other}:{mac}") is None


def test_wrong_mac_rejected(codec: CallbackCodec) -> None:
    data = codec.encode(ButtonPress(41, Action.REROLL, 0))
    prefix, mac = data.rsplit(":", 1)
    for i in range(len(mac)):
        flipped = mac[:i] + ("A" if mac[i] != "A" else "B") + mac[i + 1 :]
        assert codec.decode(f"{prefix}:{flipped}") is None
    assert codec.decode(f"{prefix}:{mac[:-1]}") is None
    assert codec.decode(f"{prefix}:{mac}A") is None


def test_other_secret_rejected(codec: CallbackCodec) -> None:
    forged = CallbackCodec(b"555:attacker").encode(ButtonPress(41, Action.UPSCALE, 0))
    assert codec.decode(forged) is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: " " + d,
        lambda d: d + " ",
        lambda d: d + "x",
        lambda d: "x" + d,
        lambda d: d + ":",
        lambda d: d + ":extra",
        lambda d: d.upper(),
        lambda d: d.replace("a:", "b:", 1),
        lambda d: d.replace(":", "::", 1),
    ],
    ids=["lead-space", "trail-space", "trail-x", "lead-x", "trail-colon", "extra-field", "upper", "prefix", "colon"],
)
def test_extra_or_altered_chars_rejected(codec: CallbackCodec, mutate) -> None:
    data = codec.encode(ButtonPress(41, Action.UPSCALE, 0))
    assert codec.decode(mutate(data)) is None


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00"])
def test_trailing_control_characters_rejected(codec: CallbackCodec, suffix: str) -> None:
    """Callback data must be exactly what encode produced. (`$` in the pattern
    also matches before a final newline, so `data + "\\n"` must be checked.)"""
    data = codec.encode(ButtonPress(41, Action.UPSCALE, 0))
    assert codec.decode(data + suffix) is None


def test_unicode_rejected(codec: CallbackCodec) -> None:
    data = codec.encode(ButtonPress(41, Action.UPSCALE, 0))
    _, tid, code, mac = _parts(data)
    full_width_id = tid.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    assert codec.decode(f"a:{full_width_id}:{code}:{mac}") is None
    assert codec.decode(f"ａ:{tid}:{code}:{mac}") is None
    assert codec.decode(f"a:{tid}:{code}:{mac[:-1]}é") is None
    assert codec.decode("a:٤١:u1:" + mac) is None  # Arabic-Indic digits
    assert codec.decode("🔄") is None


def test_lone_surrogate_rejected_not_raised(codec: CallbackCodec) -> None:
    """decode is documented to return None for anything malformed; a string
    that cannot be UTF-8 encoded must not crash the callback handler."""
    assert codec.decode("a:1:r:\ud800") is None


@pytest.mark.parametrize("data", ["", None])
def test_empty_and_none_rejected(codec: CallbackCodec, data: str | None) -> None:
    assert codec.decode(data) is None


def test_oversized_rejected(codec: CallbackCodec) -> None:
    valid = codec.encode(ButtonPress(41, Action.UPSCALE, 0))
    padded = valid + "A" * (MAX_CALLBACK_BYTES + 1 - len(valid))
    assert len(padded.encode()) == MAX_CALLBACK_BYTES + 1
    assert codec.decode(padded) is None
    assert codec.decode("a" * 65) is None
    assert codec.decode("a:1:r:" + "é" * 30) is None  # 66 bytes, fewer characters


def test_missing_mac_rejected(codec: CallbackCodec) -> None:
    assert codec.decode("a:1:u1") is None
    assert codec.decode("a:1:u1:") is None


def test_leading_zero_id_rejected(codec: CallbackCodec) -> None:
    mac = _parts(codec.encode(ButtonPress(1, Action.UPSCALE, 0)))[3]
    assert codec.decode(f"a:1:u1:{mac}") is not None
    assert codec.decode(f"a:01:u1:{mac}") is None
    assert codec.decode(f"a:0:u1:{mac}") is None


@pytest.mark.parametrize("code", ["u0", "u5", "v0", "v9", "r1", "x1", "R", "u", "v", "u10"])
def test_impossible_action_codes_rejected(codec: CallbackCodec, code: str) -> None:
    # Even correctly signed, a code outside the grammar is refused.
    mac = codec._mac(f"a:1:{code}")  # noqa: SLF001 - sign it like a leaked key would
    assert codec.decode(f"a:1:{code}:{mac}") is None


def test_id_beyond_declared_range_rejected(codec: CallbackCodec) -> None:
    mac = codec._mac(f"a:{10**15}:r")  # noqa: SLF001
    assert codec.decode(f"a:{10**15}:r:{mac}") is None


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #

EXAMPLES = {"arbitrary": 0, "mutated": 0}
_CODEC = CallbackCodec(SECRET)


def _produced_by_encode(data: str, press: ButtonPress) -> bool:
    return data in (_CODEC.encode(press), _CODEC.encode(press, single=True))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=80), st.from_regex(r"a:[0-9]{1,16}:(u[0-9]|v[0-9]|r|U|V):[A-Za-z0-9_\-]{6,9}")))
def _decode_arbitrary(data: str) -> None:
    EXAMPLES["arbitrary"] += 1
    press = _CODEC.decode(data)
    assert press is None or _produced_by_encode(data, press)


def test_decode_never_raises_on_arbitrary_strings() -> None:
    EXAMPLES["arbitrary"] = 0
    try:
        _decode_arbitrary()
    finally:
        print(f"\nhypothesis: CallbackCodec.decode on arbitrary strings ran {EXAMPLES['arbitrary']} examples")
    assert EXAMPLES["arbitrary"] >= 200


_press = st.one_of(
    st.builds(
        ButtonPress,
        st.integers(1, LARGEST_ID),
        st.sampled_from([Action.UPSCALE, Action.VARIATION]),
        st.integers(0, 3),
    ),
    st.builds(ButtonPress, st.integers(1, LARGEST_ID), st.just(Action.REROLL), st.just(0)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    press=_press,
    single=st.booleans(),
    prefix=st.one_of(st.just(""), st.text(max_size=3)),
    suffix=st.one_of(st.sampled_from(["", "\n", "\r\n", " ", "\x00"]), st.text(max_size=3)),
    position=st.integers(0, 40),
    replacement=st.one_of(st.none(), st.characters()),
)
def _decode_mutated(
    press: ButtonPress, single: bool, prefix: str, suffix: str, position: int, replacement: str | None
) -> None:
    EXAMPLES["mutated"] += 1
    if single and press.index:
        press = ButtonPress(press.task_id, press.action, 0)
    data = _CODEC.encode(press, single=single)
    assert len(data.encode()) <= MAX_CALLBACK_BYTES
    assert _CODEC.decode(data) == press
    mutated = prefix + data + suffix
    if replacement is not None and position < len(mutated):
        mutated = mutated[:position] + replacement + mutated[position + 1 :]
    decoded = _CODEC.decode(mutated)
    if mutated == data:
        assert decoded == press
    else:
        # Only strings that encode produced are accepted, for any press.
        assert decoded is None or _produced_by_encode(mutated, decoded), repr(mutated)


def test_decode_accepts_only_what_encode_produced() -> None:
    EXAMPLES["mutated"] = 0
    try:
        _decode_mutated()
    finally:
        print(f"\nhypothesis: CallbackCodec mutated data ran {EXAMPLES['mutated']} examples")
    assert EXAMPLES["mutated"] >= 150


# --------------------------------------------------------------------------- #
# Keyboards
# --------------------------------------------------------------------------- #


def test_grid_keyboard_layout(codec: CallbackCodec) -> None:
    markup = grid_keyboard(codec, 77, 4)
    rows = markup.inline_keyboard
    assert len(rows) == 2
    assert [b.text for b in rows[0]] == ["U1", "U2", "U3", "U4"]
    assert [b.text for b in rows[1]] == ["V1", "V2", "V3", "V4", "🔄"]
    presses = [[codec.decode(b.callback_data) for b in row] for row in rows]
    assert presses[0] == [ButtonPress(77, Action.UPSCALE, i) for i in range(4)]
    assert presses[1] == [*(ButtonPress(77, Action.VARIATION, i) for i in range(4)), ButtonPress(77, Action.REROLL, 0)]
    for row in rows:
        for button in row:
            assert len(button.callback_data.encode()) <= MAX_CALLBACK_BYTES


def test_grid_keyboard_with_two_images(codec: CallbackCodec) -> None:
    rows = grid_keyboard(codec, 5, 2).inline_keyboard
    assert [b.text for b in rows[0]] == ["U1", "U2"]
    assert [b.text for b in rows[1]] == ["V1", "V2", "🔄"]


EN_LABELS = ["⬆️ Upscale", "🎲 Vary", "🔄 Reroll"]  # PRODUCT.md §3


@pytest.mark.parametrize("language", ["en", "zh"])
def test_single_keyboard(codec: CallbackCodec, language: str) -> None:
    rows = single_keyboard(codec, 12, language).inline_keyboard
    assert len(rows) == 1 and len(rows[0]) == 3
    labels = [b.text for b in rows[0]]
    assert labels == [t(language, k) for k in ("btn_upscale", "btn_vary", "btn_reroll")]
    if language == "en":
        assert labels == EN_LABELS
    else:
        # translated, keeping the same emoji
        assert all(label != en for label, en in zip(labels, EN_LABELS))
        assert [label.split()[0] for label in labels] == [en.split()[0] for en in EN_LABELS]
        assert all(any("\u4e00" <= ch <= "\u9fff" for ch in label) for label in labels)
    assert [codec.decode(b.callback_data) for b in rows[0]] == [
        ButtonPress(12, Action.UPSCALE, 0),
        ButtonPress(12, Action.VARIATION, 0),
        ButtonPress(12, Action.REROLL, 0),
    ]


def test_single_keyboard_unknown_language_falls_back_to_english(codec: CallbackCodec) -> None:
    rows = single_keyboard(codec, 12, "fr").inline_keyboard
    assert [b.text for b in rows[0]] == EN_LABELS
