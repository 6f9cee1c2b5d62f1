"""Task preprocessing: what turns a recording or epochs into model inputs, repeated exactly at predict time.

A `TaskPreprocessing` (saved as ``preprocessing.json`` in runs and model packages) wraps the data stage's
`PreprocessingSpec` and adds what labelled tasks need. Two input kinds:

``"recordings"`` (continuous data: CSV and BIDS tasks, uploaded recordings)
    The data stage's `RecordingPipeline` as in pretraining: polyphase resampling to 256 Hz, 0.1 Hz
    high-pass + low-pass at min(100 Hz, 0.45 x sfreq_in) + notch (one FIR over the whole recording,
    streamed in chunks), bad channels excluded, each sensor type divided by the recording's own robust
    scale (median of per-channel MAD), as the tokenizer saw in pretraining.
    - A label per recording: the recording is cut into ``spec.window_s`` windows (2 s, 512 samples).
    - A label per segment ``[start_s, stop_s)``: the window length T is the shortest segment rounded UP
      to a multiple of 64 samples (the tokenizer hop), at most ``spec.window_s``. A segment shorter than T
      is widened symmetrically with the real filtered signal around it (moved inwards at the recording's
      edges), never zero-padded; a longer segment gives every window of T that fits in it (stride
      ``min(spec.stride_s, T)``). E.g. the 0.6 s segments of ``mne_sample_audvis.csv`` (154 samples at
      256 Hz) become one 192-sample (0.75 s) window each, centred on the segment.

``"epochs"`` (``*-epo.fif``, braindecode windows)
    Epochs are short (0.5-4.5 s): the 0.1 Hz high-pass (a ~33 s FIR) and the 1 Hz-wide notch (a ~3.3 s FIR)
    of continuous recordings cannot be applied to them, and per-epoch demeaning would remove slow cortical
    potentials (the SCP task lives in the DC level). So for epochs:
    1. channels: EEG/MAG/GRAD, ``info["bads"]`` dropped; NaN/Inf samples are an error (no silent repair);
    2. polyphase resampling to 256 Hz (``scipy.signal.resample_poly``, ``padtype="line"`` so the DC level
       and slope do not ring at the epoch edges);
    3. low-pass only, MNE's FIR at min(100 Hz, 0.45 x sfreq_in) when that is below the new Nyquist
       (zero phase, odd reflection at the edges); no high-pass, no notch, no per-epoch baseline;
    4. length: T = the median training epoch length rounded to the NEAREST multiple of 64 samples; each
       epoch is cropped at its end or padded by holding its last value (``length_rule="tail"``),
       so time zero stays the epoch's first sample (SCP1: 895 -> 896, EyesOpenShut: 254 -> 256);
    5. a constant per-channel offset (``offsets``: the channel's median over the TRAINING epochs) is
       subtracted: it removes an amplifier DC offset (EyesOpenShut carries ~4.3 mV) but keeps every
       difference between epochs, so slow potentials survive;
    6. each sensor type is divided by one robust scale fixed on the TRAINING epochs (``scales``: median over
       channels of the per-channel MAD), then clipped to ``spec.clip``.
    A continuous recording given to an epochs model (predict, the server) is cut into consecutive
    non-overlapping pieces of T samples at 256 Hz, which then go through the same steps.

Items are dicts in the `data.dataset.WindowCollator` format: ``signal`` [C, T] float32 scaled units,
``types`` [C] int8, ``positions`` [C, 3] float32 metres (NaN unknown), ``orientations`` [C, 3] float32,
plus ``channels`` (the C channel names, a tuple), ``recording`` and ``t0_s``.
"""

from __future__ import annotations

from .prep.epochs import epochs_volts, scale_epochs, windows_from_epoch_array, windows_from_epochs
from .prep.recordings import windows_from_raw
from .prep.task import (
    EPOCHS_PER_BATCH,
    HOP,
    INPUT_KINDS,
    STAT_SAMPLES,
    TASK_PREP_VERSION,
    ModelInputs,
    TaskPreprocessing,
    _captured_warnings,
    check_tokenizer_agrees,
    fit_preprocessing,
    fit_scales,
    round_to_hop,
    tokenizer_spec,
)

__all__ = ["EPOCHS_PER_BATCH", "HOP", "INPUT_KINDS", "STAT_SAMPLES", "TASK_PREP_VERSION", "ModelInputs",
           "TaskPreprocessing", "_captured_warnings", "check_tokenizer_agrees", "epochs_volts", "fit_preprocessing",
           "fit_scales", "round_to_hop", "tokenizer_spec", "scale_epochs", "windows_from_epoch_array", "windows_from_epochs",
           "windows_from_raw"]
