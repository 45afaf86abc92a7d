"""``python -m sepp.selftest [--device cpu|cuda|all]``: sepp's kernels checked on this machine.

Each SE operator (forward, and backward in float32 / float64) and the eager and optimized models run at small, odd
sizes (H x W = 1, 7 x 5, 13 x 17; channels that are no multiple of a vector width; NCHW and NHWC) on the device, and
are compared with the same computation in float64 on the CPU (plain ATen for the operators, :mod:`sepp.reference`
for the models). The table gives each check's largest error relative to the largest reference value. The exit
status is 1 when a check fails. Run it first on a GPU: sepp's CUDA kernels are built in CI but were never run there.

On CUDA, each kernel also checks itself the first time it runs in a dtype (:func:`sepp.ops.kernel_checks`) and, when
it fails, is replaced by ATen's operators: the checks above then pass, and a "kernel self-check" row fails instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F

from . import ops

__all__ = ["Check", "run", "main"]

# Relative tolerances (max |error| / max |reference|) per dtype.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
SHAPES = ((3, 19, 7, 5), (1, 24, 1, 1), (2, 11, 13, 17))
LAYOUTS = ("nchw", "nhwc")


@dataclasses.dataclass
class Check:
    name: str
    device: str
    dtype: str
    layout: str
    error: float
    tolerance: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.message and self.error <= self.tolerance


def _dtypes(device: str) -> List[torch.dtype]:
    if device == "cpu":
        return [torch.float64, torch.float32, torch.bfloat16]
    return [torch.float32, torch.float16, torch.bfloat16]


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else t.contiguous()


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if got.shape != want.shape:
        raise ValueError(f"shape {list(got.shape)}, expected {list(want.shape)}")
    scale = float(want.abs().max()) if want.numel() else 0.0
    diff = (got - want).abs()
    nan_mismatch = bool((torch.isnan(got) != torch.isnan(want)).any())
    if nan_mismatch:
        return float("inf")
    diff = diff[~torch.isnan(diff)]
    return float(diff.max()) / max(scale, 1e-30) if diff.numel() else 0.0


def _gate(s: torch.Tensor, gate: str) -> torch.Tensor:
    if gate == "sigmoid":
        return torch.sigmoid(s)
    if gate == "hard_sigmoid":
        return F.relu6(s + 3.0) / 6.0
    return torch.tanh(s)


def _op_checks(device: str, dtype: torch.dtype, gen: torch.Generator) -> Iterator[Check]:
    tol = TOLERANCE[dtype]
    name = str(dtype).replace("torch.", "")
    grad = dtype in (torch.float32, torch.float64)
    for shape in SHAPES:
        n, c = shape[0], shape[1]
        x64 = torch.randn(shape, dtype=torch.float64, generator=gen)
        s64 = torch.rand(n, c, dtype=torch.float64, generator=gen)
        i64 = torch.randn(shape, dtype=torch.float64, generator=gen)
        for layout in LAYOUTS:
            size = "x".join(map(str, shape))
            x = _layout(x64.to(dtype), layout).to(device).requires_grad_(grad)
            # References in float64 on the CPU, from the rounded inputs the kernel sees.
            xr = x.detach().double().cpu().requires_grad_(grad)

            def squeeze() -> float:
                z = ops.se_squeeze(x, torch.float32 if dtype != torch.float64 else None)
                zr = xr.mean((2, 3))
                err = _rel(z, zr)
                if grad:
                    g = torch.randn(z.shape, dtype=torch.float64, generator=gen)
                    (gx,) = torch.autograd.grad(z, x, g.to(z.dtype).to(device))
                    (gxr,) = torch.autograd.grad(zr, xr, g)
                    err = max(err, _rel(gx, gxr))
                return err

            yield _check(f"se_squeeze {size}", device, name, layout, squeeze, tol)

            for relu in (False, True):

                def scale() -> float:
                    s = s64.to(dtype).to(device).requires_grad_(grad)
                    idn = _layout(i64.to(dtype), layout).to(device).requires_grad_(grad)
                    y = ops.se_scale(x, s, idn, relu)
                    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
                    if not y.is_contiguous(memory_format=fmt):
                        raise ValueError(f"the output is not in the input's layout ({layout})")
                    sr = s.detach().double().cpu().requires_grad_(grad)
                    ir = idn.detach().double().cpu().requires_grad_(grad)
                    yr = xr * sr[:, :, None, None] + ir
                    yr = torch.relu(yr) if relu else yr
                    err = _rel(y, yr)
                    if grad:
                        g = torch.randn(y.shape, dtype=torch.float64, generator=gen)
                        got = torch.autograd.grad(y, (x, s, idn), g.to(y.dtype).to(device))
                        want = torch.autograd.grad(yr, (xr, sr, ir), g)
                        err = max([err] + [_rel(a, b) for a, b in zip(got, want)])
                    return err

                yield _check(f"se_scale relu={relu} {size}", device, name, layout, scale, tol)
        if shape[2] == 7:  # the excitation takes [N, C]: once per shape family
            for gate in ("sigmoid", "hard_sigmoid", "tanh"):
                rd = max(1, c // 4)
                mlp = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
                params64 = [
                    torch.randn(n, c, dtype=torch.float64, generator=gen),
                    torch.randn(rd, c, dtype=torch.float64, generator=gen) * 0.3,
                    torch.randn(rd, dtype=torch.float64, generator=gen) * 0.1,
                    torch.randn(c, rd, dtype=torch.float64, generator=gen) * 0.3,
                    torch.randn(c, dtype=torch.float64, generator=gen) * 0.1,
                ]

                def excite() -> float:
                    args = [p.to(mlp).to(device).requires_grad_(grad) for p in params64]
                    y = ops.se_excite(*args, gate)
                    ref = [a.detach().double().cpu().requires_grad_(grad) for a in args]
                    z, w1, b1, w2, b2 = ref
                    yr = _gate(F.linear(F.relu(F.linear(z, w1, b1)), w2, b2), gate)
                    err = _rel(y, yr)
                    if grad:
                        g = torch.randn(y.shape, dtype=torch.float64, generator=gen)
                        got = torch.autograd.grad(y, args, g.to(y.dtype).to(device))
                        want = torch.autograd.grad(yr, ref, g)
                        err = max([err] + [_rel(a, b) for a, b in zip(got, want)])
                    return err

                yield _check(f"se_excite {gate}", device, str(mlp).replace("torch.", ""), "-", excite, TOLERANCE[mlp])


def _check(label: str, device: str, dtype: str, layout: str, fn: Callable[[], float], tol: float) -> Check:
    """fn's error as a Check; an exception is a failed check, reported with the first line of its message."""
    try:
        return Check(label, device, dtype, layout, fn(), tol)
    except Exception as e:
        return Check(label, device, dtype, layout, float("inf"), tol, str(e).splitlines()[0])


