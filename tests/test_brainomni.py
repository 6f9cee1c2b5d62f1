"""BrainOmni in brainforge: equivalence with the reference code, the importer's errors, fine-tune -> export -> serve.

The reference outputs (tests/data/brainomni/expected.npz) were computed once by BrainOmni's own code
(tests/scripts/brainomni_fixture.py) at BrainOmni_tiny's released configuration, with the seeded random weights
of `brainomni_support.random_released_state` and their real 64-channel example input; their code is not needed here.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from brainomni_support import SMALL_CFG, TINY_CFG, write_released
from finetune_support import DEMO_TASK, fit_args
from serve_support import FIXTURES, ServerThread, eeg_signal, v2_body

from pretrain.brainomni.convert import BrainOmniCheckpointError, import_checkpoint, load_brainomni_package

DATA = Path(__file__).resolve().parent / "data" / "brainomni"


def test_converted_tiny_matches_reference_code(tmp_path):
    write_released(tmp_path / "BrainOmni_tiny", TINY_CFG, seed=0)
    from pretrain.__main__ import main

    assert main(["import", "brainomni", str(tmp_path / "BrainOmni_tiny"), "--out", str(tmp_path / "pkg")]) == 0
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["config.json", "model.safetensors", "preprocessing.json", "tokenizer"]
    spec = json.loads((tmp_path / "pkg" / "preprocessing.json").read_text())
    assert spec["sfreq"] == 256.0 and spec["l_freq"] == 0.1 and spec["h_freq_max"] == 96.0 and spec["extra"]["overlap_ratio"] == 0.25
    tok, bb, _ = load_brainomni_package(tmp_path / "pkg")
    inp, ref = np.load(DATA / "example_input.npz"), np.load(DATA / "expected.npz")
    x, pos, st = (torch.from_numpy(inp[k])[None] for k in ("x", "pos", "sensor_type"))
    with torch.no_grad():
        feats, idx = tok.tokenize(x, pos, st, 0.0)
        omni = bb.encode(tok.tokenize(x, pos, st, bb.config.overlap_ratio)[0], tok.latents)
        recon = tok.decode_features(feats.view(1, 16, 2, 8, 256), tok.sensor_embed(pos, st))  # = tok.reconstruct
    assert idx.shape == (1, 16, 16, 4) and omni.shape == (1, 16, 24, 256)
    np.testing.assert_array_equal(idx.numpy(), ref["tokenizer_indices"])
    np.testing.assert_allclose(feats.numpy(), ref["tokenizer_features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(omni.numpy(), ref["backbone_features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(recon.numpy(), ref["reconstruction"], atol=1e-4, rtol=0)


def test_tokenizer_folder_imports_alone(tmp_path):
    write_released(tmp_path / "BrainTokenizer", SMALL_CFG, seed=1, kind="BrainTokenizer")
    write_released(tmp_path / "BrainOmni", SMALL_CFG, seed=1)
    tok_only, bb, meta = load_brainomni_package(import_checkpoint(tmp_path / "BrainTokenizer", tmp_path / "tok_pkg"))
    assert bb is None and meta["tokenizer"]["model"] == "BrainOmniTokenizer"
    tok, _, _ = load_brainomni_package(import_checkpoint(tmp_path / "BrainOmni", tmp_path / "pkg"))
    x, pos, st = torch.randn(2, 5, 700), torch.randn(2, 5, 6), torch.tensor([[0, 0, 1, 2, 2]] * 2)
    with torch.no_grad():
        a, b = tok_only.tokenize(x, pos, st)[1], tok.tokenize(x, pos, st)[1]
    assert a.shape == (2, 4, 8, 2) and torch.equal(a, b)
    # a BrainOmni.pt without the tokenizer's weights needs the BrainTokenizer folder
    pt = tmp_path / "BrainOmni" / "BrainOmni.pt"
    torch.save({k: v for k, v in torch.load(pt, weights_only=True).items() if not k.startswith("tokenizer.")}, pt)
    with pytest.raises(BrainOmniCheckpointError, match=r"BrainOmni\.pt: missing key 'tokenizer\.encoder\.neuros'"):
        import_checkpoint(tmp_path / "BrainOmni", tmp_path / "pkg2")
    tok2, bb2, _ = load_brainomni_package(import_checkpoint(tmp_path / "BrainOmni", tmp_path / "pkg3", tmp_path / "BrainTokenizer"))
    with torch.no_grad():
        assert bb2 is not None and torch.equal(tok2.tokenize(x, pos, st)[1], a)


def test_padded_channels_do_not_change_tokens(tmp_path):
    write_released(tmp_path / "rel", SMALL_CFG, seed=2)
    tok, _, _ = load_brainomni_package(import_checkpoint(tmp_path / "rel", tmp_path / "pkg"))
    x, pos, st = torch.randn(1, 5, 512), torch.randn(1, 5, 6), torch.zeros(1, 5, dtype=torch.long)
    pad = lambda t: torch.cat([t, torch.zeros_like(t[:, :2])], 1)  # noqa: E731
    mask = torch.tensor([[True] * 5 + [False] * 2])
    with torch.no_grad():
        f1, i1 = tok.tokenize(x, pos, st)
        f2, i2 = tok.tokenize(pad(x), pad(pos), pad(st), channel_mask=mask)
    assert torch.equal(i1, i2) and torch.allclose(f1, f2, atol=1e-6)


# --- bad checkpoints: errors name the file and the key ---------------------------------------------------
class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("case", ["no_config", "config_key", "unexpected", "missing", "pickled", "shape", "not_dict", "no_weights"])
def test_bad_checkpoints_name_file_and_key(tmp_path, case):
    folder = write_released(tmp_path / "rel", SMALL_CFG, seed=3)
    pt = folder / "BrainOmni.pt"
    state = torch.load(pt, weights_only=True)
    words: list[str] = []
    if case == "no_config":
        (folder / "model_cfg.json").unlink()
        words = ["model_cfg.json", "missing"]
    elif case == "config_key":
        cfg = dict(SMALL_CFG)
        del cfg["n_neuro"]
        (folder / "model_cfg.json").write_text(json.dumps(cfg))
        words = ["model_cfg.json", "'n_neuro'"]
    elif case == "unexpected":
        torch.save({**state, "blocks.0.extra.weight": torch.zeros(2)}, pt)
        words = ["BrainOmni.pt", "unexpected key 'blocks.0.extra.weight'"]
    elif case == "missing":
        del state["blocks.1.ff.layer.2.bias"]
        torch.save(state, pt)
        words = ["BrainOmni.pt", "missing key 'blocks.1.ff.layer.2.bias'"]
    elif case == "pickled":
        with open(pt, "wb") as f:
            pickle.dump({"predict_head.weight": Evil()}, f)
        words = ["BrainOmni.pt", "weights_only"]
    elif case == "shape":
        state["tokenizer.encoder.k_proj.weight"] = torch.zeros(8, 8)
        torch.save(state, pt)
        words = ["BrainOmni.pt", "'tokenizer.encoder.k_proj.weight'", "(8, 8)", "(32, 32)"]
    elif case == "not_dict":
        torch.save({**state, "predict_head.bias": [1, 2]}, pt)
        words = ["BrainOmni.pt", "'predict_head.bias'", "list"]
    elif case == "no_weights":
        pt.unlink()
        words = ["BrainOmni.pt", "missing"]
    with pytest.raises(BrainOmniCheckpointError) as e:
        import_checkpoint(folder, tmp_path / "out")
    for w in words:
        assert w in str(e.value), str(e.value)
    assert not (tmp_path / "out").exists()
    from pretrain.__main__ import main

    assert main(["import", "brainomni", str(folder), "--out", str(tmp_path / "out2")]) == 1


# --- fine-tune, export, serve -------------------------------------------------------------------------------
def test_imported_package_fits_exports_and_serves(tmp_path):
    from finetune.__main__ import main as finetune
    from pretrain.__main__ import main as pretrain
    from serve.auth import add_key
    from serve.settings import Settings

    write_released(tmp_path / "BrainOmni_small", SMALL_CFG, seed=4)
    pkg = tmp_path / "pkg"
    assert pretrain(["import", "brainomni", str(tmp_path / "BrainOmni_small"), "--out", str(pkg)]) == 0
    run = tmp_path / "run"
    assert finetune(fit_args(DEMO_TASK, pkg, run, "full", "--trainer.max_epochs", "1")) == 0
    facts = json.loads((run / "test_metrics.json").read_text())["facts"]
    assert facts["arch"] == "brainomni"
    registry = tmp_path / "registry"
    assert finetune(["export", str(run), "--registry", str(registry), "--name", "omni"]) == 0
    config = json.loads((registry / "omni" / "1" / "config.json").read_text())
    assert config["model"]["kind"] == "brainomni" and config["source"]["family"] == "brainomni"

    keys = tmp_path / "keys.json"
    key, _ = add_key(keys, "tests")
    (tmp_path / "up").mkdir()
    settings = Settings(registry=registry, api_keys=keys, max_delay_ms=5, upload_dir=tmp_path / "up")
    with ServerThread(settings) as srv, httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"},
                                                      timeout=120) as client:
        x, names = eeg_signal(8, 4.0)
        r = client.post("/v2/models/omni/infer", json=v2_body(x, names, 256.0))
        assert r.status_code == 200, r.text
        out = {o["name"]: o for o in r.json()["outputs"]}
        probs = np.asarray(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
        assert probs.shape[1] == 2 and np.allclose(probs.sum(1), 1, atol=1e-5)
        with open(FIXTURES / "test.edf", "rb") as f:
            r = client.post("/v1/models/omni/predict", files={"file": ("test.edf", f, "application/octet-stream")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["summary"]["n_windows"] >= 1 and set(body["summary"]["probabilities"]) == set(body["labels"])
        with open(FIXTURES / "test.edf", "rb") as f:
            t = client.post("/v1/tokenize", params={"model": "omni"}, files={"file": ("test.edf", f)})
        assert t.status_code == 200, t.text


# --- braindecode's pretrained models as baselines --------------------------------------------------------
def _epochs_task(out: Path) -> Path:
    """24 real 0.5 s epochs of the MNE sample recording's EEG (labels a/b alternate), split given."""
    import mne
    import pandas as pd

    raw = mne.io.read_raw_fif(FIXTURES / "sample_audvis_5s_raw.fif", verbose="error").load_data().pick("eeg")
    sf = raw.info["sfreq"]
    onsets = np.arange(0.1, 4.4, 0.18)[:24]
    events = np.c_[np.round(onsets * sf).astype(int) + raw.first_samp, np.zeros(24, int), 1 + np.arange(24) % 2]
    md = pd.DataFrame({"split": ["train"] * 12 + ["val"] * 6 + ["test"] * 6})
    ep = mne.Epochs(raw, events, {"a": 1, "b": 2}, tmin=0.0, tmax=0.5 - 1 / sf, baseline=None, preload=True,
                    metadata=md, verbose="error")
    ep.save(out / "sample-epo.fif", verbose="error")
    return out / "sample-epo.fif"


