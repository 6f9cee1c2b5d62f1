"""Fine-tuning models: tokenizer encoder -> pretrained backbone -> pooling head, and braindecode baselines.

Both take the same inputs, so training, export and prediction do not care which one they hold:

    logits = model(signal, types, positions, orientations, channel_mask)   # -> [B, K]

* ``signal`` [B, C, T] float32 in scaled units (the task's preprocessing), T a multiple of the tokenizer hop (64);
* ``types`` [B, C] int (SensorType), ``positions`` [B, C, 3] metres (NaN = unknown), ``orientations`` [B, C, 3];
* ``channel_mask`` [B, C] bool (True = real channel; padded rows are ignored). None = all real.

`FoundationClassifier`: the tokenizer's encoder gives latents [B, N, F, d_tok]. With ``backbone_input="tokens"`` they are
quantized (frozen RVQ, eval mode) and the indices go through ``backbone.embed``; with ``backbone_input="latents"`` the
continuous pre-quantization vector z = `RVQ.unit_input(latents)`, which lives in the codebook space whose
level-sum the backbone embeds, goes through ``backbone.code_proj``. The backbone gives hidden states [B, N, F, D];
the head pools them over latents x frames (attention pooling with learned queries, or the mean) and an MLP
gives K logits. The tokenizer always stays in eval mode (its quantizer must never update its codebooks).

`finetune.baselines.BaselineClassifier`: a braindecode network (EEGNet, ShallowFBCSPNet, Labram) trained from
scratch on the same items; it needs one fixed channel set (its ``n_chans``) and ignores the geometry.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from data.preprocess import MODEL_SFREQ
from finetune.baselines import BaselineClassifier
from pretrain.model import BackboneConfig, MaskedTokenModel
from runkit.config import DictConfig
from tokenizer.config import TokenizerConfig
from tokenizer.model import BrainTokenizer

log = logging.getLogger("brainforge.finetune")

INPUTS = ("tokens", "latents")
POOLINGS = ("attention", "mean")
MODES = ("probe", "full", "lora")
#: backbone linears that LoRA adapts (attention in/out projections and the SwiGLU linears of every block)
LORA_TARGETS = r".*blocks\.\d+\.(spatial|temporal)\.(qkv|out)|.*blocks\.\d+\.ffn\.(gate_up|down)"


@dataclass(frozen=True)
class HeadConfig(DictConfig):
    """Classification head: pooling over latents x frames, then LayerNorm -> Linear -> GELU -> Dropout -> Linear."""

    n_classes: int = 2
    pooling: str = "attention"  # attention | mean
    n_queries: int = 1  # attention pooling: learned queries, their outputs concatenated
    n_heads: int = 4
    hidden: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"HeadConfig: n_classes {self.n_classes} must be >= 2")
        if self.pooling not in POOLINGS:
            raise ValueError(f"HeadConfig: pooling {self.pooling!r} must be one of {POOLINGS}")



class PoolingHead(nn.Module):
    """hidden [B, N, F, D] -> logits [B, K]."""

    def __init__(self, d_model: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pooled = d_model
        if cfg.pooling == "attention":
            heads = cfg.n_heads if d_model % cfg.n_heads == 0 else 1
            self.queries = nn.Parameter(torch.randn(cfg.n_queries, d_model) * 0.02)
            self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
            pooled = d_model * cfg.n_queries
        self.mlp = nn.Sequential(
            nn.LayerNorm(pooled), nn.Linear(pooled, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.n_classes),
        )

    def pool(self, hidden: Tensor) -> Tensor:
        """hidden [B, N, F, D] -> pooled [B, n_queries * D] (attention) or [B, D] (mean)."""
        b = hidden.shape[0]
        tokens = hidden.flatten(1, 2)  # [B, N*F, D]
        if self.cfg.pooling == "mean":
            return tokens.mean(1)
        out, _ = self.attn(self.queries.expand(b, -1, -1).to(tokens.dtype), tokens, tokens, need_weights=False)
        return out.flatten(1)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.mlp(self.pool(hidden))


class TrainingModes:
    """``set_mode`` for a classifier with a ``backbone`` and a ``head`` (an `nn.Module` mixin). ``probe``: only the
    head trains. ``full``: backbone + head, minus what `_full_mode_extras` freezes or adds. ``lora``: LoRA adapters on
    the backbone linears + head."""

    def set_mode(self, mode: str, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0,
                 train_tokenizer: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} must be one of {MODES}")
        self.mode = mode
        self.requires_grad_(False)
        self.head.requires_grad_(True)
        if mode == "full":
            self.backbone.requires_grad_(True)
            self._full_mode_extras(train_tokenizer)
        elif mode == "lora":
            add_lora(self.backbone, lora_r, lora_alpha, lora_dropout)

    def _full_mode_extras(self, train_tokenizer: bool) -> None:
        """In ``full`` mode, after the backbone is made trainable: freeze what the features never use."""


class FoundationClassifier(TrainingModes, nn.Module):
    """Tokenizer encoder -> backbone -> `PoolingHead`. See the module docstring for inputs and shapes."""

    kind = "foundation"

    def __init__(
        self,
        tokenizer_config: TokenizerConfig,
        backbone_config: BackboneConfig,
        head_config: HeadConfig,
        backbone_input: str = "latents",
    ) -> None:
        super().__init__()
        if backbone_input not in INPUTS:
            raise ValueError(f"backbone_input {backbone_input!r} must be one of {INPUTS}")
        if backbone_input == "latents" and backbone_config.embedding != "codebook":
            raise ValueError("backbone_input='latents' needs a backbone with codebook embeddings (embedding='codebook'); "
                             "this backbone learned its own per-level embeddings: use backbone_input='tokens'")
        for name in ("n_latent", "rvq_levels", "codebook_size", "codebook_dim"):
            if getattr(tokenizer_config, name) != getattr(backbone_config, name):
                raise ValueError(f"tokenizer {name}={getattr(tokenizer_config, name)} != backbone "
                                 f"{name}={getattr(backbone_config, name)}: the backbone was trained on another tokenizer")
        self.backbone_input = backbone_input
        self.mode = "full"
        self.tokenizer = BrainTokenizer(tokenizer_config)
        self.backbone = MaskedTokenModel(backbone_config)
        self.head = PoolingHead(backbone_config.d_model, head_config)
        self.backbone.freeze_pretraining_parts()  # codebooks and prediction heads: never trained here
        self.tokenizer.eval()

    def config_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "input": self.backbone_input, "tokenizer": self.tokenizer.config.to_dict(),
                "backbone": self.backbone.config.to_dict(), "head": self.head.cfg.to_dict()}

    def train(self, mode: bool = True) -> FoundationClassifier:
        super().train(mode)
        self.tokenizer.eval()  # the RVQ would update its codebooks in training mode
        if self.mode == "probe":
            self.backbone.eval()  # a frozen network is probed in eval mode (no dropout): features are fixed
        return self

    def tokenize(self, signal: Tensor, types: Tensor, positions: Tensor, orientations: Tensor,
                 channel_mask: Tensor | None = None, channel_ids: Tensor | None = None) -> Tensor:
        """-> indices [B, N_latent, T / hop, L] int64 (the tokenizer part, exactly `BrainTokenizer.encode`)."""
        return self.tokenizer.encode(signal, types, positions, orientations, channel_mask, channel_ids)

    def embed(self, signal: Tensor, types: Tensor, positions: Tensor, orientations: Tensor,
              channel_mask: Tensor | None = None, channel_ids: Tensor | None = None) -> Tensor:
        """-> backbone input [B, N, F, D]."""
        tok = self.tokenizer
        mask = tok._checked_mask(signal, channel_mask)
        sensor = tok.sensor_encoder(types, positions, orientations, channel_ids)
        latents = tok.encoder(signal.float(), sensor, mask)  # [B, N, F, d_tok]
        if self.backbone_input == "tokens":
            _, indices, _ = tok.quantizer(latents)
            return self.backbone.embed(indices.long())
        with torch.autocast(device_type=latents.device.type, enabled=False):
            z = tok.quantizer.unit_input(latents)  # codebook space
        return self.backbone.code_proj(z)

    def features(self, signal: Tensor, types: Tensor, positions: Tensor, orientations: Tensor,
                 channel_mask: Tensor | None = None, channel_ids: Tensor | None = None) -> Tensor:
        """-> backbone hidden states [B, N, F, D]."""
        return self.backbone.encode_embedded(self.embed(signal, types, positions, orientations, channel_mask, channel_ids))

    def forward(self, signal: Tensor, types: Tensor, positions: Tensor, orientations: Tensor,
                channel_mask: Tensor | None = None, channel_ids: Tensor | None = None) -> Tensor:
        return self.head(self.features(signal, types, positions, orientations, channel_mask, channel_ids))

    # --- training modes (`TrainingModes.set_mode`) ---------------------------------------------------
    def _full_mode_extras(self, train_tokenizer: bool) -> None:
        """Codebooks and prediction heads stay frozen; with ``train_tokenizer`` and ``backbone_input='latents'`` the
        tokenizer encoder trains too."""
        self.backbone.freeze_pretraining_parts()
        if train_tokenizer and self.backbone_input == "latents":
            self.tokenizer.sensor_encoder.requires_grad_(True)
            self.tokenizer.encoder.requires_grad_(True)
            self.tokenizer.quantizer.project_in.requires_grad_(True)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Trainable parameters from the output down: [head], [block L-1 + final norm], ..., [block 0],
        [backbone embeddings], [tokenizer]. Layer-wise lr decay gives group i the lr * decay**i."""
        seen: set[int] = set()

        def take(module_or_params) -> list[nn.Parameter]:
            params = module_or_params.parameters() if isinstance(module_or_params, nn.Module) else module_or_params
            out = [p for p in params if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in out)
            return out

        bb = self.backbone
        groups = [take(self.head), take(list(bb.norm.parameters()))]
        groups[1] += take(bb.blocks[-1])
        groups += [take(block) for block in reversed(bb.blocks[:-1])]
        groups.append(take(bb))  # embeddings: code_proj / level_embed, latent_embed, mask_embed (+ any rest)
        groups.append(take(self))  # tokenizer parts, when trainable
        return [g for g in groups if g]


