"""Model options are declared once, in the C++ options structs, and reach Python by name: constructors, signatures,
docstrings, the `options` read-back and the named factories all come from the C++ tables."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

import sepp
from sepp import _C

HEADERS = Path(__file__).resolve().parents[1] / "csrc" / "include" / "sepp"


def torch_args(header: str, struct: str) -> list:
    """The TORCH_ARG names declared in `struct` of a public header."""
    text = (HEADERS / header).read_text()
    body = text[text.index(f"struct SEPP_API {struct} {{") :]
    body = body[: body.index("\n};")]
    return re.findall(r"TORCH_ARG\([^,]+(?:<[^>]*>)?,\s*(\w+)\)", body)


SE_EMBEDDED = ["reduction", "rd_channels", "rd_divisor", "squeeze", "gate", "se_bias"]


def expected_names(fields: list) -> list:
    """The Python names of C++ fields: the SE options flattened in, se_stages spelled `se`."""
    out = []
    for f in fields:
        if f == "se_options":
            out += SE_EMBEDDED
        else:
            out.append("se" if f == "se_stages" else f)
    return out


@pytest.mark.parametrize(
    "cls,header,struct",
    [
        (_C.SEBlock, "se_block.h", "SEBlockOptions"),
        (_C.BasicBlock, "blocks.h", "BlockOptions"),
        (_C.Bottleneck, "blocks.h", "BlockOptions"),
        (_C.ResNet, "resnet.h", "ResNetOptions"),
    ],
)
def test_every_cpp_option_is_bound_by_name_in_declaration_order(cls, header, struct):
    fields = torch_args(header, struct)
    assert fields, f"no TORCH_ARG found in {struct}"
    names = [n for n, _, _ in cls.options_spec()]
    if struct == "SEBlockOptions":
        assert names == fields
    else:
        assert names == expected_names(fields)


@pytest.mark.parametrize("cls", [sepp.SEBlock, sepp.BasicBlock, sepp.Bottleneck, sepp.ResNet])
def test_python_signature_and_docstring_come_from_the_cpp_options(cls):
    spec = cls._cpp_type.options_spec()
    params = inspect.signature(cls).parameters
    assert list(params) == [n for n, _, _ in spec]
    for name, default, doc in spec:
        expected = inspect.Parameter.empty if default is Ellipsis else default
        assert params[name].default == expected, name
        assert f"{name}: {doc}." in cls.__doc__
    assert params  # a class with no options would make the loop above vacuous


def test_options_read_back_what_was_given_by_position_or_by_name():
    by_position = sepp.ResNet("basic", (1, 1, 1, 1), 7)
    by_name = sepp.ResNet(block="basic", layers=[1, 1, 1, 1], num_classes=7)
    assert by_position.options == by_name.options
    o = by_name.options
    assert (o["block"], o["layers"], o["num_classes"], o["rd_channels"]) == ("basic", (1, 1, 1, 1), 7, None)
    assert sepp.ResNet(se=True, layers=(1, 1, 1, 1)).options["se"] == (True,) * 4
    assert sepp.SEBlock(64, rd_divisor=8).options == {
        "channels": 64,
        "reduction": 16,
        "rd_channels": None,
        "rd_divisor": 8,
        "squeeze": "avg",
        "gate": "sigmoid",
        "bias": True,
    }
    block = sepp.Bottleneck(64, 16, se=True, se_bias=False)
    assert [n for n, _ in block.se.named_parameters()] == ["fc1.weight", "fc2.weight"]
    assert block.options["se_bias"] is False


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: sepp.ResNet(depth=50), TypeError, r"ResNet: unknown option 'depth'; expected some of: block, layers"),
        (lambda: sepp.ResNet("basic", block="basic"), TypeError, r"got option 'block' twice"),
        (lambda: sepp.ResNet(layers="1111"), TypeError, r"expected a sequence of ints for option 'layers', got str"),
        (lambda: sepp.ResNet(num_classes=1.5), TypeError, r"expected an int for option 'num_classes', got float 1.5"),
        (lambda: sepp.SEBlock(64, bias=1), TypeError, r"expected a bool for option 'bias', got int 1"),
        (lambda: sepp.ResNet(num_classes=True), TypeError, r"expected an int for option 'num_classes', got bool True"),
        (
            lambda: sepp.ResNet(se=[True, 1, True, True]),
            TypeError,
            r"expected a bool or a sequence of bools for option 'se'",
        ),
        (lambda: sepp.SEBlock(), TypeError, r"SEBlock: missing the required option 'channels'"),
        (lambda: sepp.Bottleneck(64), TypeError, r"Bottleneck: missing the required option 'planes'"),
        (lambda: sepp.SEBlock(*range(1, 9)), TypeError, r"expected at most 7 positional arguments, got 8"),
    ],
)
def test_bad_options_name_what_was_expected_and_what_came(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_named_factories_come_from_the_cpp_table():
    names = sepp.model_names()
    assert "se_resnet50" in names and len(names) == len(set(names))
    for name in names:
        factory = getattr(sepp, name)
        assert factory.__name__ == name
        assert factory.__doc__.startswith(_C.model_description(name))
    assert sepp.se_resnet50.__doc__.startswith("SE-ResNet-50")


def test_a_pickled_model_is_rebuilt_from_its_options(tmp_path):
    m = sepp.se_resnet18(num_classes=5, rd_divisor=8).eval()
    torch.save(m, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=False)
    assert back.options == m.options
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(back(x), m(x))


@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50"])
def test_a_batch_of_no_images_gives_an_empty_batch_of_outputs(name):
    m = sepp.create_model(name, num_classes=7).eval()
    x = torch.randn(0, 3, 64, 64)
    with torch.no_grad():
        assert m(x).shape == (0, 7)
        assert m.forward_features(x).shape == (0, m.num_features, 2, 2)
        assert sepp.optimize_for_inference(m)(x).shape == (0, 7)
        assert sepp.optimize_for_inference(sepp.create_model(name, num_classes=0).eval())(x).shape == (
            0,
            m.num_features,
        )
