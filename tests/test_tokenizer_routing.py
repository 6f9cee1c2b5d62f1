"""Mirrored routing: the decoder reads each channel back from the latents that pooled it, and checkpoints and
packages trained before the option existed keep the routing they were trained with."""

from __future__ import annotations

import pytest
import torch
from test_tokenizer_model import make_batch

from runkit.entry import OptionError
from tokenizer import BrainTokenizer, TokenizerConfig
from tokenizer.lightning import CONFIG_KEY, TokenizerModule, checkpoint_config


def _decoder_top_latents(model: BrainTokenizer, sensor: torch.Tensor) -> torch.Tensor:
    """The latent each channel's decoder query weighs most, per head: [B, H, C] (zero latent content)."""
    query = model.decoder.query
    b, c, d = sensor.shape
    context = query.latent_ids[None].expand(b, -1, -1)
    logits = query.cross.attn.logits(query.cross.norm_q(sensor), query.cross.norm_kv(context))  # [B, H, C, N]
    routing = model._routing(sensor)
    if routing is not None:
        logits = logits + routing.transpose(-1, -2)
    return logits.argmax(dim=-1)


@pytest.mark.parametrize("routing", ["mirrored", "learned"])
def test_decoder_reads_channels_from_the_latents_that_pooled_them(routing) -> None:
    """With mirrored routing the latent a channel is read from is, for almost every channel and head, the one
    that pooled it most in the encoder; learned routing starts unrelated (about 1 in N_latent)."""
    torch.manual_seed(0)
    cfg = TokenizerConfig.from_dict({**TokenizerConfig.small().to_dict(), "decoder_routing": routing})
    model = BrainTokenizer(cfg).eval()
    batch = make_batch(2, (40, 0, 0))
    with torch.no_grad():
        sensor = model.sensor_encoder(batch["types"], batch["positions"], batch["orientations"])
        pooled_by = model.encoder.compressor.routing_logits(sensor).argmax(dim=2)  # [B, H, C]
        read_from = _decoder_top_latents(model, sensor)
    agreement = float((pooled_by == read_from).float().mean())
    if routing == "mirrored":
        assert agreement >= 0.8, f"decoder reads {agreement:.0%} of channels from their encoder latent"
    else:
        assert agreement < 0.3


def test_presets_mirror_and_older_configs_keep_learned_routing() -> None:
    for name in ("tiny", "small", "base"):
        assert TokenizerConfig.preset(name).decoder_routing == "mirrored"
    old = {k: v for k, v in TokenizerConfig.small().to_dict().items() if k != "decoder_routing"}
    assert TokenizerConfig.from_dict(old).decoder_routing == "learned"  # a package saved before the field
    with pytest.raises(ValueError, match="decoder_routing"):
        TokenizerConfig.from_dict({**old, "decoder_routing": "sideways"})


def test_checkpoints_record_their_config_and_old_ones_load_as_trained() -> None:
    module = TokenizerModule(preset="tiny")
    checkpoint: dict = {"hyper_parameters": {"preset": "tiny", "overrides": None}}
    assert checkpoint_config(checkpoint).decoder_routing == "learned"  # written before CONFIG_KEY existed
    module.on_save_checkpoint(checkpoint)
    assert checkpoint[CONFIG_KEY]["decoder_routing"] == "mirrored"
    assert checkpoint_config(checkpoint) == module.config
    module.on_load_checkpoint(checkpoint)  # same config: resumes
    reweighted = TokenizerModule(preset="tiny", overrides={"weight_phase": 0.0, "channel_dropout": 0.1})
    reweighted.on_load_checkpoint(checkpoint)  # loss weights and augmentation may change on resume
    with pytest.raises(OptionError, match="decoder_routing='learned'"):
        module.on_load_checkpoint({"hyper_parameters": {"preset": "tiny", "overrides": None}})
