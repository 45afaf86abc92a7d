"""Property-based tests (hypothesis) of the errors: random invalid model options, model inputs and SE operator
arguments raise ValueError or TypeError naming what is wrong.

The models' properties are in test_properties_models.py, the SE operators' in test_properties_ops.py; the hypothesis
profiles are loaded in conftest.py, and the strategies the files share are in helpers.py."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
from helpers import BLOCKS, DTYPES, GATES, SQUEEZES, STRATEGIES, examples, op_shapes, randomize_
from hypothesis import given
from hypothesis import strategies as st

import sepp
from sepp.ops import se_excite, se_scale, se_squeeze

# c10's names of the dtypes, as the error messages spell them.
C10_NAME = {
    torch.float64: "Double",
    torch.float32: "Float",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
}
INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]

# --------------------------------------------------------------------------------------------- invalid options

OPTION_NAMES = list(inspect.signature(sepp.ResNet).parameters)
DEFAULTS = [p.default for p in inspect.signature(sepp.ResNet).parameters.values()]
SMALL = dict(block="basic", layers=(1, 1, 1, 1), se=True)  # SE blocks in every stage: their options are all checked
NEG = st.integers(min_value=-(2**63), max_value=-1)  # int64: what an option can hold
text = st.text(max_size=8)
floats = st.floats(allow_nan=True, allow_infinity=True)
# Not an int, a bool, a str, a float, a sequence of ints or of bools. sepp refuses a bool for an int or a float option;
# bytes pass for a str and bools for the ints in a sequence (pybind11's conversions), so neither is drawn.
not_int = (
    st.booleans()
    | text
    | floats
    | st.lists(st.integers(0, 3), max_size=3)
    | st.dictionaries(text, st.integers(), max_size=2)
)
not_bool = st.integers(-(2**70), 2**70) | text | floats | st.lists(st.booleans(), max_size=2) | st.none()
not_str = st.integers() | floats | st.booleans() | st.none() | st.lists(text, max_size=2)
not_float = st.booleans() | text | st.none() | st.lists(floats, max_size=2)
not_ints = (
    text
    | st.integers()
    | floats
    | st.none()
    | st.lists(st.integers(1, 2) | floats | text | st.none(), min_size=1, max_size=5).filter(
        lambda v: not all(isinstance(i, int) for i in v)
    )
)
not_bools = (
    text
    | st.integers()
    | floats
    | st.none()
    | st.lists(st.booleans() | st.integers() | st.none(), min_size=1, max_size=5).filter(
        lambda v: not all(isinstance(i, bool) for i in v)
    )
)
INT_OPTIONS = ["num_classes", "in_chans", "groups", "width_per_group", "reduction", "rd_channels", "rd_divisor"]
NULLABLE = {"rd_channels", "rd_divisor"}  # None means "derive it" / "no rounding"
BOOL_OPTIONS = ["stride_in_1x1", "se_bias", "relu_before_se", "zero_init_last", "stem_pool_ceil_mode"]
STR_OPTIONS = {"block": BLOCKS, "squeeze": SQUEEZES, "gate": GATES, "se_strategy": STRATEGIES}


def quoted(v: str) -> str:
    """How a message quotes the string v (up to a NUL, where the C++ message's C string ends)."""
    return f"'{v}'" if "\0" not in v else "'" + v.split("\0")[0]


def contains(msg: str, needle) -> bool:
    """needle: a string, or a tuple of strings any one of which will do."""
    return any(n in msg for n in ((needle,) if isinstance(needle, str) else needle))


def case(values, exc, needles, base=SMALL, name=None):
    """A strategy of (args, kwargs, exception type, strings its message must contain): the options ``base`` with
    option ``name`` set to each value drawn from ``values``; ``needles(v)`` lists the strings."""
    return values.map(lambda v: ((), {**base, name: v}, exc, needles(v)))


def wrong_type(name, values, what):
    return case(
        values, TypeError, lambda v: [f"expected {what} for option '{name}', got {type(v).__name__}"], name=name
    )


def out_of_range(name, values, base=SMALL):
    return case(values, ValueError, lambda v: [name, str(v)], base=base, name=name)


def bad_string(name, valid):
    return case(
        # A NUL is refused before the choice is checked (tests/test_errors.py covers it).
        st.text(max_size=12).filter(lambda v: v not in valid and "\0" not in v),
        ValueError,
        lambda v: [f"expected {name} to be", quoted(v)],
        name=name,
    )


BOTTLENECK = {**SMALL, "block": "bottleneck"}
WIDTH = ("width_per_group", "base_width")
unknown_name = st.text(min_size=1, max_size=12).filter(lambda s: s not in OPTION_NAMES)
INVALID_OPTIONS = {
    "unknown-name": unknown_name.map(lambda n: ((), {**SMALL, n: 1}, TypeError, ["ResNet: unknown option", quoted(n)])),
    "too-many-positional": st.lists(
        st.integers(0, 1), min_size=len(OPTION_NAMES) + 1, max_size=len(OPTION_NAMES) + 3
    ).map(lambda a: (a, {}, TypeError, [f"expected at most {len(OPTION_NAMES)} positional arguments, got {len(a)}"])),
    "given-twice": st.integers(1, len(OPTION_NAMES)).map(
        lambda k: (DEFAULTS[:k], {OPTION_NAMES[k - 1]: DEFAULTS[k - 1]}, TypeError, [f"'{OPTION_NAMES[k - 1]}' twice"])
    ),
    **{f"{n}-not-int": wrong_type(n, not_int if n in NULLABLE else not_int | st.none(), "an int") for n in INT_OPTIONS},
    **{f"{n}-not-bool": wrong_type(n, not_bool, "a bool") for n in BOOL_OPTIONS},
    **{f"{n}-not-str": wrong_type(n, not_str, "a str") for n in STR_OPTIONS},
    "layers-not-ints": wrong_type("layers", not_ints, "a sequence of ints"),
    "se-not-bools": wrong_type("se", not_bools, "a bool or a sequence of bools"),
    "drop_rate-not-float": wrong_type("drop_rate", not_float, "a float"),
    "num_classes-negative": out_of_range("num_classes", NEG),
    "in_chans-below-1": out_of_range("in_chans", NEG | st.just(0)),
    # no SE block has more than 2048 channels
    "reduction-out-of-range": out_of_range("reduction", NEG | st.just(0) | st.integers(2049, 2**63 - 1)),
    "rd_channels-negative": out_of_range("rd_channels", NEG),
    "rd_divisor-negative": out_of_range("rd_divisor", NEG),
    "groups-below-1": out_of_range("groups", NEG | st.just(0), base=BOTTLENECK),
    # The blocks call width_per_group base_width (torchvision's name), and so do their messages.
    "width_per_group-below-1": case(
        NEG | st.just(0), ValueError, lambda v: [WIDTH, str(v)], base=BOTTLENECK, name="width_per_group"
    ),
    "groups-in-basic-blocks": case(st.integers(2, 64), ValueError, lambda v: ["groups", "bottleneck"], name="groups"),
    "width_per_group-in-basic-blocks": case(
        st.integers(1, 63), ValueError, lambda v: [WIDTH, "bottleneck"], name="width_per_group"
    ),
    "drop_rate-out-of-range": case(
        st.floats(min_value=1.0) | st.floats(max_value=0.0, exclude_max=True).filter(lambda v: v < 0) | floats,
        ValueError,
        lambda v: ["expected 0 <= drop_rate < 1"],
        name="drop_rate",
    ).filter(lambda c: not 0 <= c[1]["drop_rate"] < 1),
    "layers-not-4": case(
        st.lists(st.integers(1, 2), max_size=8).filter(lambda v: len(v) != 4),
        ValueError,
        lambda v: [f"expected as many stage depths in layers as stage_planes (4), got {len(v)}"],
        name="layers",
    ),
    "layer-depth-below-1": case(
        st.lists(st.integers(-(2**63), 2), min_size=4, max_size=4).filter(lambda v: min(v) < 1),
        ValueError,
        lambda v: ["expected every stage depth >= 1", "layers"],
        name="layers",
    ),
    "se-not-4": case(  # equal bools are a bool: the same in every stage
        st.lists(st.booleans(), max_size=8).filter(lambda v: len(v) != 4 and len(set(v)) > 1),
        ValueError,
        lambda v: ["se", f"expected a bool or 4 bools (one per stage), got {len(v)}"],
        name="se",
    ),
    **{f"bad-{n}": bad_string(n, valid) for n, valid in STR_OPTIONS.items()},
}


@pytest.mark.parametrize("kind", list(INVALID_OPTIONS))
@examples(0.1)
@given(data=st.data())
def test_random_invalid_options_raise_a_value_or_type_error_that_names_the_problem(kind, data):
    args, kwargs, exc, needles = data.draw(INVALID_OPTIONS[kind], label="args, kwargs, exception, message parts")
    with pytest.raises((ValueError, TypeError)) as e:
        sepp.ResNet(*args, **kwargs)
    msg = str(e.value)
    assert isinstance(e.value, exc), msg
    for s in needles:
        assert contains(msg, s), s


# ---------------------------------------------------------------------------------------------- invalid inputs


@functools.lru_cache(maxsize=None)
def small_model(in_chans: int, dtype: torch.dtype, optimized: bool):
    m = randomize_(sepp.ResNet(block="basic", layers=(1, 1, 1, 1), num_classes=3, in_chans=in_chans, se=True))
    m = m.to(dtype).eval()
    return sepp.optimize_for_inference(m) if optimized else m


@st.composite
def invalid_inputs(draw, kind: str, in_chans: int, dtype: torch.dtype):
    """(input, exception type, strings its message must contain): a valid input with one thing of ``kind`` wrong."""
    side = st.integers(1, 40)
    if kind == "rank":
        shape = draw(st.lists(st.integers(1, 5), max_size=6).filter(lambda s: len(s) != 4))
        needles = [f"expected a 4-D input [N, C, H, W], got a {len(shape)}-D tensor"]
        return torch.randn(shape, dtype=dtype), ValueError, needles
    n, h, w = draw(st.integers(1, 3)), draw(side), draw(side)
    if kind == "channels":
        c = draw(st.integers(0, 8).filter(lambda c: c != in_chans))
        needles = [f"expected {in_chans} input channels, got {c}"]
        return torch.randn(n, c, h, w, dtype=dtype), ValueError, needles
    if kind == "integer-dtype":
        bad = draw(st.sampled_from(INT_DTYPES))
        needles = [f"expected a floating-point input, got {C10_NAME[bad]}"]
        return torch.ones(n, in_chans, h, w, dtype=bad), TypeError, needles
    bad = draw(st.sampled_from([d for d in DTYPES if d != dtype]))
    needles = [f"expected a {C10_NAME[dtype]} input (the weights' dtype), got {C10_NAME[bad]}"]
    return torch.randn(n, in_chans, h, w, dtype=bad), TypeError, needles


@pytest.mark.parametrize("kind", ["rank", "channels", "integer-dtype", "float-dtype"])
@examples(0.25)
@given(
    in_chans=st.sampled_from([1, 3]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    optimized=st.booleans(),
    train=st.booleans(),
    data=st.data(),
)
def test_random_invalid_inputs_raise_a_value_or_type_error_that_names_the_problem(
    kind, in_chans, dtype, optimized, train, data
):
    m = small_model(in_chans, dtype, optimized)
    if not optimized:
        m.train(train)
    x, exc, needles = data.draw(invalid_inputs(kind, in_chans, dtype), label="input, exception, message parts")
    with pytest.raises((ValueError, TypeError)) as e:
        m(x)
    msg = str(e.value)
    assert isinstance(e.value, exc), msg
    for s in needles:
        assert s in msg, s


@st.composite
def invalid_op_calls(draw, kind: str):
    """(a call of one of the SE operators, exception type, strings its message must contain): valid arguments of a
    random shape with one thing of ``kind`` wrong."""
    n, c, h, w = draw(op_shapes)
    r = draw(st.integers(1, 16))
    x, s = torch.randn(n, c, h, w), torch.rand(n, c)
    z, w1, b1, w2, b2 = torch.randn(n, c), torch.randn(r, c), torch.randn(r), torch.randn(c, r), torch.randn(c)
    if kind in ("squeeze-rank", "scale-rank"):
        shape = draw(st.lists(st.integers(1, 4), max_size=6).filter(lambda v: len(v) != 4))
        op = "se_squeeze" if kind == "squeeze-rank" else "se_scale"
        call = (
            (lambda: se_squeeze(torch.randn(shape))) if op == "se_squeeze" else lambda: se_scale(torch.randn(shape), s)
        )
        return call, ValueError, [f"{op}: expected x of shape [N, C, H, W], got {len(shape)}-D"]
    if kind in ("squeeze-integer", "scale-integer"):
        bad = draw(st.sampled_from(INT_DTYPES))
        xi = torch.ones(n, c, h, w, dtype=bad)
        call = (lambda: se_squeeze(xi)) if kind == "squeeze-integer" else lambda: se_scale(xi, s.to(bad))
        return call, TypeError, [f"expected a floating-point x, got {C10_NAME[bad]}"]
    if kind == "scale-shape":
        shape = draw(st.lists(st.integers(1, 81), min_size=2, max_size=2).filter(lambda v: v != [n, c]))
        return lambda: se_scale(x, torch.rand(shape)), ValueError, [f"expected scale of shape [{n}, {c}] or"]
    if kind == "scale-dtype":
        bad = draw(st.sampled_from([torch.float64, torch.float16, torch.bfloat16]))
        return lambda: se_scale(x, s.to(bad)), TypeError, [f"expected scale of dtype Float (x's), got {C10_NAME[bad]}"]
    if kind == "identity-shape":
        shape = draw(st.tuples(*[st.integers(1, 17)] * 4).filter(lambda v: v != (n, c, h, w)))
        return lambda: se_scale(x, s, torch.randn(shape)), ValueError, ["expected identity of shape"]
    if kind == "excite-w1-shape":
        c1 = draw(st.integers(1, 81).filter(lambda v: v != c))
        bad_w1 = torch.randn(r, c1)
        needles = [f"expected w1 of shape [R, {c}] (C from z), got [{r}, {c1}]"]
        return lambda: se_excite(z, bad_w1, b1, w2, b2), ValueError, needles
    gate = draw(st.text(max_size=12).filter(lambda g: g not in GATES))
    needles = ["expected gate 'sigmoid', 'hard_sigmoid' or 'tanh', got", quoted(gate)]
    return lambda: se_excite(z, w1, b1, w2, b2, gate), ValueError, needles


OP_ERRORS = ["squeeze-rank", "scale-rank", "squeeze-integer", "scale-integer", "scale-shape", "scale-dtype"]
OP_ERRORS += ["identity-shape", "excite-w1-shape", "excite-gate"]


@pytest.mark.parametrize("kind", OP_ERRORS)
@examples(0.25)
@given(data=st.data())
def test_random_invalid_operator_arguments_raise_a_value_or_type_error_that_names_the_problem(kind, data):
    call, exc, needles = data.draw(invalid_op_calls(kind), label="call, exception, message parts")
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    msg = str(e.value)
    assert isinstance(e.value, exc), msg
    for s in needles:
        assert contains(msg, s), s
