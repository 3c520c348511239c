"""Helpers shared by the golden scripts: exact float32 values and compact, diff-friendly JSON."""

import json
import re
from pathlib import Path

import numpy as np

_NUMBER_LIST = re.compile(r"\[\s*([-+0-9.eE,\s]*?)\s*\]")


def f32_list(values) -> list:
    """Each value as the shortest decimal that round-trips its float32: exact and compact."""
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32).ravel()]


def write_json(path: Path, obj) -> None:
    """Indented JSON whose lists of numbers stay on one line."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    text = _NUMBER_LIST.sub(lambda m: "[" + re.sub(r"\s+", "", m.group(1)).replace(",", ", ") + "]",
                            text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
