"""braindecode baselines behind the fine-tuning models' call signature (see `finetune.model`).

EEGNet (``EEGNetv4`` or, in newer braindecode, ``EEGNet``), ShallowFBCSPNet and Labram are trained from scratch
on exactly the same items, splits and preprocessing as the foundation model, so every result has its baseline.
They need one fixed channel set: the task's channels, in the training order (`finetune.predict` picks them by name).

Pretrained braindecode models (``--model.pretrained``): a Hugging Face hub id or a local folder written by
braindecode's ``model.save_pretrained(folder)`` (``config.json`` + ``model.safetensors``), read with the model
class's ``from_pretrained``. The architecture comes from that config (so its channel count and window may be
larger than the task's: LaBraM and CBraMod take fewer channels and shorter windows), the classification layer is
replaced for the task's classes, and the whole network is fine-tuned. The architecture config is stored in the
package (``net_config``), so export and serving rebuild the network without the hub.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from data.preprocess import MODEL_SFREQ

log = logging.getLogger("brainforge.finetune")

BASELINES = ("eegnet", "shallow", "labram", "cbramod")
#: braindecode class of each short name (other braindecode model class names are accepted too, case-insensitive)
BRAINDECODE_CLASSES = {"eegnet": "EEGNet", "shallow": "ShallowFBCSPNet", "labram": "Labram", "cbramod": "CBraMod"}


def braindecode_class(arch: str):
    """The braindecode model class for a short name (``labram``) or a class name (``Labram``, ``EEGConformer``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from braindecode import models as bd
    name = BRAINDECODE_CLASSES.get(arch.lower(), arch)
    if arch.lower() == "eegnet":
        return getattr(bd, "EEGNetv4", None) or bd.EEGNet
    found = {n.lower(): n for n in dir(bd) if isinstance(getattr(bd, n), type)}
    cls = getattr(bd, found.get(name.lower(), ""), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ValueError(f"baseline {arch!r} must be one of {BASELINES} or a braindecode model class name")
    return cls


def is_baseline(arch: str) -> bool:
    try:
        braindecode_class(arch)
    except ValueError:
        return False
    return True


def pretrained_net(arch: str, source: str, n_outputs: int) -> tuple[nn.Module, dict[str, Any]]:
    """``cls.from_pretrained(source)`` with a fresh ``n_outputs`` head -> (net, its architecture config)."""
    from braindecode.models.util import build_model_config

    cls = braindecode_class(arch)
    try:
        net = cls.from_pretrained(source, n_outputs=n_outputs)
    except Exception as e:  # noqa: BLE001 - hub, file and format errors alike: say which source failed
        raise ValueError(f"--model.pretrained {source!r}: {cls.__name__}.from_pretrained failed: {e}") from e
    config = {k: v for k, v in build_model_config(net).items() if k != "braindecode_version"}
    config["n_outputs"] = n_outputs  # the head was replaced (the tracked init arguments still hold the old count)
    return net, config


def adapt_channels(arch: str, net: nn.Module, config: dict[str, Any], n_chans: int) -> tuple[nn.Module, dict[str, Any], list[str]]:
    """A pretrained network for another channel count: the same architecture built for ``n_chans`` channels, with
    every pretrained tensor whose name and shape still fit copied in. Returns (net, config, the names left at
    their initial values) (e.g. CBraMod's classifier, whose input is channels x patches)."""
    config = {**config, "n_chans": n_chans, "chs_info": None}
    new = net_from_config(arch, config)
    old = net.state_dict()
    target = new.state_dict()
    keep = {k: v for k, v in old.items() if k in target and target[k].shape == v.shape}
    new.load_state_dict(keep, strict=False)
    return new, config, sorted(k for k in target if k not in keep)


def net_from_config(arch: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild a pretrained network's architecture (random weights) from its stored config."""
    from braindecode.models.util import resolve_type_kwargs

    cls = braindecode_class(arch)
    kwargs = dict(config)
    resolve_type_kwargs(cls, kwargs)
    return cls(**kwargs)


def _braindecode_net(arch: str, n_chans: int, n_outputs: int, n_times: int, sfreq: float, **kwargs: Any) -> nn.Module:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from braindecode import models as bd
    if arch == "eegnet":
        net_cls = getattr(bd, "EEGNetv4", None) or bd.EEGNet
        return net_cls(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq, **kwargs)
    if arch == "shallow":
        return bd.ShallowFBCSPNet(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq, **kwargs)
    if arch == "cbramod":
        return bd.CBraMod(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq, **kwargs)
    if arch not in BASELINES:
        return braindecode_class(arch)(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq, **kwargs)
    if arch == "labram":
        # LaBraM's own patch tokenizer with 64-sample patches; a channel's position embedding is its index in
        # the task's channel list (see BaselineClassifier.forward), as channel names need not be 10-20 names
        opts = {"patch_size": 64, "embed_dim": 64, "num_layers": 4, "num_heads": 4, **kwargs}
        if n_times % opts["patch_size"]:
            raise ValueError(f"labram baseline: n_times {n_times} is not a multiple of patch_size {opts['patch_size']}")
        return bd.Labram(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq, **opts)
    raise ValueError(f"baseline {arch!r} must be one of {BASELINES}")


class BaselineClassifier(nn.Module):
    """A braindecode network behind the common call signature; signal [B, n_chans, n_times] -> logits [B, K].

    It needs exactly ``n_chans`` channels in the training order (`finetune.predict` selects them by name)
    and windows of ``n_times`` samples; geometry and the channel mask are ignored (there is no padding).
    """

    kind = "baseline"

    def __init__(self, arch: str, n_chans: int, n_outputs: int, n_times: int, sfreq: float = MODEL_SFREQ,
                 kwargs: dict[str, Any] | None = None, pretrained: str | None = None,
                 net_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.arch, self.n_chans, self.n_outputs, self.n_times, self.sfreq = arch, n_chans, n_outputs, n_times, sfreq
        self.kwargs = dict(kwargs or {})
        self.pretrained, self.net_config = pretrained, net_config
        if pretrained and net_config is None:  # fine-tuning starts from published weights
            self.net, self.net_config = pretrained_net(arch, pretrained, n_outputs)
            net_chans = self.net_config.get("n_chans")
            if arch == "labram" and net_chans is not None and int(net_chans) < n_chans:
                raise ValueError(f"--model.pretrained {pretrained!r}: this LaBraM has position embeddings for {net_chans} "
                                 f"channels, the task has {n_chans}")
            if arch != "labram" and net_chans is not None and int(net_chans) != n_chans:
                self.net, self.net_config, fresh = adapt_channels(arch, self.net, self.net_config, n_chans)
                log.warning("pretrained %s %s: built for %d channels (pretrained on %s); newly initialised: %s",
                            arch, pretrained, n_chans, net_chans, ", ".join(fresh) or "none")
        elif net_config is not None:  # a package of a pretrained model: its architecture, weights loaded next
            self.net = net_from_config(arch, net_config)
        else:
            self.net = _braindecode_net(arch, n_chans, n_outputs, n_times, sfreq, **self.kwargs)

    def config_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "arch": self.arch, "n_chans": self.n_chans, "n_outputs": self.n_outputs,
               "n_times": self.n_times, "sfreq": self.sfreq, "kwargs": self.kwargs}
        if self.net_config is not None:
            out |= {"pretrained": self.pretrained, "net_config": self.net_config}
        return out

    def forward(self, signal: Tensor, types: Tensor | None = None, positions: Tensor | None = None,
                orientations: Tensor | None = None, channel_mask: Tensor | None = None,
                channel_ids: Tensor | None = None) -> Tensor:
        b, c, t = signal.shape
        if c != self.n_chans or t != self.n_times:
            raise ValueError(f"{self.arch} baseline was trained on {self.n_chans} channels x {self.n_times} samples, "
                             f"got {c} x {t}")
        if channel_mask is not None and not bool(channel_mask.all()):
            raise ValueError(f"{self.arch} baseline: every item needs all {self.n_chans} channels (no padding)")
        x = signal.float()
        if self.net_config is not None:  # a pretrained window length: zero-pad (or crop) the task's to it
            nt = int(self.net_config.get("n_times") or t)
            x = torch.nn.functional.pad(x, (0, nt - t)) if nt > t else x[..., :nt]
        if self.arch == "labram":
            net = self.net
            chans = torch.arange(c + 1, device=signal.device)  # [CLS] + channels in training order
            return net.final_layer(net.forward_features(x, input_chans=chans))
        return self.net(x)

    def set_mode(self, mode: str = "full", **_: Any) -> None:
        self.requires_grad_(True)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [[p for p in self.parameters() if p.requires_grad]]
