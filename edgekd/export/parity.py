"""The parity gate: an exported model and PyTorch on the same fixed noise; below the PSNR bar, export fails.

Following apple/ml-stable-diffusion, every conversion is checked against the source network and fails loudly.
"""

from __future__ import annotations

import torch

from edgekd.errors import ParityError
from edgekd.manifest import ParitySpec
from edgekd.runtime.generator import Generator
from edgekd.metrics import max_abs_error, psnr


def check_parity(reference: Generator, candidate: Generator, noise: torch.Tensor, seed: int, psnr_min: float,
                 what: str, condition: torch.Tensor | None = None) -> ParitySpec:
    """Compare ``candidate`` with ``reference`` on ``noise`` (and its ``condition`` ids, for a conditional model);
    raise ParityError below ``psnr_min`` dB."""
    ref = (reference.generate(noise) if condition is None else reference.generate(noise, condition)).float()
    try:
        out = (candidate.generate(noise) if condition is None else candidate.generate(noise, condition)).float()
    except Exception as exc:  # a runtime that cannot run the file at all is a failed gate, not a crash
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ParityError(f"{what}: {candidate.runtime} could not run the exported model ({first})") from None
    if out.shape != ref.shape:
        raise ParityError(f"{what}: output shape {tuple(out.shape)} differs from PyTorch's {tuple(ref.shape)}")
    finite = bool(torch.isfinite(out).all())
    value = psnr(ref, out) if finite else float("-inf")
    spec = ParitySpec(runtime=candidate.runtime, samples=len(noise), seed=seed,
                      max_abs_error=max_abs_error(ref, out) if finite else float("inf"),
                      psnr_db=min(value, 999.0), psnr_min=psnr_min, passed=finite and value >= psnr_min)
    if not spec.passed:
        raise ParityError(
            f"{what}: parity check failed in {candidate.runtime}: PSNR {value:.1f} dB < {psnr_min:.1f} dB "
            f"(max abs error {spec.max_abs_error:.3g}) against PyTorch on {len(noise)} images; the export was not kept"
        )
    return spec
