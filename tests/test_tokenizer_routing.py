"""Mirrored routing: the decoder reads each channel back from the latents that pooled it, and checkpoints and
packages trained before the option existed keep the routing they were trained with."""

from __future__ import annotations

import pytest
import torch
from test_tokenizer_model import make_batch

from runkit.entry import OptionError
from tokenizer import BrainTokenizer, TokenizerConfig
from tokenizer.layers import balanced_routing
from tokenizer.lightning import CONFIG_KEY, TokenizerModule, checkpoint_config


def _decoder_top_latents(model: BrainTokenizer, sensor: torch.Tensor) -> torch.Tensor:
    """The latent each channel's decoder query weighs most, per head: [B, H, C] (zero latent content)."""
    query = model.decoder.query
    b, c, d = sensor.shape
    context = query.latent_ids[None].expand(b, -1, -1)
    logits = query.cross.attn.logits(query.cross.norm_q(sensor), query.cross.norm_kv(context))  # [B, H, C, N]
    routing = model._routing(sensor, torch.ones(b, c, dtype=torch.bool))
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
        mask = torch.ones(sensor.shape[:2], dtype=torch.bool)
        pooled_by = model.encoder.compressor.routing(sensor, mask).argmax(dim=2)  # [B, H, C], as the encoder pools
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


def test_balanced_routing_gives_every_channel_the_same_share() -> None:
    """Sinkhorn-balanced pooling: each latent-head row is still an attention (sums to 1), every real channel
    gets H * N / C_real of the weight, padded channels none; plain softmax routing leaves channels uneven."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 16, 10, generator=g) * 3 + torch.linspace(-2, 2, 10)  # some channels favoured
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    weights = balanced_routing(logits, mask).exp()
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 4, 16), atol=1e-5)
    share = weights.sum(dim=(1, 2))
    assert torch.allclose(share[0], torch.full((10,), 6.4), rtol=0.2)
    assert torch.allclose(share[1, :7], torch.full((7,), 64 / 7), rtol=0.2) and (share[1, 7:] == 0).all()
    plain = logits.softmax(dim=-1).sum(dim=(1, 2))[0]
    assert plain.max() / plain.min() > 5 and share[0].max() / share[0].min() < 1.5

    # in the model: padding a window with masked channels changes neither its tokens nor its reconstruction
    torch.manual_seed(0)
    cfg = TokenizerConfig.from_dict({**TokenizerConfig.tiny().to_dict(), "balanced_routing": True})
    model = BrainTokenizer(cfg).eval()
    batch = make_batch(1, (12, 0, 0))
    padded = {k: torch.cat([v, torch.zeros_like(v[:, :5])], dim=1) for k, v in batch.items()}
    padded["channel_mask"][:, 12:] = False
    with torch.no_grad():
        a, b = model(batch), model(padded)
    assert torch.equal(a["indices"], b["indices"])
    assert torch.allclose(a["recon"], b["recon"][:, :12], atol=1e-5) and (b["recon"][:, 12:] == 0).all()
