"""Structured (channel) pruning with torch-pruning's DepGraph, and how a pruned network is saved and rebuilt.

Pruning removes whole channels (conv filters, linear rows, norm channels) so the network really gets smaller and
faster in every runtime, ONNX/TFLite/CoreML included; it needs no sparse kernels.

API (what other modules call):

    pruned = prune_unet(unet, 0.5, importance="l2", ignore=())   # a pruned deep copy of a diffusers UNet2DModel
    student = prune_student(student, 0.5)                         # any edgekd student (one-step UNet, layerwise, O2MKD)
    structure = pruned_structure(pruned)                          # JSON dict: what differs from the unpruned build
    unet = build_pruned_unet(pruned.config, structure)            # an empty-weight UNet of the pruned shapes
    save_pruned_unet(pruned, folder) / load_pruned_unet(folder)   # diffusers-style folder + edgekd_pruned.json

A model made of several UNets (O2MKD) stores one (config, structure) pair per UNet, e.g.:

    arch = {"type": "pruned", "config": unpruned_config, "structure": unet.pruned_structure}   # when is_pruned(unet)
    unet = build_pruned_unet(arch["config"], arch["structure"])   # then load_state_dict(...) as usual

Why a "structure": a pruned UNet cannot be rebuilt from a plain diffusers config (``block_out_channels`` halved
would also halve the sinusoidal time projection, which pruning never touches, and GroupNorm keeps its group
count). So a pruned model is stored as its UNPRUNED config plus the difference: every module attribute that
changed (``Conv2d.out_channels``, ``GroupNorm.num_channels``, ``Downsample2D.channels``, ...) and every tensor
whose shape changed. ``apply_structure`` replays that on a fresh unpruned build and resizes the tensors, after
which ``load_state_dict`` fills the weights from safetensors. No pickle anywhere.

Students carry it in their ``config.json`` under ``"pruned"`` (set by ``prune_student`` as
``student.pruned_structure``, written by ``export_config()``, replayed by ``from_config()`` through
``apply_structure``), so ``save_student`` / ``load_student`` / export / profile work on a pruned student unchanged.

What is pruned: local pruning, ``ratio`` of the output channels of every group of coupled layers (DepGraph
couples residual adds, skip concatenations, norms). Never pruned: the output convolution (image channels), the
layers whose name contains one of ``ignore``, and the attention q/k/v projections (their width sets the heads;
pruning them independently would scramble the dot products), so attention keeps its inner width while its input
and output channels shrink with the block. GroupNorm keeps its group count: torch-pruning removes the same
channels from every group; a GroupNorm with one channel per group is per-channel and is pruned freely (its
group count follows its channels). A level whose tensors also meet a GroupNorm with several channels per group
(an up-block's skip concatenation) shrinks by whole groups only, so small levels may shrink less than ``ratio``.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from edgekd.errors import EdgekdError

IMPORTANCES = ("l1", "l2", "taylor", "lamp", "random")
STRUCTURE_FORMAT = "edgekd-pruned-v1"
PRUNED_FILE = "edgekd_pruned.json"
_SCALARS = (bool, int, float, str, type(None))


# --------------------------------------------------------------------------------------------- pruning


def make_importance(name: str) -> Any:
    """The torch-pruning importance criterion for a recipe name (l1, l2, taylor, lamp, random)."""
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "lamp":
        return tp.importance.LAMPImportance(p=2)
    if name == "random":
        return tp.importance.RandomImportance()
    raise EdgekdError(f"unknown pruning importance '{name}' (choose one of {', '.join(IMPORTANCES)})")


def check_ratio(ratio: float) -> float:
    if not 0.0 < float(ratio) < 1.0:
        raise EdgekdError(f"pruning ratio {ratio} is out of range: give the fraction of channels to remove, "
                          "strictly between 0 and 1 (e.g. 0.5)")
    return float(ratio)


def prune_module(
    model: nn.Module,
    example_inputs: Any,
    ratio: float,
    importance: str = "l2",
    ignored_layers: Iterable[nn.Module] = (),
    ignore: Sequence[str] = (),
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
    output_transform: Callable[[Any], Any] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Prune ``model`` IN PLACE with torch-pruning's MetaPruner (local pruning, one step); return it.

    ``taylor`` needs gradients: they come from the mean squared output on ``example_inputs`` (data-free: the
    channels the output is most sensitive to are kept). ``random`` is seeded by ``seed``.
    """
    import torch_pruning as tp

    check_ratio(ratio)
    imp = make_importance(importance)
    ignored = list(ignored_layers)
    if ignore:
        ignored += [m for name, m in model.named_modules() if name and any(s in name for s in ignore)]
    was_training = model.training
    trainable = any(p.requires_grad for p in model.parameters())
    model.eval().requires_grad_(True)  # DepGraph traces autograd; eval keeps BatchNorm statistics untouched
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pruner = tp.pruner.MetaPruner(model, example_inputs, importance=imp, pruning_ratio=float(ratio),
                                          ignored_layers=ignored, forward_fn=forward_fn,
                                          output_transform=output_transform)
            _free_per_channel_norms(pruner)
            if importance == "taylor":
                model.zero_grad()
                out = forward_fn(model, example_inputs) if forward_fn else model(*_as_tuple(example_inputs))
                out = output_transform(out) if output_transform else out
                sum(o.float().pow(2).mean() for o in _tensors(out)).backward()
            pruner.step()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training).requires_grad_(trainable)
    return model


