"""Anatomical groups of FreeSurfer IDP names, for profiles a clinician can read region by region.

Groups, in display order: cortical thickness of each lobe per hemisphere (Destrieux or Desikan-Killiany
labels, assigned by the label's keywords), subcortical grey matter, cerebellum and brainstem, ventricles
and CSF, white matter and corpus callosum, global measures; names matching nothing are "Other". The rules
read the FreeSurfer naming conventions (``lh_``/``rh_``/``Left-``/``Right-`` prefixes, ``_thickness``
suffixes); a synthetic ``idp_01`` is "Other".
"""

from __future__ import annotations

import re

LOBES = (
    ("frontal", ("front", "orbital", "precentral", "rectus", "subcallosal", "paracentral", "opercular",
                 "triangul", "S_central", "suborbital", "pars")),
    ("temporal", ("temp", "heschl", "planum", "fusifor", "parahip", "collat", "oc-temp", "entorhinal", "bankssts",
                  "pole_temp")),
    ("parietal", ("pariet", "postcentral", "supramar", "angular", "precuneus", "subparietal", "intrapariet")),
    ("occipital", ("occipit", "cuneus", "calcarine", "lingual", "pericalcarine", "oc_")),
    ("cingulate and insula", ("cingul", "insula", "circular", "pericallosal", "isthmus", "_ins_", "_ins")),
)
SUBCORTICAL = ("thalamus", "caudate", "putamen", "pallidum", "hippocampus", "amygdala", "accumbens", "ventraldc")
VENTRICLES = ("ventricle", "inf-lat-vent", "csf", "choroid", "vessel")
CEREBELLUM = ("cerebellum", "brain-stem", "brainstem")
WHITE = ("cc_", "hypointensities", "whitematter", "white-matter", "optic-chiasm")
GLOBAL = ("etiv", "estimatedtotalintracranial", "brainseg", "cortexvol", "totalgray", "subcortgray", "supratentorial",
          "maskvol", "meanthickness")

GROUP_ORDER = tuple(f"Cortical thickness, {lobe}, {side}" for lobe, _ in LOBES for side in ("left", "right")) + (
    "Cortical thickness, other, left", "Cortical thickness, other, right", "Subcortical grey matter",
    "Cerebellum and brainstem", "Ventricles and CSF", "White matter and corpus callosum", "Global measures", "Other")


def _side(name: str) -> str | None:
    low = name.lower()
    if re.match(r"^(lh[_.]|left-)", low) or low.startswith("lh"):
        return "left"
    if re.match(r"^(rh[_.]|right-)", low) or low.startswith("rh"):
        return "right"
    return None


def anatomical_group(name: str) -> str:
    """The display group of an IDP (one of :data:`GROUP_ORDER`)."""
    low = name.lower()
    side = _side(name)
    if any(k in low for k in GLOBAL):
        return "Global measures"
    if "thickness" in low and side:
        label = re.sub(r"^(lh|rh)[_.]?", "", name)
        for lobe, keys in LOBES:
            if any(k.lower() in label.lower() for k in keys):
                return f"Cortical thickness, {lobe}, {side}"
        return f"Cortical thickness, other, {side}"
    if any(k in low for k in SUBCORTICAL):
        return "Subcortical grey matter"
    if any(k in low for k in CEREBELLUM):
        return "Cerebellum and brainstem"
    if any(k in low for k in VENTRICLES):
        return "Ventricles and CSF"
    if any(k in low for k in WHITE):
        return "White matter and corpus callosum"
    return "Other"


def group_order(names: list[str]) -> list[tuple[str, list[str]]]:
    """The IDPs grouped, groups in :data:`GROUP_ORDER` and names in their given order within a group."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(anatomical_group(name), []).append(name)
    return [(g, groups[g]) for g in GROUP_ORDER if g in groups]
