"""Import BrainOmni's released checkpoints into brainforge packages, and load those packages.

A released folder (Hugging Face ``OpenTSLab/BrainOmni``: ``BrainTokenizer/``, ``BrainOmni_tiny/``,
``BrainOmni_base/``) holds ``model_cfg.json`` and a plain state dict, ``BrainTokenizer.pt`` or ``BrainOmni.pt``
(the latter with the tokenizer's weights under ``tokenizer.``).

    python -m pretrain import brainomni BrainOmni_tiny/ --out brainomni_tiny_pkg/
    python -m pretrain import brainomni BrainTokenizer/ --out braintokenizer_pkg/

writes, for a BrainOmni folder, a backbone package ``OUT/`` (``config.json`` with ``"family": "brainomni"``,
``model.safetensors``, ``preprocessing.json``) holding the tokenizer package in ``OUT/tokenizer/``
(``config.json``, ``model.safetensors``, ``preprocessing.json``, ``metrics.json``); for a tokenizer folder,
only the tokenizer package. The ``.pt`` file is read with ``torch.load(weights_only=True)`` and must hold
plain tensors only; every key is mapped onto our module names and checked (no key missing, none left over,
every shape as ``model_cfg.json`` implies), and each failure names the file and the key.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from data.atomic import atomic_directory, content_hash
from data.preprocess import PreprocessingSpec
from pretrain.brainomni.model import BrainOmniBackbone, BrainOmniBackboneConfig
from tokenizer.brainomni.model import BAND_HZ, SAMPLE_RATE, BrainOmniTokenizer, BrainOmniTokenizerConfig

FAMILY = "brainomni"
FORMAT_VERSION = 1
CONFIG_FILE = "model_cfg.json"
TOKENIZER_WEIGHTS = "BrainTokenizer.pt"
BACKBONE_WEIGHTS = "BrainOmni.pt"
TOKENIZER_DIR = "tokenizer"
#: buffers of the reference that we recompute (RoPE tables); accepted when present, never required
RECOMPUTED = re.compile(r"^blocks\.\d+\.time_attn\.rope_embedding_layer\.(freqs|rotate)$")


class BrainOmniCheckpointError(Exception):
    """A BrainOmni checkpoint folder or imported package is incomplete or does not match its config."""


# --- names: ours -> theirs ---------------------------------------------------------------------------
def _conv(prefix: str) -> str:
    return f"{prefix}.conv.conv"


def _tokenizer_name(ours: str, n_ratios: int) -> str:
    """Our tokenizer parameter name -> the released checkpoint's (without the ``tokenizer.`` prefix)."""
    enc, dec = "encoder.seanet_encoder.model", "decoder.seanet_decoder.model"
    rules: list[tuple[str, Any]] = [
        (r"sensor_embed\.type_embed\.(.*)", lambda m: f"sensor_embed.sensor_embedding_layer.{m[1]}"),
        (r"sensor_embed\.pos_in\.(.*)", lambda m: f"sensor_embed.pos_embedding_layer.0.{m[1]}"),
        (r"sensor_embed\.pos_out\.(.*)", lambda m: f"sensor_embed.pos_embedding_layer.2.{m[1]}"),
        (r"sensor_embed\.mlp\.up\.(.*)", lambda m: f"sensor_embed.aggregate_mlp.layer.0.{m[1]}"),
        (r"sensor_embed\.mlp\.down\.(.*)", lambda m: f"sensor_embed.aggregate_mlp.layer.2.{m[1]}"),
        (r"sensor_embed\.norm\.(.*)", lambda m: f"sensor_embed.norm.{m[1]}"),
        (r"conv_encoder\.stem\.(.*)", lambda m: f"{_conv(enc + '.0')}.{m[1]}"),
        (r"conv_encoder\.res\.(\d+)\.conv1\.(.*)", lambda m: f"{_conv(f'{enc}.{1 + 3 * int(m[1])}.block.1')}.{m[2]}"),
        (r"conv_encoder\.res\.(\d+)\.conv2\.(.*)", lambda m: f"{_conv(f'{enc}.{1 + 3 * int(m[1])}.block.3')}.{m[2]}"),
        (r"conv_encoder\.res\.(\d+)\.shortcut\.(.*)", lambda m: f"{_conv(f'{enc}.{1 + 3 * int(m[1])}.shortcut')}.{m[2]}"),
        (r"conv_encoder\.down\.(\d+)\.(.*)", lambda m: f"{_conv(f'{enc}.{3 + 3 * int(m[1])}')}.{m[2]}"),
        (r"conv_encoder\.lstm\.lstm\.(.*)", lambda m: f"{enc}.{1 + 3 * n_ratios}.lstm.{m[1]}"),
        (r"conv_encoder\.out\.(.*)", lambda m: f"{_conv(f'{enc}.{3 + 3 * n_ratios}')}.{m[1]}"),
        (r"latents", lambda m: "encoder.neuros"),
        (r"key_proj\.(.*)", lambda m: f"encoder.k_proj.{m[1]}"),
        (r"latent_attn\.v\.(.*)", lambda m: f"encoder.backwardsolution.v.{m[1]}"),
        (r"latent_attn\.out\.(.*)", lambda m: f"encoder.backwardsolution.proj.{m[1]}"),
        (r"quantizer\.levels\.(\d+)\.initialised", lambda m: f"quantizer.rvq.layers.{m[1]}._codebook.inited"),
        (r"quantizer\.levels\.(\d+)\.(embed|embed_avg|cluster_size)", lambda m: f"quantizer.rvq.layers.{m[1]}._codebook.{m[2]}"),
        (r"quantizer\.levels\.(\d+)\.(project_in|project_out)\.(.*)", lambda m: f"quantizer.rvq.layers.{m[1]}.{m[2]}.{m[3]}"),
        (r"sensor_query\.kv\.(.*)", lambda m: f"decoder.forwardsolution.kv.{m[1]}"),
        (r"sensor_query\.out\.(.*)", lambda m: f"decoder.forwardsolution.proj.{m[1]}"),
        (r"conv_decoder\.stem\.(.*)", lambda m: f"{_conv(dec + '.0')}.{m[1]}"),
        (r"conv_decoder\.lstm\.lstm\.(.*)", lambda m: f"{dec}.1.lstm.{m[1]}"),
        (r"conv_decoder\.up\.(\d+)\.(.*)", lambda m: f"{dec}.{3 + 3 * int(m[1])}.convtr.convtr.{m[2]}"),
        (r"conv_decoder\.res\.(\d+)\.conv1\.(.*)", lambda m: f"{_conv(f'{dec}.{4 + 3 * int(m[1])}.block.1')}.{m[2]}"),
        (r"conv_decoder\.res\.(\d+)\.conv2\.(.*)", lambda m: f"{_conv(f'{dec}.{4 + 3 * int(m[1])}.block.3')}.{m[2]}"),
        (r"conv_decoder\.res\.(\d+)\.shortcut\.(.*)", lambda m: f"{_conv(f'{dec}.{4 + 3 * int(m[1])}.shortcut')}.{m[2]}"),
        (r"conv_decoder\.out\.(.*)", lambda m: f"{_conv(f'{dec}.{3 + 3 * n_ratios}')}.{m[1]}"),
    ]
    for pattern, make in rules:
        m = re.fullmatch(pattern, ours)
        if m:
            return make(m)
    raise KeyError(f"no released name for tokenizer parameter {ours!r}")


