"""Positions of EEG electrodes from built-in montages, found by label: name variants ("EEG Fp1-Ref"), old and new
10-20 names, bipolar midpoints ("A1-Cz") and offsets ("C3-front"); and the choice of montage for a recording."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

import mne
import numpy as np

MIN_AUTO_COVERAGE = 0.5  # "auto" uses a montage only if it names at least this share of the channels
AUTO_MONTAGES = ("standard_1005", "biosemi128", "biosemi64", "biosemi32", "GSN-HydroCel-257", "GSN-HydroCel-129")


# Label decorations around an electrode name. Only *reference* suffixes are removed, so referential
# derivations ("Fp1-Ref", "C3-A2", "O1-LE") find their electrode, while bipolar ones ("Fp1-F3", "A1-Cz")
# and offsets ("C3-front") never match a single electrode: `resolve_montage_position` handles those.
# Cz is not treated as a reference suffix: "A1-Cz" is the bipolar pair A1, Cz.
_PREFIX_RE = re.compile(r"^EEG[\s_:\-]+", re.IGNORECASE)  # "EEG Fp1", "EEG-Fp1"
_REF_SUFFIX_RE = re.compile(
    r"[\s_\-/]+(?:REF|LE|RE|AR|AVG|AV|CAR|LER|A1A2|M1M2|A1|A2|M1|M2)$", re.IGNORECASE
)  # "-Ref", "-REF", "-LE", "-A1"
_DUP_SUFFIX_RE = re.compile(r"-\d+$")  # MNE's running numbers for duplicate labels: "F1-Ref-0"
_AUX_PREFIX_RE = re.compile(r"^POL\s", re.IGNORECASE)  # Nihon Kohden polygraph inputs ("POL X1", "POL DC01")


def _label_variants(name: str) -> list[str]:
    """Case-preserving cleaned forms of a label, most literal first (see `montage_name_keys`)."""
    raw = name.strip()
    base = _PREFIX_RE.sub("", raw).rstrip(".").strip()
    out = [raw, base, _REF_SUFFIX_RE.sub("", base)]
    undup = _DUP_SUFFIX_RE.sub("", base)
    if undup != base:
        out.append(_REF_SUFFIX_RE.sub("", undup))
    return out


def montage_name_keys(name: str) -> list[str]:
    """Lower-case montage look-up keys for a channel label, most literal first.

    "EEG Fc5." -> ["eeg fc5.", "fc5"]; "EEG F1-Ref-1" -> [..., "f1-ref-1", "f1"]; "C3-front" -> ["c3-front"].
    Rules: strip whitespace, an "EEG" type prefix and trailing dots (BCI2000 pads names with dots);
    then drop one reference suffix (REF, LE, RE, AR, AVG, CAR, A1, A2, M1, M2, ...); last, MNE's
    "-N" duplicate counter followed by a reference suffix.
    """
    out: list[str] = []
    for k in _label_variants(name):
        k = k.lower()
        if k and k not in out:
            out.append(k)
    return out


#: Old 10-20 temporal names (Jasper 1958) -> their 10-10 names (and back), used only when the montage
#: lacks the name itself (MNE's standard_1005 has both; the BioSemi caps have only T7/T8/P7/P8).
ELECTRODE_ALIASES: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
ELECTRODE_ALIASES.update({new: old for old, new in list(ELECTRODE_ALIASES.items())})
_ALIAS_BY_KEY = {k.lower(): (k, v) for k, v in ELECTRODE_ALIASES.items()}

#: "C3-front" / "C3-pariet" (BCI Competition II Ia, SCP1: 2 cm frontal / parietal of C3): the electrode
#: moved this far (metres) along the head frame's +y (anterior, towards the nasion) or -y (posterior)
#: axis. A straight shift, not along the scalp: over C3/C4 the point ends up a few millimetres off it.
DIRECTIONAL_OFFSET_M = 0.02
_ANTERIOR = ("front", "frontal", "ant", "anterior")
_POSTERIOR = ("pariet", "parietal", "post", "posterior")
_OFFSET_RE = re.compile(
    r"^(?P<el>.+?)[\s_\-]+(?P<dir>" + "|".join(_ANTERIOR + _POSTERIOR) + r")$", re.IGNORECASE
)
_BIPOLAR_RE = re.compile(r"^(?P<a>[^\s\-]+)\s*-\s*(?P<b>[^\s\-]+)$")


def _electrode(label: str, table: Mapping[str, np.ndarray]) -> tuple[np.ndarray, str | None] | None:
    """(position, alias or None) of one electrode label: the cleaned name, else its old/new 10-20 alias."""
    keys = montage_name_keys(label)
    for key in keys:
        pos = table.get(key)
        if pos is not None and np.isfinite(pos).all():
            return pos, None
    for key in keys:
        alias = _ALIAS_BY_KEY.get(key)
        if alias is not None:
            pos = table.get(alias[1].lower())
            if pos is not None and np.isfinite(pos).all():
                return pos, f"{alias[0]}->{alias[1]}"
    return None


def resolve_montage_position(name: str, montage: str = "standard_1005") -> tuple[np.ndarray, str] | None:
    """Head-frame position (metres, [3] float64) of an EEG label in ``montage`` and the rule that gave it.

    Rules, first hit wins (each needs its electrodes in the montage, found by `montage_name_keys`, so
    case, "EEG " prefixes, trailing dots and reference suffixes like "-Ref"/"-A2" do not matter):

    1. the name itself ("Fp1", "EEG FP1-REF", "C3-A2" -> C3): ``"montage:<montage>"``;
    2. an old/new 10-20 alias (`ELECTRODE_ALIASES`: T3<->T7, T4<->T8, T5<->P7, T6<->P8) when the montage
       lacks the name: ``"alias:T3->T7"``;
    3. a directional offset "<electrode>-front|frontal|ant|anterior" or "-pariet|parietal|post|posterior":
       the electrode moved `DIRECTIONAL_OFFSET_M` (2 cm) along the head frame's +y (anterior) or -y axis:
       ``"offset:C3+2cm-anterior"``;
    4. a bipolar derivation "<a>-<b>" ("Fp1-F3", "A1-Cz") whose two electrodes both resolve by 1-2: their
       midpoint, ``"bipolar:Fp1-F3"``.

    Returns None when no rule applies.
    """
    table = montage_positions(montage)
    hit = _electrode(name, table)
    if hit is not None:
        pos, alias = hit
        return pos.copy(), (f"alias:{alias}" if alias else f"montage:{montage}")
    for variant in _label_variants(name)[1:]:
        m = _OFFSET_RE.match(variant)
        if m is not None:
            el = _electrode(m["el"], table)
            if el is not None:
                anterior = m["dir"].lower() in _ANTERIOR
                pos = el[0].copy()
                pos[1] += DIRECTIONAL_OFFSET_M if anterior else -DIRECTIONAL_OFFSET_M
                cm = round(DIRECTIONAL_OFFSET_M * 100, 3)
                return pos, f"offset:{m['el']}+{cm:g}cm-{'anterior' if anterior else 'posterior'}"
        m = _BIPOLAR_RE.match(variant)
        if m is not None:
            a, b = _electrode(m["a"], table), _electrode(m["b"], table)
            if a is not None and b is not None:
                return (a[0] + b[0]) / 2.0, f"bipolar:{m['a']}-{m['b']}"
    return None


# Montage names MNE deprecated (1.13) and will remove; use the new name when this MNE has it.
_MONTAGE_ALIASES = {
    "standard_1005": "colin27_1005",
    "standard_1020": "colin27_1020",
    "standard_alphabetic": "colin27_alphabetic",
    "standard_postfixed": "colin27_postfixed",
    "standard_prefixed": "colin27_prefixed",
    "standard_primed": "colin27_primed",
}


@lru_cache(maxsize=8)
def montage_positions(montage: str) -> Mapping[str, np.ndarray]:
    """Lower-cased channel name -> [3] float64 head-frame position (metres) of a built-in montage.

    Positions are what ``info.set_montage(montage)`` would give: the montage moved to the head frame
    defined by its fiducials (`mne.channels.transform_to_head`). Cached per montage name.
    """
    builtin = set(mne.channels.get_builtin_montages())
    kind = _MONTAGE_ALIASES.get(montage, montage)
    kind = kind if kind in builtin else montage
    mont = mne.channels.transform_to_head(mne.channels.make_standard_montage(kind))
    table = {ch.lower(): np.asarray(pos, dtype=np.float64) for ch, pos in mont.get_positions()["ch_pos"].items()}
    for pos in table.values():
        pos.flags.writeable = False
    return MappingProxyType(table)  # shared by every caller: read-only


def _pick_montage(names: tuple[str, ...], missing: np.ndarray) -> str | None:
    """The `AUTO_MONTAGES` entry that places the most ``missing`` channels, or None below the coverage.

    Nihon Kohden "POL ..." labels (polygraph/auxiliary inputs) are left out of the share: they name no
    scalp electrode in any montage.
    """
    rows = [i for i in np.flatnonzero(missing) if not _AUX_PREFIX_RE.match(names[i].strip())]
    if not rows:
        return None
    counts = {m: sum(resolve_montage_position(names[i], m) is not None for i in rows) for m in AUTO_MONTAGES}
    best = max(counts, key=counts.get)
    # names that fit no cap well: a partial match would be a wrong position
    return best if counts[best] >= MIN_AUTO_COVERAGE * len(rows) and counts[best] > 0 else None