def test_braindecode_labram_pretrained_from_local_folder_fits_and_serves(tmp_path):
    import warnings

    from finetune.__main__ import main as finetune
    from finetune.baselines import BaselineClassifier
    from serve.auth import add_key
    from serve.settings import Settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from braindecode.models import Labram
    torch.manual_seed(0)
    folder = tmp_path / "labram_local"  # what braindecode's save_pretrained writes (a hub repo holds the same)
    Labram(n_chans=64, n_outputs=5, n_times=128, sfreq=256.0, patch_size=64, embed_dim=32, num_layers=2,
           num_heads=4).save_pretrained(folder)
    model = BaselineClassifier("labram", 59, 2, 128, 256.0, pretrained=str(folder))
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    assert torch.equal(model.net.state_dict()["blocks.0.attn.qkv.weight"], saved["blocks.0.attn.qkv.weight"])
    assert model(torch.randn(3, 59, 128)).shape == (3, 2)

    task = _epochs_task(tmp_path)
    run, registry = tmp_path / "run", tmp_path / "registry"
    assert finetune(fit_args(task, None, run, "full", "--model.baseline", "labram", "--model.pretrained", str(folder),
                             "--trainer.max_epochs", "1")) == 0
    assert finetune(["export", str(run), "--registry", str(registry), "--name", "labram"]) == 0
    config = json.loads((registry / "labram" / "1" / "config.json").read_text())
    assert config["model"]["pretrained"] == str(folder) and config["model"]["net_config"]["n_chans"] == 64
    names = config["channels"]

    keys = tmp_path / "keys.json"
    key, _ = add_key(keys, "tests")
    (tmp_path / "up").mkdir()
    import mne

    ep = mne.read_epochs(task, verbose="error").pick(names)
    x = ep.get_data()[:3].astype(np.float32)
    with ServerThread(Settings(registry=registry, api_keys=keys, max_delay_ms=5, upload_dir=tmp_path / "up")) as srv, \
            httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        r = client.post("/v2/models/labram/infer", json=v2_body(x, names, float(ep.info["sfreq"]),
                                                                channel_types=["eeg"] * len(names)))
        assert r.status_code == 200, r.text
        out = {o["name"]: o for o in r.json()["outputs"]}
        assert out["probabilities"]["shape"] == [3, 2]


