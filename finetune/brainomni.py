"""Fine-tuning an imported BrainOmni package (``python -m pretrain import brainomni``) behind the common call
signature of `finetune.model`:

    logits = model(signal, types, positions, orientations, channel_mask)   # -> [B, K]

Inside, brainforge's inputs become BrainOmni's: positions and orientations from the `SensorLayout` go through
`brainomni_positions` (centred and scaled per modality, MEG orientation, zeros for EEG), the signal through
`brainomni_normalise` (per sensor type: minus the cross-channel mean, over one std), sensor types keep their
codes (EEG 0, MAG 1, GRAD 2, the same in both). The frozen tokenizer cuts 2 s windows with BrainOmni's 25%
overlap (a shorter window is zero-padded to 2 s) and gives quantized features; the backbone gives its
downstream features (all blocks but the last, L2-normalised) [B, n_latent, W, D]; the `PoolingHead` pools them.

Modes as for our own backbone: ``probe`` (head only), ``full`` (backbone + head, layer-wise lr decay),
``lora`` (peft adapters on the blocks' attention projections and MLP output). The tokenizer stays frozen in
eval mode, as in BrainOmni's own fine-tuning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from finetune.model import HeadConfig, PoolingHead, TrainingModes
from pretrain.brainomni.model import BrainOmniBackbone, BrainOmniBackboneConfig
from tokenizer.brainomni.inputs import brainomni_normalise, brainomni_positions
from tokenizer.brainomni.model import BrainOmniTokenizer, BrainOmniTokenizerConfig

KIND = "brainomni"


class BrainOmniClassifier(TrainingModes, nn.Module):
    """BrainOmni tokenizer (frozen) -> BrainOmni backbone -> `PoolingHead`."""

    kind = KIND

    def __init__(self, tokenizer_config: BrainOmniTokenizerConfig, backbone_config: BrainOmniBackboneConfig,
                 head_config: HeadConfig, normalise: bool = True) -> None:
        super().__init__()
        for name in ("n_dim", "n_neuro", "codebook_size", "num_quantizers", "window_length"):
            if getattr(tokenizer_config, name) != getattr(backbone_config, name):
                raise ValueError(f"BrainOmni tokenizer {name}={getattr(tokenizer_config, name)} != backbone "
                                 f"{name}={getattr(backbone_config, name)}")
        self.tokenizer = BrainOmniTokenizer(tokenizer_config)
        self.backbone = BrainOmniBackbone(backbone_config)
        self.head = PoolingHead(backbone_config.lm_dim, head_config)
        self.normalise = normalise
        self.mode = "full"
        self.tokenizer.requires_grad_(False)
        self.tokenizer.eval()

    @property
    def n_outputs(self) -> int:
        return self.head.cfg.n_classes

    def config_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "arch": "brainomni", "input": "quantized", "normalise": self.normalise,
                "tokenizer": self.tokenizer.config.to_dict(), "backbone": self.backbone.config.to_dict(),
                "head": self.head.cfg.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BrainOmniClassifier:
        return cls(BrainOmniTokenizerConfig.from_dict(config["tokenizer"]), BrainOmniBackboneConfig.from_dict(config["backbone"]),
                   HeadConfig.from_dict(config["head"]), normalise=bool(config.get("normalise", True)))

    def train(self, mode: bool = True) -> BrainOmniClassifier:
        super().train(mode)
        self.tokenizer.eval()
        if self.mode == "probe":
            self.backbone.eval()
        return self

    # --- inputs ---------------------------------------------------------------------------------
    def brainomni_inputs(self, signal: Tensor, types: Tensor, positions: Tensor, orientations: Tensor,
                         channel_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """-> BrainOmni's (x [B, C, T], pos [B, C, 6], sensor_type [B, C])."""
        types = types.long()
        x = brainomni_normalise(signal, types, channel_mask) if self.normalise else signal.float()
        return x, brainomni_positions(types, positions, orientations, channel_mask), types.clamp(0, 2)

    def tokenize(self, signal: Tensor, types: Tensor, positions: Tensor, orientations: Tensor,
                 channel_mask: Tensor | None = None, channel_ids: Tensor | None = None) -> Tensor:
        """-> indices [B, n_latent, frames, levels] of non-overlapping 2 s windows (a tail under 2 s is dropped,
        an input under 2 s is zero-padded)."""
        x, pos, st = self.brainomni_inputs(signal, types, positions, orientations, channel_mask)
        return self.tokenizer.tokenize(x, pos, st, 0.0, channel_mask)[1]

    def features(self, signal: Tensor, types: Tensor, positions: Tensor, orientations: Tensor,
                 channel_mask: Tensor | None = None, channel_ids: Tensor | None = None) -> Tensor:
        """-> BrainOmni's downstream features [B, n_latent, W, lm_dim]. BrainOmni has no use for ``channel_ids``
        (its sensor embedding sees only position, orientation and type)."""
        x, pos, st = self.brainomni_inputs(signal, types, positions, orientations, channel_mask)
        with torch.no_grad():
            feats, _ = self.tokenizer.tokenize(x, pos, st, self.backbone.config.overlap_ratio, channel_mask)
        return self.backbone.encode(feats, self.tokenizer.latents)

    def forward(self, signal: Tensor, types: Tensor, positions: Tensor, orientations: Tensor,
                channel_mask: Tensor | None = None, channel_ids: Tensor | None = None) -> Tensor:
        return self.head(self.features(signal, types, positions, orientations, channel_mask))

    # --- training modes ---------------------------------------------------------------------------
    def _full_mode_extras(self, train_tokenizer: bool) -> None:
        """Not on the features' path: the last block and the masked-token head (encode stops before them)."""
        self.backbone.blocks[-1].requires_grad_(False)
        self.backbone.predict_head.requires_grad_(False)
        self.backbone.mask_token.requires_grad_(False)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[head], [block L-2], ..., [block 0], [projection]: layer-wise lr decay from the output down."""
        seen: set[int] = set()

        def take(module: nn.Module) -> list[nn.Parameter]:
            out = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in out)
            return out

        groups = [take(self.head)] + [take(b) for b in reversed(self.backbone.blocks[:-1])] + [take(self)]
        return [g for g in groups if g]


def load_brainomni_classifier(backbone: str, tokenizer: str | None, head: HeadConfig) -> tuple[BrainOmniClassifier, dict]:
    """An imported BrainOmni backbone package -> a classifier with its weights (head random), and provenance."""
    from pretrain.brainomni.convert import load_brainomni_package
    from tokenizer.package import package_reference

    tok, bb, meta = load_brainomni_package(backbone, tokenizer)
    if bb is None:
        raise ValueError(f"{backbone} is a BrainOmni tokenizer package; fine-tuning needs a BrainOmni backbone package "
                         "(import a BrainOmni_tiny / BrainOmni_base folder)")
    model = BrainOmniClassifier(tok.config, bb.config, head)
    model.tokenizer.load_state_dict(tok.state_dict())
    model.backbone.load_state_dict(bb.state_dict())
    tok_path = Path(meta["tokenizer_path"])
    source = {"family": KIND,
              "backbone": package_reference(backbone), "tokenizer": package_reference(tok_path),
              "origin": (meta.get("backbone") or {}).get("source", {}).get("origin")}
    return model, source
