"""The contenders: what a user would run instead of sepp, each a row of the comparison with the function that sets
it up on the shared weights and input."""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import importlib.util
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import _C
from .common import DTYPES, TRAIN_LR, Skip
from .runners import onnxruntime_setup, openvino_setup, run_sepp_bench

# The timm model each sepp name is timm's: its snake names; timm's own names from resnet.py (whose state dicts sepp
# loads as they are) map to themselves; the legacy_* ones need sepp.convert and are not compared.
TIMM_NAMES = {
    "se_resnet50": "seresnet50",
    "se_resnet101": "seresnet101",
    "se_resnet152": "seresnet152",
    "se_resnet18": "seresnet18",
    "se_resnet34": "seresnet34",
    "se_resnext50_32x4d": "seresnext50_32x4d",
    "se_resnext101_32x4d": "seresnext101_32x4d",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    **{n: n for n in _C.model_names() if n.startswith(("seresne", "senet"))},
}


@dataclasses.dataclass
class Contender:
    """One row of the comparison. ``setup`` returns a zero-argument callable that runs one forward pass on the
    shared input and returns the logits (any array-like); ``external`` contenders time themselves and return
    ``(times_ms, logits)`` from ``setup`` instead; train contenders (kinds in ``TRAIN_KINDS``) return ``(step, loss)``:
    a callable that runs one training step, and the loss of one step from the shared weights, computed on a fresh
    copy of the model (so the timed model is unaffected)."""

    name: str
    kind: str
    dtype: str
    layout: str
    setup: Callable[[], Any]
    model: str
    baseline: bool = False
    external: bool = False
    note: str = ""
    compare_to: str = ""  # se-overhead rows: the name of the SE model's row they pair with


