"""Loading a foundation classifier: the tokenizer and backbone packages -> a `FoundationClassifier` (head random)."""

from __future__ import annotations

from pathlib import Path

from finetune.model import FoundationClassifier, HeadConfig


def load_foundation(backbone: str, tokenizer: str | None, head: HeadConfig, input_kind: str,
                    backbone_init: str = "pretrained", preprocessing=None) -> tuple[FoundationClassifier, dict]:
    """A `FoundationClassifier` with the pretrained tokenizer and backbone weights (head random). Returns it and
    the provenance (package paths and hashes). ``backbone_init="random"``: the backbone's weights are a fresh
    initialisation of the same architecture instead (from the current torch RNG), except its frozen codebooks,
    which are the tokenizer's. ``input_kind``: ``latents`` or ``tokens`` (`FoundationClassifier`). ``preprocessing`` (the task's `TaskPreprocessing`), when given, must agree with the
    tokenizer's sampling rate and hop (`check_tokenizer_agrees`)."""
    from pretrain.brainomni.convert import FAMILY, package_family
    from pretrain.package import load_backbone
    from runkit.entry import OptionError
    from tokenizer.package import load_package, package_reference

    if package_family(backbone) == FAMILY:  # an imported BrainOmni package: its own model family
        from finetune.brainomni import load_brainomni_classifier

        return load_brainomni_classifier(backbone, tokenizer, head)
    bb = load_backbone(backbone)
    tok_path = Path(tokenizer) if tokenizer else Path((bb.tokenizer or {}).get("path") or "")
    if not tokenizer and not (bb.tokenizer or {}).get("path"):
        raise OptionError(f"backbone package {backbone} records no tokenizer package; pass --model.tokenizer")
    if not (tok_path / "model.safetensors").is_file():
        raise OptionError(f"tokenizer package {tok_path} (named by backbone package {backbone}) is not there; "
                          "pass --model.tokenizer PKG")
    tok_package = load_package(tok_path)
    tok = tok_package.model
    if preprocessing is not None:
        from finetune.preprocessing import check_tokenizer_agrees

        check_tokenizer_agrees(preprocessing, tok.config.sfreq, tok.config.hop, f"tokenizer package {tok_path}",
                               tok_package.preprocessing)
    model = FoundationClassifier(tok.config, bb.model.config, head, backbone_input=input_kind)
    model.tokenizer.load_state_dict(tok.state_dict())
    state = bb.model.state_dict()
    if backbone_init == "random":
        from pretrain.model import MaskedTokenModel

        fresh = MaskedTokenModel(bb.model.config).state_dict()
        state = {k: (state[k] if k == "codebooks" else v) for k, v in fresh.items()}
    model.backbone.load_state_dict(state)
    source = {"backbone": {**package_reference(backbone), "init": backbone_init}, "tokenizer": package_reference(tok_path)}
    return model, source
