"""BrainOmni's backbone and the importer of its released checkpoints (see `pretrain.brainomni.convert`)."""

from pretrain.brainomni.convert import (
    FAMILY,
    BrainOmniCheckpointError,
    import_checkpoint,
    load_brainomni_package,
    load_released,
    package_family,
)
from pretrain.brainomni.model import BrainOmniBackbone, BrainOmniBackboneConfig

__all__ = [
    "FAMILY", "BrainOmniBackbone", "BrainOmniBackboneConfig", "BrainOmniCheckpointError", "import_checkpoint",
    "load_brainomni_package", "load_released", "package_family",
]
