"""The BrainOmni model family (arXiv 2505.18185, MIT-licensed release by OpenTSLab) in brainforge's own code:
its tokenizer maths here, its backbone in `pretrain.brainomni`, the checkpoint importer in
`pretrain.brainomni.convert`."""

from tokenizer.brainomni.inputs import brainomni_normalise, brainomni_positions
from tokenizer.brainomni.model import (
    BAND_HZ,
    SAMPLE_RATE,
    BrainOmniTokenizer,
    BrainOmniTokenizerConfig,
    unfold_windows,
)

__all__ = [
    "BAND_HZ", "SAMPLE_RATE", "BrainOmniTokenizer", "BrainOmniTokenizerConfig", "brainomni_normalise",
    "brainomni_positions", "unfold_windows",
]
