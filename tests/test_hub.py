"""pretrained= through huggingface_hub, offline (HF_HUB_OFFLINE=1) on a hub cache this test builds itself:
no test touches the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import randomize_
from safetensors.torch import save_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_repo(cache, repo, model, arch):
    """A repository as huggingface_hub caches it: refs/main -> snapshots/<commit>/{config.json, model.safetensors}."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(
        json.dumps(
            {
                "architecture": arch,
                "num_classes": 1000,
                "pretrained_cfg": {
                    "input_size": [3, 224, 224],
                    "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225],
                    "interpolation": "bicubic",
                    "crop_pct": 0.95,
                    "num_classes": 1000,
                },
            }
        )
    )


SCRIPT = textwrap.dedent("""
    import sys, torch, sepp
    name, repo, out = sys.argv[1:4]
    kwargs = {}
    if len(sys.argv) > 4 and sys.argv[4] == "features":
        kwargs = {"out_indices": (1, 4), "features_only": True}
    elif len(sys.argv) > 4:
        kwargs = {"num_classes": int(sys.argv[4])}
    m = getattr(sepp, name)(pretrained=repo, **kwargs).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 64))
    torch.save({"y": y, "cfg": m.pretrained_cfg}, out)
""")


def run_offline(tmp_path, *args):
    pytest.importorskip("huggingface_hub")  # pretrained= downloads through it
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    env.pop("HF_HOME", None)
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    "name,repo,arch",
    [
        ("se_resnet50", "timm/seresnet50.a1_in1k", "seresnet50"),
        ("se_resnet50", "timm/legacy_seresnet50.in1k", "legacy_seresnet50"),
        ("seresnext26t_32x4d", "timm/seresnext26t_32x4d.bt_in1k", "seresnext26t_32x4d"),
        ("legacy_seresnext26_32x4d", "timm/legacy_seresnext26_32x4d.in1k", "legacy_seresnext26_32x4d"),
        ("legacy_senet154", "timm/legacy_senet154.in1k", "legacy_senet154"),
    ],
)
def test_pretrained_from_the_offline_hub_cache(tmp_path, name, repo, arch):
    timm = pytest.importorskip("timm")
    source = randomize_(timm.create_model(arch, pretrained=False)).eval()
    fake_hub_repo(tmp_path / "hub", repo, source, arch)
    proc = run_offline(tmp_path, name, repo, str(tmp_path / "out.pt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    torch.manual_seed(0)
    with torch.no_grad():
        expected = source(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(got["y"], expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    cfg = got["cfg"]
    assert cfg["hf_hub_id"] == repo and cfg["architecture"] == arch
    assert cfg["input_size"] == [3, 224, 224] and cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.95


def test_every_timm_name_lists_every_checkpoint_timm_publishes_for_it():
    timm = pytest.importorskip("timm")
    import sepp
    from sepp.hub import PUBLISHED

    timm_names = [n for n in sepp.model_names() if n in timm.list_models() and not n.startswith("resnet")]
    assert len(timm_names) == 29
    for name in timm_names:
        tags = tuple(f"timm/{t}" for t in timm.list_pretrained(f"{name}.*"))
        assert PUBLISHED.get(name, ()) == tags, name


def test_pretrained_with_another_num_classes_gets_a_fresh_head(tmp_path):
    timm = pytest.importorskip("timm")
    repo = "timm/seresnet50.a1_in1k"
    fake_hub_repo(tmp_path / "hub", repo, timm.create_model("seresnet50", pretrained=False), "seresnet50")
    proc = run_offline(tmp_path, "se_resnet50", repo, str(tmp_path / "out.pt"), "7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(tmp_path / "out.pt", weights_only=True)["y"].shape == (2, 7)


def test_pretrained_backbone_holds_the_checkpoints_weights_without_its_classifier(tmp_path):
    timm = pytest.importorskip("timm")
    repo = "timm/seresnet50.a1_in1k"
    source = randomize_(timm.create_model("seresnet50", pretrained=False)).eval()
    fake_hub_repo(tmp_path / "hub", repo, source, "seresnet50")
    proc = run_offline(tmp_path, "se_resnet50", repo, str(tmp_path / "out.pt"), "features")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)["y"]
    backbone = timm.create_model("seresnet50", pretrained=False, features_only=True, out_indices=(1, 4)).eval()
    backbone.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("fc.")})
    torch.manual_seed(0)
    with torch.no_grad():
        expected = backbone(torch.randn(2, 3, 64, 64))
    assert len(got) == 2
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * float(e.abs().max()))


def test_offline_without_the_files_is_a_clear_error(tmp_path):
    (tmp_path / "hub").mkdir()
    proc = run_offline(tmp_path, "se_resnet50", "timm/seresnet50.a1_in1k", str(tmp_path / "out.pt"))
    assert proc.returncode != 0
    assert "is not in the local hub cache and cannot be downloaded" in proc.stderr


def test_bad_tag_is_refused():
    import sepp

    with pytest.raises(ValueError, match=r"expected a hub repository 'owner/name'"):
        sepp.se_resnet50(pretrained="seresnet50")
