"""braindecode baselines behind the fine-tuning models' call signature (see `finetune.model`).

EEGNet (``EEGNetv4`` or, in newer braindecode, ``EEGNet``), ShallowFBCSPNet and Labram are trained from scratch
on exactly the same items, splits and preprocessing as the foundation model, so every result has its baseline.
They need one fixed channel set: the task's channels, in the training order (`finetune.predict` picks them by name).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

BASELINES = ("eegnet", "shallow", "labram")


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

    def __init__(self, arch: str, n_chans: int, n_outputs: int, n_times: int, sfreq: float = 256.0,
                 kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.arch, self.n_chans, self.n_outputs, self.n_times, self.sfreq = arch, n_chans, n_outputs, n_times, sfreq
        self.kwargs = dict(kwargs or {})
        self.net = _braindecode_net(arch, n_chans, n_outputs, n_times, sfreq, **self.kwargs)

    def config_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "arch": self.arch, "n_chans": self.n_chans, "n_outputs": self.n_outputs,
                "n_times": self.n_times, "sfreq": self.sfreq, "kwargs": self.kwargs}

    def forward(self, signal: Tensor, types: Tensor | None = None, positions: Tensor | None = None,
                orientations: Tensor | None = None, channel_mask: Tensor | None = None,
                channel_ids: Tensor | None = None) -> Tensor:
        b, c, t = signal.shape
        if c != self.n_chans or t != self.n_times:
            raise ValueError(f"{self.arch} baseline was trained on {self.n_chans} channels x {self.n_times} samples, "
                             f"got {c} x {t}")
        if channel_mask is not None and not bool(channel_mask.all()):
            raise ValueError(f"{self.arch} baseline: every item needs all {self.n_chans} channels (no padding)")
        if self.arch == "labram":
            net = self.net
            chans = torch.arange(c + 1, device=signal.device)  # [CLS] + channels in training order
            return net.final_layer(net.forward_features(signal.float(), input_chans=chans))
        return self.net(signal.float())

    def set_mode(self, mode: str = "full", **_: Any) -> None:
        self.requires_grad_(True)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [[p for p in self.parameters() if p.requires_grad]]
