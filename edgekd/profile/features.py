"""Which feature network FID/KID use: edgekd's packaged classifier, or a local Inception given with ``--inception``.

torchmetrics' own Inception needs torch-fidelity, which imports torchvision (it does not import beside edgekd's
torch) and downloads its weights from GitHub at run time. So a "real" Inception FID takes a local file holding the
WHOLE network, no Python class needed:
  - TorchScript (``.pt``/``.pth``/``.jit``), e.g. NVlabs' ``inception-2015-12-05.pt`` (the StyleGAN2-ADA/EDM FID
    network: uint8 [N, 3, H, W] in, called with ``return_features=True``, 2048 pool features out; it resizes to
    299 itself);
  - ONNX (``.onnx``): float32 [N, 3, H, W] input in [0, 255], the first output is the feature vector; images are
    resized (bilinear) to the model's spatial size when it is fixed.
A bare state dict (torch-fidelity's ``weights-inception-2015-12-05-*.pth``) needs torch-fidelity's model code and
is refused with that explanation. Images are grey 1-channel: they are repeated to 3 channels, in [0, 255].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.errors import EdgekdError


@dataclass
class FeatureChoice:
    """The network plus the words the report prints about it."""

    net: nn.Module
    description: str
    kind: str  # "edgekd-classifier" | "inception-torchscript" | "inception-onnx"


def _to_uint8_rgb(images: Tensor) -> Tensor:
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


class TorchScriptFeatures(nn.Module):
    """A TorchScript feature extractor (NVlabs Inception convention: uint8 RGB in, features out)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import warnings

        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; the published FID networks are TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location="cpu").eval()
        probe = self._call(torch.zeros(2, 1, 32, 32))
        self.num_features = int(probe.shape[-1])

    def _call(self, images: Tensor) -> Tensor:
        x = _to_uint8_rgb(images)
        try:
            out = self.model(x, return_features=True)
        except (RuntimeError, TypeError):  # a plain extractor without the keyword
            out = self.model(x)
        return out.reshape(out.shape[0], -1).float()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self._call(images)


class OnnxFeatures(nn.Module):
    """An ONNX feature extractor run in onnxruntime: float32 RGB in [0, 255] in, its first output out."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        spec = self.session.get_inputs()[0]
        self.input = spec.name
        h, w = spec.shape[2:4] if len(spec.shape) == 4 else (None, None)
        self.size = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self.num_features = int(self.forward(torch.zeros(1, 1, 32, 32)).shape[-1])

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = _to_uint8_rgb(images).float()
        if self.size and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        out = self.session.run(None, {self.input: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(len(images), -1)


def load_external(path: str | Path) -> FeatureChoice:
    """Open ``--inception PATH``; a missing or unusable file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"--inception {path}: no such file (give a TorchScript .pt such as NVlabs' "
                          "inception-2015-12-05.pt, or an ONNX feature extractor)")
    if path.suffix.lower() == ".onnx":
        try:
            net: nn.Module = OnnxFeatures(path)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises many kinds; the user needs one line
            raise EdgekdError(f"--inception {path}: onnxruntime cannot run it as a feature extractor ({exc})") from None
        return FeatureChoice(net, f"Inception-like ONNX feature extractor {path.name} ({net.num_features} features, "
                                  "onnxruntime)", "inception-onnx")
    try:
        net = TorchScriptFeatures(path)
    except Exception as exc:  # noqa: BLE001
        raise EdgekdError(f"--inception {path}: not a TorchScript feature extractor ({str(exc).splitlines()[0]}); a "
                          "bare state dict such as torch-fidelity's needs torch-fidelity, which cannot import beside "
                          "this torch: pass a TorchScript (NVlabs inception-2015-12-05.pt) or ONNX file") from None
    return FeatureChoice(net, f"TorchScript Inception {path.name} ({net.num_features} features)", "inception-torchscript")


def feature_network(inception: str | Path | None, builtin: str) -> FeatureChoice:
    """``--inception`` when given, else the packaged Fashion-MNIST classifier named by the recipe."""
    if inception:
        return load_external(inception)
    from edgekd.profile.classifier import FeatureNet, load_classifier

    net = FeatureNet(load_classifier(builtin))
    return FeatureChoice(net, f"edgekd's Fashion-MNIST classifier ({builtin}, {net.num_features} features; not "
                              "Inception: figures compare within edgekd only)", "edgekd-classifier")


def describe(choice: FeatureChoice) -> dict[str, Any]:
    return {"feature_net": choice.description, "feature_net_kind": choice.kind}