def add_lora(backbone: nn.Module, r: int, alpha: int, dropout: float) -> None:
    """Inject peft LoRA adapters (rank ``r``) into the backbone's attention and FFN linears; only they train."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS), backbone)
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)


def merge_lora(module: nn.Module) -> int:
    """Merge every LoRA adapter into its base linear and put the plain linear back. Returns how many."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for name, sub in list(module.named_modules()):
        if isinstance(sub, LoraLayer):
            sub.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, child, sub.get_base_layer())
            n += 1
    return n


def has_lora(module: nn.Module) -> bool:
    return any(re.search(r"\.lora_[AB]\.", name) for name, _ in module.named_parameters())


Classifier = FoundationClassifier | BaselineClassifier


def build_classifier(config: dict[str, Any]) -> Classifier:
    """Inverse of ``model.config_dict()`` (random weights; load a state dict next)."""
    kind = config.get("kind")
    if kind == "foundation":
        return FoundationClassifier(
            TokenizerConfig.from_dict(config["tokenizer"]), BackboneConfig.from_dict(config["backbone"]),
            HeadConfig.from_dict(config["head"]), backbone_input=config.get("input", "latents"),
        )
    if kind == "brainomni":  # an imported BrainOmni package (finetune.brainomni)
        from finetune.brainomni import BrainOmniClassifier

        return BrainOmniClassifier.from_config(config)
    if kind == "baseline":
        return BaselineClassifier(config["arch"], int(config["n_chans"]), int(config["n_outputs"]), int(config["n_times"]),
                                  float(config.get("sfreq", MODEL_SFREQ)), config.get("kwargs") or {},
                                  pretrained=config.get("pretrained"), net_config=config.get("net_config"))
    raise ValueError(f"model config kind {kind!r} must be 'foundation', 'brainomni' or 'baseline'")
