"""The network and its optimiser for a run: build or grow the model, AdamW, the LR schedule.

:func:`build_model` starts from the seed or from ``init_weights`` (growing zero-initialised
additions onto trained weights, :data:`_GROWABLE`) and applies ``trainable``; :func:`_optimizer`
makes the AdamW parameter groups (``lr_scales``); :func:`lr_factor` is the warm-up + cosine (or
flat) schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields, replace

import torch
from torch import nn

from medverse.errors import InputError
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet
from medverse.training.config import TrainConfig

__all__ = ["build_model", "lr_factor"]


def build_model(config: TrainConfig) -> MedverseNet:
    """The network: random init from the seed, or ``init_weights``; ``trainable`` applied."""
    net = _initial_model(config)
    if config.trainable:
        names = [name for name, _ in net.named_parameters()]
        prefixes = _prefix_of(names, config.trainable, "trainable")
        for name, param in net.named_parameters():
            param.requires_grad_(prefixes[name] is not None and param.requires_grad)
    return net


def _prefix_of(names: Sequence[str], prefixes: Sequence[str], field: str) -> dict[str, str | None]:
    """Parameter name -> the first of ``prefixes`` it starts with (or None); every prefix must
    match one of ``names`` (InputError naming ``field`` otherwise)."""
    found = {name: next((p for p in prefixes if name.startswith(p)), None) for name in names}
    unused = sorted(set(prefixes) - set(found.values()))
    if unused:
        raise InputError(f"{field}: no parameter name starts with {unused}")
    return found


def _initial_model(config: TrainConfig) -> MedverseNet:
    model_config = config.model_config
    if config.init_weights:
        from medverse.checkpoint.factory import load_model

        net = load_model(config.init_weights)
        if net.config == model_config:
            return net.train()
        grown = {
            name
            for name in _GROWABLE
            if getattr(model_config, name) and not getattr(net.config, name)
        }
        off = {f.name: f.default for f in fields(ModelConfig) if f.name in grown}
        if grown and net.config == replace(model_config, **off):
            return _grow(net, model_config).train()
        raise InputError(
            f"init_weights '{config.init_weights}' has architecture {net.config.to_dict()}, "
            f"the config asks for {model_config.to_dict()}"
        )
    torch.manual_seed(config.seed)
    return MedverseNet(model_config).train()


#: Zero-initialised additions that can be grown onto trained weights without changing their
#: function: ModelConfig field -> the parameter-name part of the module it adds.
_GROWABLE = {"input_skip": ".gate.", "prior_gate": ".prior_gate.", "guided_refiner": ".refiner."}


def _grow(net: MedverseNet, model_config: ModelConfig) -> MedverseNet:
    """``net``'s weights in ``model_config``'s architecture, which adds zero-initialised gates
    (input skip, prior gate): the same function, plus the gates' parameters to train."""
    grown = MedverseNet(model_config)
    result = grown.load_state_dict(net.state_dict(), strict=False)
    parts = tuple(_GROWABLE.values())
    assert not result.unexpected_keys
    assert all(any(part in k for part in parts) for k in result.missing_keys)
    return grown


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices decay, vectors do not; ``lr_scales`` prefixes get groups of their own
    (after the two plain groups, so ``param_groups[0]`` carries the base LR)."""
    scales = dict(config.lr_scales or {})
    params = [(n, p) for n, p in sorted(model.named_parameters()) if p.requires_grad]
    prefixes = _prefix_of([n for n, _ in params], list(scales), "lr_scales")
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in params:
        prefix = prefixes[name]
        key = (scales[prefix] if prefix else 1.0, param.ndim >= 2)
        groups.setdefault(key, []).append(param)
    order = [(1.0, True), (1.0, False)] + sorted(k for k in groups if k[0] != 1.0)
    param_groups = [
        {
            "params": groups.get(key, []),
            "lr": config.lr * key[0],
            "weight_decay": config.weight_decay if key[1] else 0.0,
        }
        for key in order
    ]
    return torch.optim.AdamW(param_groups, lr=config.lr, betas=config.betas)


def lr_factor(step: int, config: TrainConfig) -> float:
    """LR multiplier for the update number ``step`` (0-based): warm-up, then cosine or flat.

    Example:
        >>> cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.0)
        >>> lr_factor(0, cfg), lr_factor(9, cfg), lr_factor(100, cfg)
        (0.1, 1.0, 0.0)
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (
        1 + math.cos(math.pi * progress)
    )