# Small networks covering the blocks, the stems, the downsampling variants and the SE tails.
MODELS = {
    "basic": dict(block="basic", layers=(1, 1, 1, 1), num_classes=7, se=True),
    "resnext-d-aa": dict(
        block="bottleneck",
        layers=(1, 2, 1, 1),
        num_classes=5,
        se=True,
        groups=4,
        width_per_group=8,
        stem_type="deep",
        stem_width=16,
        avg_down=True,
        aa_layer="avgpool",
    ),
    "senet154-like": dict(
        block="bottleneck",
        layers=(1, 1, 1, 1),
        num_classes=5,
        se=True,
        groups=8,
        width_per_group=4,
        stem_type="deep",
        stem_width=16,
        down_kernel_size=3,
        block_reduce_first=2,
        stem_pool_ceil_mode=True,
    ),
    "preact-cifar": dict(
        block="bottleneck",
        layers=(1, 2, 1),
        stage_planes=(8, 16, 32),
        num_classes=10,
        se=True,
        stem_type="cifar",
        stem_width=8,
        preact=True,
    ),
}


def _model_checks(device: str, dtype: torch.dtype, gen: torch.Generator) -> Iterator[Check]:
    import sepp
    from sepp import reference
    from sepp.testing import randomize_

    name = str(dtype).replace("torch.", "")
    # A model's error grows with depth: four times the operators' tolerance.
    tol = 4 * TOLERANCE[dtype]
    for label, opts in MODELS.items():
        torch.manual_seed(int(torch.randint(1 << 30, (1,), generator=gen)))
        model = randomize_(sepp.ResNet(**opts).double()).eval()
        ref = reference.ResNet(**opts).double().eval()
        ref.load_state_dict(model.state_dict())
        x64 = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=gen)
        with torch.no_grad():
            want = ref(x64.to(dtype).double())
        for layout in LAYOUTS:
            label_l = f"model {label}"

            def eager() -> float:
                m = model.to(device, dtype)
                if layout == "nhwc":
                    m = m.to(memory_format=torch.channels_last)
                with torch.no_grad():
                    return _rel(m(_layout(x64.to(dtype), layout).to(device)), want)

            yield _check(f"{label_l} eager", device, name, layout, eager, tol)

        def optimized() -> float:
            m = model.to(device, torch.float64 if dtype == torch.float64 else torch.float32)
            opt = sepp.optimize_for_inference(m, dtype=dtype, input_size=[2, 3, 64, 64])
            with torch.no_grad():
                return _rel(opt(x64.to(device, dtype)), want)

        yield _check(f"model {label} optimized", device, name, "nhwc", optimized, tol)
        model.to("cpu", torch.float64)