def _free_per_channel_norms(pruner: Any) -> None:
    """GroupNorms with one channel per group normalise each channel alone: prune them like any channel.

    torch-pruning keeps every GroupNorm's group count and removes the same share of every group, which removes
    nothing from a group of one channel (8 channels, 8 groups). Such a norm is per-channel, so dropping whole
    channels leaves the others' normalisation unchanged; afterwards its group count becomes its channel count.
    """
    for groups in (pruner.out_channel_groups, pruner.in_channel_groups):
        for module in list(groups):
            if isinstance(module, nn.GroupNorm) and module.num_channels == module.num_groups:
                del groups[module]


def fix_diffusers_attributes(model: nn.Module, run: Callable[[], Any]) -> None:
    """Make the channel counts diffusers modules keep as plain attributes agree with the pruned weights.

    Downsample2D/Upsample2D assert ``channels`` against their input (learned from one forward through
    pre-hooks, so pool-based samplers work too); ResnetBlock2D/Attention keep in/out widths for reference;
    GroupNorm's group count must divide its channels.
    """
    for module in model.modules():
        if isinstance(module, nn.GroupNorm) and module.num_channels % module.num_groups:
            module.num_groups = max(g for g in range(1, module.num_groups + 1) if module.num_channels % g == 0)
    hooks = []
    for module in model.modules():
        kind = type(module).__name__
        if kind.startswith(("Downsample", "Upsample")) and hasattr(module, "channels"):
            def pre(mod: nn.Module, args: tuple, _kind: str = kind) -> None:
                mod.channels = int(args[0].shape[1])
                conv = getattr(mod, "conv", None)
                mod.out_channels = int(conv.out_channels) if isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d,
                                                                                nn.ConvTranspose2d)) else mod.channels
            hooks.append(module.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    for module in model.modules():
        kind = type(module).__name__
        if kind.startswith("ResnetBlock") and hasattr(module, "norm1") and hasattr(module, "conv2"):
            module.in_channels = int(module.norm1.num_channels)
            module.out_channels = int(module.conv2.out_channels)
        elif kind == "Attention" and hasattr(module, "to_q"):
            module.query_dim = int(module.to_q.in_features)
            module.out_dim = int(module.to_out[0].out_features)


def unet_example(unet: nn.Module, batch: int = 2, timestep: int = 999) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, t) for tracing a UNet2DModel: a batch of 2 noise images and one timestep per image."""
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    device = next(unet.parameters()).device
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, int(cfg.in_channels), int(size), int(size), generator=gen).to(device)
    return x, torch.full((batch,), int(timestep), dtype=torch.long, device=device)


def _unet_ignored(unet: nn.Module) -> list[nn.Module]:
    """conv_out (image channels) and every attention's q/k/v (their width is heads x head_dim)."""
    ignored: list[nn.Module] = [unet.conv_out]
    for module in unet.modules():
        if type(module).__name__ == "Attention":
            ignored += [m for m in (getattr(module, n, None) for n in ("to_q", "to_k", "to_v")) if m is not None]
    return ignored


def prune_unet_(unet: nn.Module, ratio: float, importance: str = "l2", ignore: Sequence[str] = (),
                timestep: int = 999, seed: int = 0) -> nn.Module:
    """Prune a diffusers UNet2DModel IN PLACE (see ``prune_unet``)."""
    example = unet_example(unet, timestep=timestep)
    prune_module(unet, example, ratio, importance, _unet_ignored(unet), ignore,
                 output_transform=lambda out: out.sample, seed=seed)
    fix_diffusers_attributes(unet, lambda: unet(*example))
    unet.pruned_structure = pruned_structure(unet)
    return unet


