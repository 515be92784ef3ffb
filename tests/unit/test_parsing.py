"""bot/parsing.py: prompt text + Midjourney-style flags → GenerationParams or ParseError."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.parsing import (
    FLAGS,
    MAX_PROMPT_CHARS,
    ParseError,
    normalize_dashes,
    parse_prompt,
    strip_command,
)
from providers.types import GenerationParams

KNOWN = "--ar, --size, --n, --seed, --no, --steps, --cfg, --strength, --model, --provider"


def error_of(text: str, defaults: GenerationParams | None = None) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_prompt(text, defaults)
    return info.value


# --------------------------------------------------------------------------- #
# Plain prompts and defaults
# --------------------------------------------------------------------------- #


def test_plain_prompt_gets_model_defaults() -> None:
    params = parse_prompt("a red fox in the snow")
    assert params == GenerationParams(prompt="a red fox in the snow")
    assert (params.aspect_ratio, params.n, params.width, params.height) == ("1:1", 1, None, None)
    assert params.negative_prompt == ""
    assert params.seed is params.steps is params.cfg is params.strength is None
    assert params.model is params.provider is None


def test_whitespace_is_collapsed_in_prompt() -> None:
    assert parse_prompt("  a \n red\tfox  ").prompt == "a red fox"


def test_prompt_keeps_words_between_flags() -> None:
    params = parse_prompt("a fox --ar 16:9 in the snow --n 2 at dusk")
    assert params.prompt == "a fox in the snow at dusk"
    assert params.aspect_ratio == "16:9"
    assert params.n == 2


def test_double_dash_alone_and_single_dash_words_are_prompt() -> None:
    params = parse_prompt("left -- right -x")
    assert params.prompt == "left -- right -x"


# --------------------------------------------------------------------------- #
# Every flag
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("--ar 16:9", {"aspect_ratio": "16:9"}),
        ("--ar 1:4", {"aspect_ratio": "1:4"}),
        ("--ar 4:1", {"aspect_ratio": "4:1"}),
        ("--ar 32:32", {"aspect_ratio": "32:32"}),
        ("--ar 03:02", {"aspect_ratio": "3:2"}),
        ("--size 1024x768", {"width": 1024, "height": 768}),
        ("--size 64x2048", {"width": 64, "height": 2048}),
        ("--size 512X512", {"width": 512, "height": 512}),
        ("--size 512*256", {"width": 512, "height": 256}),
        ("--n 1", {"n": 1}),
        ("--n 4", {"n": 4}),
        ("--seed 0", {"seed": 0}),
        ("--seed 4294967295", {"seed": 4294967295}),
        ("--steps 1", {"steps": 1}),
        ("--steps 100", {"steps": 100}),
        ("--cfg 1", {"cfg": 1.0}),
        ("--cfg 7.5", {"cfg": 7.5}),
        ("--cfg 30", {"cfg": 30.0}),
        ("--strength 0", {"strength": 0.0}),
        ("--strength 0.6", {"strength": 0.6}),
        ("--strength 1", {"strength": 1.0}),
        ("--model sdxl-1.0_beta/v2", {"model": "sdxl-1.0_beta/v2"}),
        ("--model SDXL", {"model": "SDXL"}),  # model ids keep their case
        ("--provider zhiqite", {"provider": "zhiqite"}),
        ("--provider ZhiQiTe", {"provider": "zhiqite"}),  # vendor ids are lower-cased
        ("--no text", {"negative_prompt": "text"}),
    ],
)
def test_each_flag(flags: str, expected: dict) -> None:
    params = parse_prompt(f"a lighthouse {flags}")
    assert params.prompt == "a lighthouse"
    for name, value in expected.items():
        assert getattr(params, name) == value, name
    # nothing else moved away from its default
    untouched = set(GenerationParams.model_fields) - set(expected) - {"prompt"}
    default = GenerationParams()
    for name in untouched:
        assert getattr(params, name) == getattr(default, name), name


def test_no_takes_several_words_up_to_the_next_flag() -> None:
    params = parse_prompt("a castle --no text, watermark blurry hands --ar 2:3 at night")
    assert params.negative_prompt == "text, watermark blurry hands"
    assert params.aspect_ratio == "2:3"
    assert params.prompt == "a castle at night"


def test_no_at_the_end_takes_the_rest() -> None:
    params = parse_prompt("a castle --no people cars")
    assert params.negative_prompt == "people cars"
    assert params.prompt == "a castle"


def test_all_flags_together() -> None:
    params = parse_prompt(
        "cyberpunk street --ar 16:9 --size 1024x576 --n 3 --seed 7 --no rain, fog --steps 30 "
        "--cfg 6.5 --strength 0.25 --model sdxl --provider sandbox"
    )
    assert params.model_dump() == {
        "prompt": "cyberpunk street",
        "negative_prompt": "rain, fog",
        "aspect_ratio": "16:9",
        "width": 1024,
        "height": 576,
        "n": 3,
        "seed": 7,
        "steps": 30,
        "cfg": 6.5,
        "strength": 0.25,
        "model": "sdxl",
        "provider": "sandbox",
    }


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("cat --aspect 3:2", "aspect_ratio", "3:2"),
        ("cat --neg blur", "negative_prompt", "blur"),
        ("cat --negative blur noise", "negative_prompt", "blur noise"),
        ("cat --count 2", "n", 2),
        ("cat --vendor Sandbox", "provider", "sandbox"),
        ("cat --AR 3:2", "aspect_ratio", "3:2"),
        ("cat --N 3", "n", 3),
        ("cat --Aspect 3:2", "aspect_ratio", "3:2"),
    ],
)
def test_aliases_and_case(text: str, name: str, value: object) -> None:
    params = parse_prompt(text)
    assert params.prompt == "cat"
    assert getattr(params, name) == value


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("cat --ar=16:9", "aspect_ratio", "16:9"),
        ("cat --size=640x480", "width", 640),
        ("cat --n=2", "n", 2),
        ("cat --seed=99", "seed", 99),
        ("cat --steps=12", "steps", 12),
        ("cat --cfg=3.5", "cfg", 3.5),
        ("cat --strength=0.1", "strength", 0.1),
        ("cat --model=flux", "model", "flux"),
        ("cat --provider=SANDBOX", "provider", "sandbox"),
        ("cat --aspect=2:1", "aspect_ratio", "2:1"),
        ("cat —ar=16:9", "aspect_ratio", "16:9"),
    ],
)
def test_flag_equals_value_form(text: str, name: str, value: object) -> None:
    params = parse_prompt(text)
    assert params.prompt == "cat"
    assert getattr(params, name) == value


def test_no_equals_takes_one_word_only() -> None:
    params = parse_prompt("cat --no=text dog")
    assert params.negative_prompt == "text"
    assert params.prompt == "cat dog"


# --------------------------------------------------------------------------- #
# Full-width / em-dash variants (Chinese input methods)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dash", ["—", "——", "–", "––", "－－", "--"])
def test_dash_variants_introduce_flags(dash: str) -> None:
    params = parse_prompt(f"一只猫 {dash}ar 16:9 {dash}n 2 {dash}no 文字")
    assert params.prompt == "一只猫"
    assert params.aspect_ratio == "16:9"
    assert params.n == 2
    assert params.negative_prompt == "文字"


def test_dash_variant_at_start_of_text() -> None:
    params = parse_prompt("—ar 3:4 一只猫")
    assert params.aspect_ratio == "3:4"
    assert params.prompt == "一只猫"


def test_full_width_colon_in_ratio() -> None:
    assert parse_prompt("猫 —ar 16：9").aspect_ratio == "16:9"
    assert parse_prompt("猫 --ar 2：3").aspect_ratio == "2:3"


@pytest.mark.parametrize("sep", ["x", "X", "×", "*"])
def test_size_separators(sep: str) -> None:
    params = parse_prompt(f"猫 —size 800{sep}600")
    assert (params.width, params.height) == (800, 600)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cat —ar 16:9", "cat --ar 16:9"),
        ("cat ——ar 16:9", "cat --ar 16:9"),
        ("cat –ar 16:9", "cat --ar 16:9"),
        ("cat －－ar 16:9", "cat --ar 16:9"),
        ("—ar 1:1", "--ar 1:1"),
        ("cat\n—no dog", "cat\n--no dog"),
        # dashes inside words or before non-letters are prose, not flags
        ("well—known author", "well—known author"),
        ("a – b", "a – b"),
        ("cat — ar", "cat — ar"),
        ("pages 10–20", "pages 10–20"),
        ("cat —5", "cat —5"),
        ("cat ———ar", "cat ———ar"),
    ],
)
def test_normalize_dashes(text: str, expected: str) -> None:
    assert normalize_dashes(text) == expected


def test_em_dash_inside_prompt_is_kept() -> None:
    assert parse_prompt("a well—known tower — at dusk").prompt == "a well—known tower — at dusk"


# --------------------------------------------------------------------------- #
# strip_command
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/imagine a cat", "a cat"),
        ("/imagine@DrawbridgeBot a cat --ar 1:1", "a cat --ar 1:1"),
        ("  /draw   a cat  ", "a cat"),
        ("/img\na cat", "a cat"),
        ("/imagine", ""),
        ("/imagine@DrawbridgeBot", ""),
        ("a cat /imagine", "a cat /imagine"),
        ("/usr/bin is a path", "/usr/bin is a path"),
        ("a cat", "a cat"),
        ("/imagine /imagine twice", "/imagine twice"),
    ],
)
def test_strip_command(text: str, expected: str) -> None:
    assert strip_command(text) == expected


# --------------------------------------------------------------------------- #
# Errors: key and values
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("cat --foo bar", "--foo"),
        ("cat --Foo", "--Foo"),
        ("cat —style raw", "--style"),
        ("cat --v 6", "--v"),
        ("cat --- x", "---"),
        ("cat --ar16:9", "--ar16:9"),
        ("cat --bogus=1", "--bogus"),
    ],
)
def test_unknown_flag(text: str, flag: str) -> None:
    error = error_of(text)
    assert error.key == "err_unknown_flag"
    assert error.values == {"flag": flag, "known": KNOWN}


@pytest.mark.parametrize(
    ("text", "flag", "example"),
    [
        ("cat --ar", "--ar", "16:9"),
        ("cat --ar --n 2", "--ar", "16:9"),
        ("cat --ar=", "--ar", "16:9"),
        ("cat --size", "--size", "1024x768"),
        ("cat --n", "--n", "4"),
        ("cat --seed", "--seed", "42"),
        ("cat --no", "--no", "text, watermark"),
        ("cat --no --ar 1:1", "--no", "text, watermark"),
        ("cat --steps", "--steps", "30"),
        ("cat --cfg", "--cfg", "7"),
        ("cat --strength", "--strength", "0.6"),
        ("cat --model", "--model", "sdxl"),
        ("cat --provider", "--provider", "zhiqite"),
        ("cat --vendor", "--provider", "zhiqite"),
        ("cat —ar", "--ar", "16:9"),
    ],
)
def test_flag_needs_value(text: str, flag: str, example: str) -> None:
    error = error_of(text)
    assert error.key == "err_flag_needs_value"
    assert error.values == {"flag": flag, "example": example}


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("cat --ar 1:1 --ar 2:3", "--ar"),
        ("cat --ar 1:1 --aspect 2:3", "--ar"),
        ("cat --n 1 --count 2", "--n"),
        ("cat --no a --neg b", "--no"),
        ("cat --seed 1 --seed=2", "--seed"),
        ("cat --provider a —vendor b", "--provider"),
        ("cat --cfg 2 --CFG 3", "--cfg"),
    ],
)
def test_flag_twice(text: str, flag: str) -> None:
    error = error_of(text)
    assert error.key == "err_flag_twice"
    assert error.values == {"flag": flag}


@pytest.mark.parametrize(
    ("flag", "value", "low", "high"),
    [
        ("--n", "0", 1, 4),
        ("--n", "5", 1, 4),
        ("--n", "-1", 1, 4),
        ("--n", "two", 1, 4),
        ("--n", "1.5", 1, 4),
        ("--n", "nan", 1, 4),
        ("--seed", "-1", 0, 4_294_967_295),
        ("--seed", "4294967296", 0, 4_294_967_295),
        ("--seed", "abc", 0, 4_294_967_295),
        ("--seed", "9" * 5000, 0, 4_294_967_295),
        ("--seed", "inf", 0, 4_294_967_295),
        ("--steps", "0", 1, 100),
        ("--steps", "101", 1, 100),
        ("--steps", "3e1", 1, 100),
    ],
)
def test_out_of_range_int(flag: str, value: str, low: int, high: int) -> None:
    error = error_of(f"cat {flag} {value}")
    assert error.key == "err_bad_int"
    assert error.values == {"flag": flag, "low": low, "high": high}


@pytest.mark.parametrize(
    ("flag", "value", "low", "high"),
    [
        ("--cfg", "0.99", 1.0, 30.0),
        ("--cfg", "30.01", 1.0, 30.0),
        ("--cfg", "nan", 1.0, 30.0),
        ("--cfg", "NaN", 1.0, 30.0),
        ("--cfg", "inf", 1.0, 30.0),
        ("--cfg", "-inf", 1.0, 30.0),
        ("--cfg", "1e400", 1.0, 30.0),
        ("--cfg", "seven", 1.0, 30.0),
        ("--strength", "-0.01", 0.0, 1.0),
        ("--strength", "1.01", 0.0, 1.0),
        ("--strength", "nan", 0.0, 1.0),
        ("--strength", "infinity", 0.0, 1.0),
        ("--strength", "half", 0.0, 1.0),
    ],
)
def test_out_of_range_float(flag: str, value: str, low: float, high: float) -> None:
    error = error_of(f"cat {flag} {value}")
    assert error.key == "err_bad_float"
    assert error.values == {"flag": flag, "low": low, "high": high}


@pytest.mark.parametrize(
    "value",
    ["1:5", "5:1", "1:4.5", "0:1", "1:0", "33:1", "33:33", "16/9", "16:9:1", "abc", ":", "16:", "169"],
)
def test_bad_aspect_ratio(value: str) -> None:
    error = error_of(f"cat --ar {value}")
    assert error.key == "err_bad_ar"
    assert error.values == {"flag": "--ar", "max_side": 32}


@pytest.mark.parametrize(
    "value", ["63x64", "64x63", "2049x512", "512x2049", "1024", "1024x", "x768", "axb", "1024-768", "0x0"]
)
def test_bad_size(value: str) -> None:
    error = error_of(f"cat --size {value}")
    assert error.key == "err_bad_size"
    assert error.values == {"flag": "--size", "low": 64, "high": 2048}


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--model", "café"), ("--model", "a" * 129), ("--model", "-x"), ("--provider", "zhi;qite"), ("--provider", "<b>x</b>")],
)
def test_bad_identifier(flag: str, value: str) -> None:
    error = error_of(f"cat {flag} {value}")
    assert error.key == "err_bad_id"
    assert error.values == {"flag": flag}


def test_longest_identifier_accepted() -> None:
    assert parse_prompt("cat --model " + "m" * 128).model == "m" * 128


@pytest.mark.parametrize("text", ["", "   ", "--ar 16:9", "—n 2 --seed 3", "--no text watermark"])
def test_empty_prompt(text: str) -> None:
    error = error_of(text)
    assert error.key == "err_empty_prompt"
    assert error.values == {}


def test_prompt_at_limit_is_accepted() -> None:
    text = "a" * MAX_PROMPT_CHARS
    assert parse_prompt(text + " --n 2").prompt == text


def test_prompt_too_long() -> None:
    error = error_of("a" * (MAX_PROMPT_CHARS + 1))
    assert error.key == "err_prompt_too_long"
    assert error.values == {"length": MAX_PROMPT_CHARS + 1, "limit": MAX_PROMPT_CHARS}


def test_prompt_length_counts_joined_words() -> None:
    words = ["abcd"] * 301  # 301 * 5 - 1 = 1504 characters once joined
    error = error_of(" ".join(words))
    assert error.values == {"length": 1504, "limit": 1500}


def test_first_error_wins_and_nothing_partial() -> None:
    # An out-of-range flag before an unknown one: the first problem is reported.
    assert error_of("cat --n 9 --foo").key == "err_bad_int"
    assert error_of("cat --foo --n 9").key == "err_unknown_flag"


# --------------------------------------------------------------------------- #
# Defaults merged
# --------------------------------------------------------------------------- #


def test_user_defaults_apply() -> None:
    defaults = GenerationParams(aspect_ratio="16:9", n=2)
    params = parse_prompt("a cat", defaults)
    assert (params.prompt, params.aspect_ratio, params.n) == ("a cat", "16:9", 2)


def test_ar_overrides_user_default() -> None:
    defaults = GenerationParams(aspect_ratio="16:9", n=2)
    params = parse_prompt("a cat --ar 2:3", defaults)
    assert params.aspect_ratio == "2:3"
    assert params.n == 2


def test_n_overrides_user_default_keeping_ratio() -> None:
    params = parse_prompt("a cat --n 4", GenerationParams(aspect_ratio="16:9", n=2))
    assert (params.aspect_ratio, params.n) == ("16:9", 4)


def test_explicit_size_beats_default_ratio() -> None:
    params = parse_prompt("a cat --size 1024x768", GenerationParams(aspect_ratio="9:16"))
    assert (params.width, params.height) == (1024, 768)
    assert params.size_for(512) == (1024, 768)


def test_ar_drops_a_default_size() -> None:
    defaults = GenerationParams(aspect_ratio="1:1", width=512, height=512)
    params = parse_prompt("a cat --ar 16:9", defaults)
    assert (params.width, params.height) == (None, None)
    assert params.aspect_ratio == "16:9"
    assert params.size_for(1024) == (1024, 576)


def test_defaults_prompt_is_replaced_and_negative_kept() -> None:
    defaults = GenerationParams(prompt="old", negative_prompt="blurry", n=3)
    params = parse_prompt("new prompt", defaults)
    assert params.prompt == "new prompt"
    assert params.negative_prompt == "blurry"
    assert parse_prompt("new --no text", defaults).negative_prompt == "text"


def test_defaults_object_not_mutated() -> None:
    defaults = GenerationParams(aspect_ratio="16:9", width=640, height=360)
    parse_prompt("x --ar 1:1", defaults)
    assert (defaults.aspect_ratio, defaults.width, defaults.height) == ("16:9", 640, 360)


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #

EXAMPLES = {"arbitrary": 0, "roundtrip": 0}

_pieces = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "--ar", "—ar", "——ar", "–ar", "－－ar", "--size", "--n", "--seed", "--no", "--steps",
            "--cfg", "--strength", "--model", "--provider", "--aspect", "--neg", "--x", "--", "---",
            "--ar=", "--n=2", "16:9", "1:5", "16：9", "1024x768", "1024×768", "nan", "inf", "-inf",
            "1e400", "0", "4", "99999999999", "0.5", "café", "/imagine", "\n", "\t", "—", "×",
        ]
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.lists(_pieces, max_size=12).map(" ".join)))
def _arbitrary_text(text: str) -> None:
    EXAMPLES["arbitrary"] += 1
    try:
        result = parse_prompt(text)
    except ParseError as error:
        assert error.key.startswith("err_")
        assert isinstance(error.values, dict)
        return
    assert isinstance(result, GenerationParams)
    assert result.prompt and len(result.prompt) <= MAX_PROMPT_CHARS
    assert 1 <= result.n <= 4


def test_arbitrary_text_gives_params_or_parse_error() -> None:
    EXAMPLES["arbitrary"] = 0
    try:
        _arbitrary_text()
    finally:
        print(f"\nhypothesis: parse_prompt on arbitrary text ran {EXAMPLES['arbitrary']} examples")
    assert EXAMPLES["arbitrary"] >= 200


_word = st.text(
    alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=8
)
_ratio = st.tuples(st.integers(1, 32), st.integers(1, 32)).filter(lambda r: 0.25 <= r[0] / r[1] <= 4)
_flag_values = {
    "ar": _ratio.map(lambda r: (f"{r[0]}:{r[1]}", {"aspect_ratio": f"{r[0]}:{r[1]}"})),
    "size": st.tuples(st.integers(64, 2048), st.integers(64, 2048), st.sampled_from("xX×*")).map(
        lambda s: (f"{s[0]}{s[2]}{s[1]}", {"width": s[0], "height": s[1]})
    ),
    "n": st.integers(1, 4).map(lambda n: (str(n), {"n": n})),
    "seed": st.integers(0, 4_294_967_295).map(lambda n: (str(n), {"seed": n})),
    "steps": st.integers(1, 100).map(lambda n: (str(n), {"steps": n})),
    "cfg": st.floats(1.0, 30.0).map(lambda f: (repr(f), {"cfg": f})),
    "strength": st.floats(0.0, 1.0).map(lambda f: (repr(f), {"strength": f})),
    "model": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,19}", fullmatch=True).map(lambda m: (m, {"model": m})),
    "provider": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,19}", fullmatch=True).map(
        lambda m: (m, {"provider": m.lower()})
    ),
    "no": st.lists(_word, min_size=1, max_size=4).map(
        lambda ws: (" ".join(ws), {"negative_prompt": " ".join(ws)})
    ),
}
_spellings = {
    "ar": ["ar", "aspect", "AR"],
    "n": ["n", "count"],
    "no": ["no", "neg", "negative"],
    "provider": ["provider", "vendor"],
}


@st.composite
def _valid_request(draw: st.DrawFn) -> tuple[str, dict]:
    words = draw(st.lists(_word, min_size=1, max_size=6))
    names = draw(st.lists(st.sampled_from(sorted(_flag_values)), unique=True, max_size=len(_flag_values)))
    parts = [" ".join(words)]
    expected: dict = {"prompt": " ".join(words)}
    for name in names:
        text, values = draw(_flag_values[name])
        spelling = draw(st.sampled_from(_spellings.get(name, [name])))
        dash = draw(st.sampled_from(["--", "—", "——", "–"]))
        inline = name != "no" and draw(st.booleans())
        parts.append(f"{dash}{spelling}={text}" if inline else f"{dash}{spelling} {text}")
        expected.update(values)
    return " ".join(parts), expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_valid_request())
def _roundtrip(request: tuple[str, dict]) -> None:
    EXAMPLES["roundtrip"] += 1
    text, expected = request
    params = parse_prompt(text)
    for name, value in expected.items():
        got = getattr(params, name)
        if isinstance(value, float):
            assert math.isclose(got, value), (name, text)
        else:
            assert got == value, (name, text)
    for name in set(GenerationParams.model_fields) - set(expected):
        assert getattr(params, name) == getattr(GenerationParams(), name), (name, text)


def test_valid_prompt_and_flags_round_trip() -> None:
    EXAMPLES["roundtrip"] = 0
    try:
        _roundtrip()
    finally:
        print(f"\nhypothesis: parse_prompt round trip ran {EXAMPLES['roundtrip']} examples")
    assert EXAMPLES["roundtrip"] >= 150


def test_every_flag_has_a_parseable_example() -> None:
    # The example shown in err_flag_needs_value must itself be accepted.
    for name, spec in FLAGS.items():
        params = parse_prompt(f"cat --{name} {spec.example}")
        assert params.prompt == "cat", name