def _kernel_self_checks(devices: Sequence[str]) -> Iterator[Check]:
    """The kernels' own run-time checks that this process ran on these devices (:func:`sepp.ops.kernel_checks`). A
    kernel that failed one has been replaced by ATen's operators, so the checks above pass; this row says so."""
    for rec in ops.kernel_checks():
        if rec["device"].split(":")[0] in devices:
            failed = rec["state"] != "ok"
            yield Check(
                f"{rec['op']} kernel self-check",
                rec["device"],
                rec["dtype"],
                "-",
                float("inf") if failed else 0.0,
                0.0,
                rec["error"] if failed else "",
            )


def run(devices: Sequence[str], seed: int = 0, models: bool = True) -> List[Check]:
    """Every check on each device (``"cpu"``, ``"cuda"``); the operators' only without ``models``. Then a row for
    each run-time self-check of a kernel (on CUDA) the checks set off."""
    out: List[Check] = []
    for device in devices:
        for dtype in _dtypes(device):
            gen = torch.Generator().manual_seed(seed)
            out.extend(_op_checks(device, dtype, gen))
            if models:
                out.extend(_model_checks(device, dtype, gen))
    out.extend(_kernel_self_checks(devices))
    return out


def table(checks: Sequence[Check]) -> str:
    lines = [
        "| check | device | dtype | layout | max rel. error | tolerance | ok |",
        "| --- | --- | --- | --- | ---: | ---: | --- |",
    ]
    for c in checks:
        err = f"{c.error:.1e}" + (f" ({c.message})" if c.message else "")
        lines.append(
            f"| {c.name} | {c.device} | {c.dtype} | {c.layout} | {err} | {c.tolerance:.0e} | "
            f"{'ok' if c.ok else 'FAILED'} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sepp.selftest", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        default="all",
        help="where to run the checks (default: the CPU, and CUDA when a device is present)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    has_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not has_cuda:
        print("sepp.selftest: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if not has_cuda:
        devices = [d for d in devices if d != "cuda"]
    checks = run(devices, args.seed)
    print(table(checks))
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed on {', '.join(devices)}.")
    if "cuda" not in devices:
        print("CUDA: not checked (" + ("no CUDA device" if not has_cuda else "--device cpu") + ").")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