def prune_unet(unet: nn.Module, ratio: float, importance: str = "l2", ignore: Sequence[str] = (),
               timestep: int = 999, seed: int = 0) -> nn.Module:
    """A pruned deep copy of a diffusers UNet2DModel that still runs; ``unet.config`` stays the UNPRUNED config.

    The copy carries ``pruned_structure`` (a JSON dict, see ``pruned_structure``): store it beside
    ``unet.config`` and rebuild with ``build_pruned_unet(config, structure)``. Pruning a pruned UNet again works
    (the structure is always taken against the unpruned config).

    ``ratio``: fraction of channels removed per layer group (0 < ratio < 1). ``importance``: l1, l2 (weight
    magnitude), taylor (data-free, see ``prune_module``), lamp, random. ``ignore``: module-name substrings whose
    output channels are never pruned (e.g. ``["mid_block"]``). ``timestep`` is used for tracing and Taylor scores.
    """
    return prune_unet_(copy.deepcopy(unet), ratio, importance, ignore, timestep, seed)


def _unets_in(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if type(m).__name__ == "UNet2DModel"]


def is_pruned(model: nn.Module) -> bool:
    """True when ``model`` (or a UNet inside it) carries a pruned structure."""
    return any(bool(getattr(m, "pruned_structure", None)) for m in model.modules())


def prune_student(student: nn.Module, ratio: float, importance: str = "l2", ignore: Sequence[str] = (),
                  seed: int = 0) -> nn.Module:
    """A pruned deep copy of any edgekd student whose ``export_config()`` records the pruning.

    Layerwise students are pruned through ``heads()`` (every head is traced, not only the last); each head's final
    convolution keeps the image channels; the structure is kept on the student (``student.pruned_structure``).
    Students made of diffusers UNets (one-step UNet, O2MKD's per-interval UNets) have each UNet pruned alone, at
    the student's own timestep when it has one; each UNet carries its structure. ``ignore`` substrings match the
    module names of the student (``unet.mid_block``) or of a UNet (``mid_block``). The result is checked to
    rebuild from its own ``export_config()``, so ``save_student``/``load_student`` round-trip it.
    """
    from edgekd.students.layerwise import LayerwiseStudent

    model = copy.deepcopy(student)
    if isinstance(model, LayerwiseStudent):
        shape = model.input_shape
        noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
        ignored = [head.net[-2] for head in model.head_modules]  # the Conv2d -> image channels before Tanh
        prune_module(model, noise, ratio, importance, ignored, ignore,
                     forward_fn=lambda m, x: m.heads(x), output_transform=lambda outs: outs, seed=seed)
        model.pruned_structure = pruned_structure(model, base=_student_base(model))
    else:
        unets = _unets_in(model)
        if not unets:
            raise EdgekdError(f"cannot prune a {type(model).__name__}: edgekd prunes layerwise students and "
                              "students made of diffusers UNets")
        # each UNet at the timestep its graph is exercised at (O2MKD: the middle of its own range)
        hint = {id(u): g.timestep for g in model.graphs() for _, u in _unets_in(g.module)}
        for i, (name, unet) in enumerate(unets):
            prefix = f"{name}." if name else ""
            local_ignore = [s[len(prefix):] if s.startswith(prefix) else s for s in ignore]
            timestep = int(hint.get(id(unet), 999))
            prune_unet_(unet, ratio, importance, local_ignore, timestep=timestep, seed=seed + i)
    _check_rebuilds(model)
    return model


def _check_rebuilds(model: nn.Module) -> None:
    """A pruned student must rebuild from its own config, or saving it would silently lose the pruning."""
    rebuilt = type(model).from_config(model.export_config())
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        bad = next(k for k in want if got.get(k) != want[k])
        raise EdgekdError(f"a pruned {type(model).__name__} does not rebuild from its config ('{bad}': "
                          f"{want[bad]} saved as {got.get(bad)}): its export_config/from_config must carry "
                          "pruned_structure (see edgekd/compress/prune.py)")


# --------------------------------------------------------------------------------------------- structure


def _student_base(model: nn.Module) -> nn.Module:
    """The UNPRUNED build of a model: ``from_config`` of its config without the pruned structure."""
    if type(model).__name__ == "UNet2DModel":
        return type(model).from_config(dict(model.config))
    if hasattr(model, "export_config") and hasattr(type(model), "from_config"):
        saved = getattr(model, "pruned_structure", None)
        try:
            model.pruned_structure = None
            config = model.export_config()
        finally:
            model.pruned_structure = saved
        config.pop("pruned", None)
        return type(model).from_config(config)
    raise EdgekdError(f"cannot describe the pruned structure of a {type(model).__name__} without its unpruned base")


def _plain_attrs(module: nn.Module) -> dict[str, Any]:
    """Public JSON-able attributes (numbers, strings, tuples/lists of them) set on a module instance."""
    out = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, _SCALARS) or (isinstance(value, (tuple, list))
                                           and all(isinstance(v, _SCALARS) for v in value)):
            out[key] = value
    return out