def test_sensor_layout_to_brainomni_pos_and_normalisation():
    """Our SensorLayout of a real EEG + MEG recording -> BrainOmni's pos convention and amplitude normalisation,
    against their preprocessing rules restated in numpy (positions centred and scaled per modality, planar
    orientation loc[3:6], magnetometer loc[9:12], EEG zeros; per-type cross-channel mean removal and group std)."""
    import mne

    from data.sensors import layout_from_info
    from tokenizer.brainomni import brainomni_normalise, brainomni_positions

    raw = mne.io.read_raw_fif(FIXTURES / "sample_audvis_5s_raw.fif", verbose="error").pick(["eeg", "meg"], exclude="bads")
    layout, _ = layout_from_info(raw.info)
    types, p, o = layout.types.astype(np.int64), layout.positions.astype(np.float64), layout.orientations.astype(np.float64)
    want = np.zeros((len(types), 6))
    for group in (types == 0, types > 0):
        c = p[group] - p[group].mean(0)
        want[group, :3] = c / np.sqrt(3 * np.mean(np.sum(c**2, 1)))
    want[types > 0, 3:] = o[types > 0]
    got = brainomni_positions(torch.from_numpy(types)[None], torch.from_numpy(p).float()[None], torch.from_numpy(o).float()[None])
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-5)
    assert set(np.unique(types)) == {0, 1, 2} and np.allclose(got[0, types == 0, 3:], 0)

    x = np.random.default_rng(0).standard_normal((len(types), 256)) * np.where(types == 0, 1.0, 3.0)[:, None]
    want_x = np.zeros_like(x)
    for t in (0, 1, 2):
        d = x[types == t] - x[types == t].mean(0, keepdims=True)
        want_x[types == t] = d / (d.std() + 1e-6)
    got_x = brainomni_normalise(torch.from_numpy(x).float()[None], torch.from_numpy(types)[None])
    np.testing.assert_allclose(got_x[0].numpy(), want_x, atol=1e-4)


def test_braindecode_cbramod_pretrained_for_another_channel_count(tmp_path):
    """A pretrained CBraMod (8 channels, 2 s at 200 Hz) for a 6-channel task: the encoder's weights carry over, only
    the classifier (channels x patches -> classes) starts anew; the package rebuilds it without the source."""
    import warnings

    from finetune.baselines import BaselineClassifier
    from finetune.model import build_classifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from braindecode.models import CBraMod
    torch.manual_seed(0)
    src = CBraMod(n_chans=8, n_outputs=4, n_times=400, sfreq=200.0, n_layer=2, dim_feedforward=64)
    src.save_pretrained(tmp_path / "cbramod")
    model = BaselineClassifier("cbramod", 6, 2, 256, 256.0, pretrained=str(tmp_path / "cbramod"))
    differ = [k for k, v in src.state_dict().items() if not torch.equal(v, model.net.state_dict()[k])]
    assert differ == ["final_layer.1.weight", "final_layer.1.bias"]  # a new head for 2 classes x 6 channels
    x = torch.randn(2, 6, 256)
    rebuilt = build_classifier(json.loads(json.dumps(model.config_dict())))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), model.eval()(x)) and model(x).shape == (2, 2)