def _backbone_name(ours: str) -> str:
    """Our backbone parameter name -> the released checkpoint's."""
    rules = [
        (r"blocks\.(\d+)\.norm1\.(.*)", r"blocks.\1.pre_attn_norm.\2"),
        (r"blocks\.(\d+)\.norm2\.(.*)", r"blocks.\1.pre_ff_norm.\2"),
        (r"blocks\.(\d+)\.temporal\.qkv\.(.*)", r"blocks.\1.time_attn.qkv.\2"),
        (r"blocks\.(\d+)\.temporal\.out\.(.*)", r"blocks.\1.time_attn.proj.\2"),
        (r"blocks\.(\d+)\.spatial\.qkv\.(.*)", r"blocks.\1.spatial_attn.qkv.\2"),
        (r"blocks\.(\d+)\.spatial\.out\.(.*)", r"blocks.\1.spatial_attn.proj.\2"),
        (r"blocks\.(\d+)\.ffn\.up\.(.*)", r"blocks.\1.ff.layer.0.\2"),
        (r"blocks\.(\d+)\.ffn\.down\.(.*)", r"blocks.\1.ff.layer.2.\2"),
        (r"(mask_token|projection\..*|predict_head\..*)", r"\1"),
    ]
    for pattern, repl in rules:
        if re.fullmatch(pattern, ours):
            return re.sub(pattern, repl, ours)
    raise KeyError(f"no released name for backbone parameter {ours!r}")