def pruned_structure(model: nn.Module, base: nn.Module | None = None) -> dict[str, Any]:
    """What differs between ``model`` and its unpruned ``base`` (default: rebuilt from the model's config).

    Returns ``{"format", "attrs": {module: {attr: value}}, "shapes": {tensor: [dims]}, "params"}``: JSON, small,
    enough for ``apply_structure`` to rebuild the pruned shapes on a fresh unpruned build.
    """
    base = _student_base(model) if base is None else base
    base_modules = dict(base.named_modules())
    attrs: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        ref = base_modules.get(name)
        if ref is None or type(ref) is not type(module):
            raise EdgekdError(f"module '{name}' of the pruned model has no counterpart in its unpruned build")
        ref_attrs = _plain_attrs(ref)
        diff = {k: (list(v) if isinstance(v, tuple) else v) for k, v in _plain_attrs(module).items()
                if k in ref_attrs and ref_attrs[k] != v}
        if diff:
            attrs[name] = diff
    base_state = base.state_dict()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()
              if k in base_state and tuple(base_state[k].shape) != tuple(v.shape)}
    return {"format": STRUCTURE_FORMAT, "attrs": attrs, "shapes": shapes,
            "params": int(sum(p.numel() for p in model.parameters())),
            "base_params": int(sum(p.numel() for p in base.parameters()))}


def apply_structure(model: nn.Module, structure: dict[str, Any] | None) -> nn.Module:
    """Replay a pruned structure on an unpruned build IN PLACE: set the attributes, resize the tensors (zeros)."""
    if not structure:
        return model
    if structure.get("format") != STRUCTURE_FORMAT:
        raise EdgekdError(f"unknown pruned-structure format {structure.get('format')!r} (expected {STRUCTURE_FORMAT})")
    modules = dict(model.named_modules())
    for name, values in structure.get("attrs", {}).items():
        module = modules.get(name)
        if module is None:
            raise EdgekdError(f"pruned structure names module '{name}', which this model does not have")
        for key, value in values.items():
            old = getattr(module, key, None)
            setattr(module, key, tuple(value) if isinstance(old, tuple) and isinstance(value, list) else value)
    for tensor_name, shape in structure.get("shapes", {}).items():
        owner, _, leaf = tensor_name.rpartition(".")
        module = modules.get(owner)
        if module is None:
            raise EdgekdError(f"pruned structure names tensor '{tensor_name}', which this model does not have")
        if leaf in module._parameters and module._parameters[leaf] is not None:
            old = module._parameters[leaf]
            module._parameters[leaf] = nn.Parameter(torch.zeros(shape, dtype=old.dtype, device=old.device),
                                                    requires_grad=old.requires_grad)
        elif leaf in module._buffers and module._buffers[leaf] is not None:
            old = module._buffers[leaf]
            module._buffers[leaf] = torch.zeros(shape, dtype=old.dtype, device=old.device)
        else:
            raise EdgekdError(f"pruned structure names tensor '{tensor_name}', which this model does not have")
    model.pruned_structure = structure
    return model


def build_pruned_unet(config: dict[str, Any], structure: dict[str, Any] | None) -> nn.Module:
    """A UNet2DModel of the pruned shapes (zero weights) from its UNPRUNED diffusers config and structure."""
    from diffusers import UNet2DModel

    return apply_structure(UNet2DModel.from_config({k: v for k, v in dict(config).items()}), structure)


def save_pruned_unet(unet: nn.Module, folder: Any) -> None:
    """A diffusers-style UNet folder (config.json = unpruned config, safetensors) plus ``edgekd_pruned.json``.

    Plain ``UNet2DModel.from_pretrained`` refuses it (shape mismatch, loudly); ``load_pruned_unet`` reads it.
    """
    from pathlib import Path

    from edgekd.train.checkpoint import atomic_write_json

    folder = Path(folder)
    unet.save_pretrained(str(folder), safe_serialization=True)
    atomic_write_json(folder / PRUNED_FILE, pruned_structure(unet))


def load_pruned_unet(folder: Any) -> nn.Module:
    """Load a folder written by ``save_pruned_unet`` (or a plain diffusers UNet folder: then it is unpruned)."""
    import json
    from pathlib import Path

    from diffusers import UNet2DModel

    from edgekd.train.checkpoint import load_weights_file

    folder = Path(folder)
    if not (folder / PRUNED_FILE).is_file():
        return UNet2DModel.from_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    structure = json.loads((folder / PRUNED_FILE).read_text())
    unet = build_pruned_unet({k: v for k, v in config.items() if not k.startswith("_")}, structure)
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise EdgekdError(f"{folder} has {PRUNED_FILE} but no diffusion_pytorch_model.safetensors")
    missing, unexpected = unet.load_state_dict(load_weights_file(weights), strict=False)
    if missing or unexpected:
        raise EdgekdError(f"{weights} does not match {PRUNED_FILE} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return unet.eval()


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    if hasattr(out, "sample"):
        return [out.sample]
    raise TypeError(f"cannot find tensors in a {type(out).__name__}")