def _channels_last(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _autocast(device: str, dtype: Optional[torch.dtype]) -> ContextManager[Any]:
    """Autocast to ``dtype`` on ``device``; nothing when ``dtype`` is None."""
    return torch.autocast(device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def train_labels(args: argparse.Namespace, num_classes: int) -> torch.Tensor:
    """The fixed random labels of the training steps (deterministic for the seed)."""
    return torch.randint(num_classes, (args.batch_size,), generator=torch.Generator().manual_seed(args.seed + 1))


def train_step_runner(
    model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, dtype: str
) -> Callable[[], torch.Tensor]:
    """One training step per call on the fixed batch: forward (autocast for a reduced dtype, with a gradient scaler
    for float16), cross-entropy, backward, SGD with momentum. Returns the step's loss (detached, not synced)."""
    device = x.device.type
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=TRAIN_LR, momentum=0.9)
    scaler = torch.amp.GradScaler(device) if dtype == "float16" else None
    amp = DTYPES[dtype] if dtype != "float32" else None

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            loss = F.cross_entropy(model(x), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss.detach()

    return step


def _compile(m: torch.nn.Module, device: torch.device) -> Callable[..., Any]:
    """CPU: inductor with freezing (the weights become constants); CUDA: max-autotune."""
    import torch._inductor.config as inductor_config

    if device.type == "cpu":
        inductor_config.freezing = True
        return torch.compile(m)
    return torch.compile(m, mode="max-autotune")


class _CppForward:
    """Calls a sepp model's C++ module directly (``model._cpp.forward``), holding the model so its tensors live."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.forward = model._cpp.forward

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


class Setups:
    """The set-up functions of the built-in contenders, on one comparison's shared weights (``state``, of
    ``args.model``), input ``x`` and training labels; ``workdir`` holds the files of the external contenders."""

    def __init__(
        self, args: argparse.Namespace, state: Dict[str, torch.Tensor], x: torch.Tensor, workdir: Path
    ) -> None:
        self.args, self.state, self.x, self.workdir = args, state, x, workdir
        self.device = torch.device(args.device)
        self.labels = train_labels(args, state["fc.weight"].shape[0]) if "fc.weight" in state else None

    # ---------------------------------------------------------------------------------------- models and runners

    def runner(self, module: torch.nn.Module, dtype: str, layout: str, autocast: bool = False) -> Callable[[], Any]:
        """One inference-mode forward of ``module`` on the shared input per call: the input in ``dtype`` (in float32
        under autocast to ``dtype``), in ``layout``."""
        xin = _channels_last(self.x.to(self.device, torch.float32 if autocast else DTYPES[dtype]), layout)
        amp = DTYPES[dtype] if autocast else None
        device = self.device.type

        def run() -> Any:
            with torch.inference_mode(), _autocast(device, amp):
                return module(xin)

        return run

    def sepp_model(self, name: str, dtype: str, layout: str) -> torch.nn.Module:
        """A sepp model in eval mode on the device: the shared weights for the compared model; for another one (the
        SE overhead's network without SE) its initial weights with random BN statistics."""
        import sepp
        from sepp.testing import randomize_norms_

        m = sepp.create_model(name)
        if name == self.args.model:
            m.load_state_dict(self.state)
        else:
            randomize_norms_(m, self.args.seed)
        m = m.eval().to(self.device, DTYPES[dtype])
        return m.to(memory_format=torch.channels_last) if layout == "channels_last" else m

    def reference_model(self, dtype: str = "float32") -> torch.nn.Module:
        """``sepp.reference``'s model with the shared weights, in eval mode on the device."""
        import sepp.reference as reference

        m = reference.create_model(self.args.model)
        m.load_state_dict(self.state)
        return m.eval().to(self.device, DTYPES[dtype])

    def timm_model(self) -> torch.nn.Module:
        """timm's counterpart of the model, with the shared weights, on the device (float32)."""
        if importlib.util.find_spec("timm") is None:
            raise Skip("timm is not installed")
        import timm

        name = self.args.model
        if name not in TIMM_NAMES:
            raise Skip(f"timm has no counterpart of {name}")
        m = timm.create_model(TIMM_NAMES[name], pretrained=False)
        try:
            m.load_state_dict(self.state)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln] or [str(e).splitlines()[0]]
            raise Skip(
                f"timm {TIMM_NAMES[name]} does not take sepp's weights ({lines[0]} — timm rounds "
                f"SE widths to multiples of 8)"
            ) from None
        return m.to(self.device)

    def _train(self, make: Callable[[], torch.nn.Module], dtype: str) -> Tuple[Callable[[], Any], float]:
        """The training step of the model ``make`` builds (channels_last), and the loss of one step on a copy."""
        if self.labels is None:
            raise Skip(f"{self.args.model} has no classifier to train against labels")
        model = make().to(memory_format=torch.channels_last)
        xin = _channels_last(self.x.to(self.device), "channels_last")
        y = self.labels.to(self.device)
        check = train_step_runner(copy.deepcopy(model), xin, y, dtype)
        loss = float(check())
        del check
        return train_step_runner(model, xin, y, dtype), loss

    # ------------------------------------------------------------------------------ one set-up per contender kind

    def sepp(self, name: str, dtype: str, layout: str) -> Callable[[], Any]:
        return self.runner(self.sepp_model(name, dtype, layout), dtype, layout)

    def sepp_optimized(self, name: str, dtype: str) -> Callable[[], Any]:
        import sepp

        m = self.sepp_model(name, "float32", "nchw")
        n, _, h, w = self.x.shape
        return self.runner(
            sepp.optimize_for_inference(m, dtype=DTYPES[dtype], input_size=[n, 3, h, w]), dtype, "channels_last"
        )

    def sepp_unhooked(self, name: str, dtype: str) -> Callable[[], Any]:
        """The C++ forward called directly, past the Python face's hook bookkeeping (sepp._hooks.sync): beside the
        ``sepp`` row of the same layout it shows what hook support costs a model that has no hooks."""
        m = self.sepp_model(name, dtype, "channels_last")
        return self.runner(_CppForward(m), dtype, "channels_last")

    def sepp_compiled(self, dtype: str) -> Callable[[], Any]:
        """``torch.compile`` of the sepp model, as :meth:`compiled` compiles the reference: Dynamo traces a sepp
        model through ``sepp.reference`` over the model's own tensors (``sepp._twin``)."""
        return self.runner(
            _compile(self.sepp_model(self.args.model, "float32", "nchw"), self.device),
            dtype,
            "nchw",
            autocast=dtype != "float32",
        )

    def sepp_cpp(self, dtype: str, optimize: bool) -> Tuple[List[float], torch.Tensor]:
        return run_sepp_bench(self.args, self.state, self.x, dtype, self.workdir, optimize)

    def reference(self, dtype: str) -> Callable[[], Any]:
        return self.runner(self.reference_model(dtype), dtype, "nchw")

    def timm(self, dtype: str, layout: str) -> Callable[[], Any]:
        m = self.timm_model().eval()
        if layout == "channels_last":
            m = m.to(memory_format=torch.channels_last)
        return self.runner(m, dtype, layout, autocast=dtype != "float32")

    def compiled(self, dtype: str) -> Callable[[], Any]:
        """``torch.compile`` of the float32 reference (CPU: inductor with freezing; CUDA: max-autotune), under
        autocast for a reduced dtype."""
        return self.runner(_compile(self.reference_model(), self.device), dtype, "nchw", autocast=dtype != "float32")

    def onnxruntime(self, dtype: str) -> Callable[[], Any]:
        return onnxruntime_setup(self.args, self.x, dtype, self.workdir, self.reference_model)

    def openvino(self, dtype: str) -> Callable[[], Any]:
        return openvino_setup(self.args, self.x, dtype, self.workdir, self.reference_model)

    def train_sepp(self, dtype: str) -> Tuple[Callable[[], Any], float]:
        return self._train(functools.partial(self.sepp_model, self.args.model, "float32", "channels_last"), dtype)

    def train_timm(self, dtype: str) -> Tuple[Callable[[], Any], float]:
        return self._train(self.timm_model, dtype)


def build_contenders(
    args: argparse.Namespace, state: Dict[str, torch.Tensor], x: torch.Tensor, workdir: Path
) -> List[Contender]:
    """The built-in contenders of ``args.contenders`` less ``args.skip``, per dtype of ``args.dtypes``, in the
    report's order."""
    import sepp

    s = Setups(args, state, x, workdir)
    model = args.model
    plain = model[3:] if model.startswith("se_") and model[3:] in sepp.model_names() else None
    timm_name = TIMM_NAMES.get(model, model)
    how = "inductor, freezing" if s.device.type == "cpu" else "max-autotune"
    overhead = "no output check: a different network"
    train_note = "images/s of training steps; ratio to the sepp train step"
    rows: List[Contender] = []
    for dtype in args.dtypes:
        low = dtype != "float32"
        amp = " (autocast)" if low else ""
        for layout in ("nchw", "channels_last"):
            rows.append(
                Contender(
                    "sepp",
                    "sepp",
                    dtype,
                    layout,
                    functools.partial(s.sepp, model, dtype, layout),
                    model=model,
                    baseline=True,
                )
            )
        rows.append(
            Contender(
                "sepp optimized",
                "sepp-optimized",
                dtype,
                "channels_last",
                functools.partial(s.sepp_optimized, model, dtype),
                model=model,
                baseline=True,
            )
        )
        rows.append(
            Contender(
                "sepp, C++ forward without hook bookkeeping",
                "sepp-unhooked",
                dtype,
                "channels_last",
                functools.partial(s.sepp_unhooked, model, dtype),
                model=model,
                note="the Python face's hook bookkeeping left out; ratio to sepp channels_last",
                compare_to="sepp",
            )
        )
        rows.append(
            Contender(
                f"sepp compiled (torch.compile, {how}{', autocast' if low else ''})",
                "sepp-compiled",
                dtype,
                "nchw",
                functools.partial(s.sepp_compiled, dtype),
                model=model,
            )
        )
        for optimize in (False, True):
            rows.append(
                Contender(
                    "sepp-bench --optimize (C++)" if optimize else "sepp-bench (C++)",
                    "sepp-cpp",
                    dtype,
                    "channels_last",
                    functools.partial(s.sepp_cpp, dtype, optimize),
                    model=model,
                    external=True,
                )
            )
        if plain:
            rows.append(
                Contender(
                    f"sepp {plain} (SE overhead)",
                    "se-overhead",
                    dtype,
                    "channels_last",
                    functools.partial(s.sepp, plain, dtype, "channels_last"),
                    model=plain,
                    note=overhead,
                    compare_to="sepp",
                )
            )
            rows.append(
                Contender(
                    f"sepp optimized {plain} (SE overhead)",
                    "se-overhead",
                    dtype,
                    "channels_last",
                    functools.partial(s.sepp_optimized, plain, dtype),
                    model=plain,
                    note=overhead,
                    compare_to="sepp optimized",
                )
            )
        rows.append(
            Contender(
                "sepp.reference eager", "reference", dtype, "nchw", functools.partial(s.reference, dtype), model=model
            )
        )
        if not low:
            rows.append(
                Contender(
                    f"timm {timm_name} eager",
                    "timm",
                    dtype,
                    "nchw",
                    functools.partial(s.timm, dtype, "nchw"),
                    model=model,
                )
            )
        rows.append(
            Contender(
                f"timm {timm_name} eager{amp}",
                "timm",
                dtype,
                "channels_last",
                functools.partial(s.timm, dtype, "channels_last"),
                model=model,
            )
        )
        rows.append(
            Contender(
                f"torch.compile reference ({how}{', autocast' if low else ''})",
                "compile",
                dtype,
                "nchw",
                functools.partial(s.compiled, dtype),
                model=model,
            )
        )
        rows.append(
            Contender(
                "ONNX Runtime", "onnxruntime", dtype, "nchw", functools.partial(s.onnxruntime, dtype), model=model
            )
        )
        rows.append(Contender("OpenVINO", "openvino", dtype, "nchw", functools.partial(s.openvino, dtype), model=model))
        if args.train:
            rows.append(
                Contender(
                    f"train step sepp{amp}",
                    "train-sepp",
                    dtype,
                    "channels_last",
                    functools.partial(s.train_sepp, dtype),
                    model=model,
                    baseline=True,
                    note=train_note,
                )
            )
            rows.append(
                Contender(
                    f"train step timm {timm_name}{amp}",
                    "train-timm",
                    dtype,
                    "channels_last",
                    functools.partial(s.train_timm, dtype),
                    model=model,
                    note=train_note,
                )
            )
    keep = set(args.contenders) - set(args.skip)
    return [c for c in rows if c.kind in keep]