def released_names(tokenizer: BrainOmniTokenizer, backbone: BrainOmniBackbone | None = None) -> dict[str, str]:
    """released key -> our key (``tok.`` / ``bb.`` prefixed), for a tokenizer alone (BrainTokenizer.pt) or a
    backbone with its tokenizer (BrainOmni.pt, tokenizer keys under ``tokenizer.``)."""
    n = len(tokenizer.config.ratios)
    pre = "tokenizer." if backbone is not None else ""
    table = {pre + _tokenizer_name(k, n): "tok." + k for k in tokenizer.state_dict()}
    if backbone is not None:
        table |= {_backbone_name(k): "bb." + k for k in backbone.state_dict()}
    return table


# --- reading a released folder -------------------------------------------------------------------------
def read_model_cfg(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise BrainOmniCheckpointError(f"{path}: missing (a BrainOmni checkpoint folder holds {CONFIG_FILE} and "
                                       f"{TOKENIZER_WEIGHTS} or {BACKBONE_WEIGHTS})")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BrainOmniCheckpointError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise BrainOmniCheckpointError(f"{path}: expected a JSON object")
    return cfg


def _config_from(cls, cfg: dict[str, Any], path: Path, required: tuple[str, ...]):
    missing = [k for k in required if k not in cfg]
    if missing:
        raise BrainOmniCheckpointError(f"{path}: missing key {missing[0]!r}" + (f" (and {missing[1:]})" if missing[1:] else ""))
    try:
        return cls.from_dict(cfg)
    except (TypeError, ValueError) as e:
        raise BrainOmniCheckpointError(f"{path}: {e}") from e


TOKENIZER_KEYS = ("window_length", "n_filters", "ratios", "kernel_size", "last_kernel_size", "n_dim", "n_neuro",
                  "n_head", "codebook_dim", "codebook_size", "num_quantizers")
BACKBONE_KEYS = ("lm_dim", "lm_head", "lm_depth", "overlap_ratio")


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict through ``torch.load(weights_only=True)``: anything else raises, naming file and key."""
    if not path.is_file():
        raise BrainOmniCheckpointError(f"{path}: missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BrainOmniCheckpointError(f"{path}: not a plain tensor state dict (refused by torch.load(weights_only=True)): "
                                       f"{first}") from e
    if not isinstance(state, dict):
        raise BrainOmniCheckpointError(f"{path}: holds a {type(state).__name__}, expected a state dict of tensors")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise BrainOmniCheckpointError(f"{path}: key {k!r} holds a {type(v).__name__}, expected a tensor")
    return state


def map_state(state: dict[str, torch.Tensor], table: dict[str, str], path: Path,
              expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """released state -> ours (``tok.``/``bb.`` keys), checking keys and shapes against ``expected``."""
    unexpected = [k for k in state if k not in table and not RECOMPUTED.match(k)]
    if unexpected:
        raise BrainOmniCheckpointError(f"{path}: unexpected key {unexpected[0]!r}" +
                                       (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    missing = [k for k in table if k not in state]
    if missing:
        raise BrainOmniCheckpointError(f"{path}: missing key {missing[0]!r}" +
                                       (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    out = {}
    for theirs, ours in table.items():
        t, want = state[theirs], expected[ours]
        if tuple(t.shape) != tuple(want.shape):
            raise BrainOmniCheckpointError(f"{path}: key {theirs!r} has shape {tuple(t.shape)}, {CONFIG_FILE} implies "
                                           f"{tuple(want.shape)}")
        if not (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool)):
            raise BrainOmniCheckpointError(f"{path}: key {theirs!r} has dtype {t.dtype}, expected a real tensor")
        out[ours] = t.to(want.dtype).contiguous()
        if ours.endswith(".initialised") and not bool(out[ours].all()):
            raise BrainOmniCheckpointError(f"{path}: key {theirs!r} is 0: this codebook was never initialised (untrained checkpoint)")
    return out


@dataclass
class Imported:
    tokenizer: BrainOmniTokenizer
    backbone: BrainOmniBackbone | None
    cfg: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)


def load_released(folder: str | Path, tokenizer_folder: str | Path | None = None) -> Imported:
    """A released BrainOmni / BrainTokenizer folder -> our modules with its weights (eval mode)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BrainOmniCheckpointError(f"{folder}: not a directory")
    cfg = read_model_cfg(folder)
    cfg_path = folder / CONFIG_FILE
    tok_cfg = _config_from(BrainOmniTokenizerConfig, cfg, cfg_path, TOKENIZER_KEYS)
    tok = BrainOmniTokenizer(tok_cfg)
    bb_path, tok_path = folder / BACKBONE_WEIGHTS, folder / TOKENIZER_WEIGHTS
    if bb_path.is_file():
        bb_cfg = _config_from(BrainOmniBackboneConfig, cfg, cfg_path, BACKBONE_KEYS)
        bb = BrainOmniBackbone(bb_cfg)
        state = read_state(bb_path)
        weights_files = [bb_path]
        if tokenizer_folder is not None or not any(k.startswith("tokenizer.") for k in state):
            if tokenizer_folder is None:
                raise BrainOmniCheckpointError(f"{bb_path}: missing key 'tokenizer.encoder.neuros' (no tokenizer weights "
                                               "in it): give the BrainTokenizer folder with --tokenizer")
            tstate = read_state(Path(tokenizer_folder) / TOKENIZER_WEIGHTS)
            state = {k: v for k, v in state.items() if not k.startswith("tokenizer.")}
            state |= {"tokenizer." + k: v for k, v in tstate.items()}
            weights_files.append(Path(tokenizer_folder) / TOKENIZER_WEIGHTS)
        table = released_names(tok, bb)
        expected = {"tok." + k: v for k, v in tok.state_dict().items()} | {"bb." + k: v for k, v in bb.state_dict().items()}
        mapped = map_state(state, table, bb_path, expected)
        bb.load_state_dict({k[3:]: v for k, v in mapped.items() if k.startswith("bb.")})
        bb.eval()
    elif tok_path.is_file():
        bb = None
        weights_files = [tok_path]
        state = read_state(tok_path)
        table = released_names(tok)
        mapped = map_state(state, table, tok_path, {"tok." + k: v for k, v in tok.state_dict().items()})
    else:
        raise BrainOmniCheckpointError(f"{folder}: missing {BACKBONE_WEIGHTS} or {TOKENIZER_WEIGHTS}")
    tok.load_state_dict({k[4:]: v for k, v in mapped.items() if k.startswith("tok.")})
    tok.eval()
    source = {"folder": str(folder.resolve()), "model_cfg": cfg,
              "weights": {p.name: content_hash(p) for p in weights_files},
              "origin": "BrainOmni (OpenTSLab, MIT licence): https://huggingface.co/OpenTSLab/BrainOmni"}
    return Imported(tokenizer=tok, backbone=bb, cfg=cfg, source=source)


# --- our packages --------------------------------------------------------------------------------------
def preprocessing_spec(overlap: float = 0.0) -> dict[str, Any]:
    """What BrainOmni's data pipeline did (its ``factory``), as our `PreprocessingSpec` plus notes in ``extra``."""
    spec = PreprocessingSpec(sfreq=SAMPLE_RATE, l_freq=BAND_HZ[0], h_freq_max=BAND_HZ[1], h_freq_fraction=0.45,
                             line_freq=None, notch=True, window_s=2.0, stride_s=2.0 * (1 - overlap), extra={
        "family": FAMILY,
        "normalisation": "per sensor type: the mean over that type's channels subtracted at every sample, then "
                         "divided by one std over all its values (brainomni_normalise, applied inside the model)",
        "positions": "head-frame loc[:3] centred and scaled by sqrt(3 mean |p|^2) per modality (EEG / MEG), "
                     "orientation for MEG, zeros for EEG (brainomni_positions, applied inside the model)",
        "sensor_types": {"EEG": 0, "MAG": 1, "GRAD": 2},
        "window_samples": 512, "overlap_ratio": overlap,
    })
    return spec.to_dict()


def _save(model: torch.nn.Module, folder: Path, meta: dict[str, Any], preprocessing: dict[str, Any]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format_version": str(FORMAT_VERSION), "family": FAMILY})
    (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    (folder / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")


def import_checkpoint(folder: str | Path, out: str | Path, tokenizer_folder: str | Path | None = None,
                      overwrite: bool = False) -> Path:
    """``python -m pretrain import brainomni FOLDER --out OUT``: see the module docstring."""
    imp = load_released(folder, tokenizer_folder)
    tok_meta = {"format_version": FORMAT_VERSION, "family": FAMILY, "model": "BrainOmniTokenizer",
                "config": imp.tokenizer.config.to_dict(), "source": imp.source}
    with atomic_directory(out, overwrite) as tmp:
        tok_dir = tmp / TOKENIZER_DIR if imp.backbone is not None else tmp
        tok_dir.mkdir(exist_ok=True)
        _save(imp.tokenizer, tok_dir, tok_meta, preprocessing_spec(0.0))
        (tok_dir / "metrics.json").write_text("{}\n")
        if imp.backbone is not None:
            meta = {"format_version": FORMAT_VERSION, "family": FAMILY, "model": "BrainOmniBackbone",
                    "config": imp.backbone.config.to_dict(),
                    "tokenizer": {"path": TOKENIZER_DIR, "relative": True,
                                  "weights_sha256": content_hash(tok_dir / "model.safetensors")},
                    "source": imp.source}
            _save(imp.backbone, tmp, meta, preprocessing_spec(imp.backbone.config.overlap_ratio))
    return Path(out)


def package_family(path: str | Path) -> str | None:
    """The ``family`` of a package directory's config.json (None for brainforge's own packages or no config)."""
    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text()).get("family") if cfg.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def _load_package(folder: Path, kind: str):
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise BrainOmniCheckpointError(f"{cfg_path}: missing")
    meta = json.loads(cfg_path.read_text())
    if meta.get("family") != FAMILY or meta.get("format_version") != FORMAT_VERSION:
        raise BrainOmniCheckpointError(f"{cfg_path}: not a brainomni package of format {FORMAT_VERSION}")
    if kind == "tokenizer":
        model: torch.nn.Module = BrainOmniTokenizer(BrainOmniTokenizerConfig.from_dict(meta["config"]))
    else:
        model = BrainOmniBackbone(BrainOmniBackboneConfig.from_dict(meta["config"]))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise BrainOmniCheckpointError(f"{weights}: missing")
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise BrainOmniCheckpointError(f"{weights}: does not match {cfg_path}: {str(e)[:400]}") from e
    return model.eval(), meta


def load_brainomni_package(path: str | Path, tokenizer: str | Path | None = None):
    """An imported package -> (tokenizer, backbone or None, metadata). A backbone package finds its tokenizer in
    the recorded (relative) folder unless ``tokenizer`` is given."""
    root = Path(path)
    meta = json.loads((root / "config.json").read_text()) if (root / "config.json").is_file() else {}
    if meta.get("model") == "BrainOmniTokenizer":
        tok, tmeta = _load_package(root, "tokenizer")
        return tok, None, {"tokenizer": tmeta}
    bb, bmeta = _load_package(root, "backbone")
    rec = bmeta.get("tokenizer") or {}
    tok_dir = Path(tokenizer) if tokenizer else (root / rec.get("path", TOKENIZER_DIR) if rec.get("relative", True)
                                                 else Path(rec["path"]))
    tok, tmeta = _load_package(tok_dir, "tokenizer")
    if not tokenizer and rec.get("weights_sha256") and content_hash(tok_dir / "model.safetensors") != rec["weights_sha256"]:
        raise BrainOmniCheckpointError(f"{tok_dir / 'model.safetensors'}: changed since the import (sha256 differs from "
                                       f"{root / 'config.json'})")
    return tok, bb, {"backbone": bmeta, "tokenizer": tmeta, "tokenizer_path": str(tok_dir)}
