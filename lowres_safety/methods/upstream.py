"""Files from the baselines' own authors, read where a user has them (nothing is downloaded).

AdaSteer's vectors (MuyuenLP/AdaSteer ``vectors/{model}/{RD,HD}/*.pkl``, which the paper's
released zero-shot run downloads with ``scripts/routing_refusal/download_adasteer_vectors.py``)
are pickled numpy arrays. A pickle can run code when loaded, so they are read with an
unpickler that rebuilds numpy arrays and refuses everything else. CAST's own data (IBM's
``docs/demo-data`` JSON files, which the released zero-shot CAST run trains and tunes on) is
read as the released script reads it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["CAST_FILES", "adasteer_arrays", "cast_demo_data", "read_numpy_pickle"]

_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer")}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are read from these files")
        return super().find_class(module, name)


def read_numpy_pickle(path: str | Path) -> np.ndarray:
    """One pickled numpy array, read without running anything else the pickle might hold."""
    with open(path, "rb") as fh:
        value = _NumpyOnly(fh).load()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a numpy array")
    return value


def adasteer_arrays(folder: str | Path) -> dict[str, Tensor]:
    """Upstream AdaSteer's vectors for one model, as the released ``adasteer.py::load_adasteer_bundle`` reads them.

    ``rd`` = ``RD/mean_diff.pkl``, ``hd`` = ``HD/proj.pkl`` (``[layer, d_model]``); the α
    anchors are the means over examples of ``RD/class_a.pkl`` and ``RD/class_b.pkl``
    (``[layer, n, d_model]``), the β anchors those of ``HD/class_*.pkl``.
    """
    folder = Path(folder)
    names = [f"{part}/{name}.pkl" for part in ("RD", "HD") for name in ("class_a", "class_b")] + ["RD/mean_diff.pkl",
                                                                                              "HD/proj.pkl"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: pass the folder of one model's vectors "
                                "(vectors/<model>/ with RD/ and HD/ inside)")
    read = {n: torch.from_numpy(np.asarray(read_numpy_pickle(folder / n), dtype=np.float32)) for n in names}
    out = {"mu_a": read["RD/class_a.pkl"].mean(1), "mu_b": read["RD/class_b.pkl"].mean(1),
           "beta_a": read["HD/class_a.pkl"].mean(1), "beta_b": read["HD/class_b.pkl"].mean(1),
           "rd": read["RD/mean_diff.pkl"], "hd": read["HD/proj.pkl"]}
    layers = {k: v.shape[0] for k, v in out.items()}
    if len(set(layers.values())) != 1:
        raise ValueError(f"the vector files disagree on the number of layers: {layers}")
    return out


#: CAST's demo data files (IBM/activation-steering ``docs/demo-data``), as the released zero-shot run reads them.
CAST_FILES = ("condition_harmful.json", "alpaca.json", "behavior_refusal.json")


def cast_demo_data(folder: str | Path, questions: int = 100, suffixes: int = 100) -> dict[str, list]:
    """CAST's own data, read as ``run_cast_steering.py::official_condition_pairs`` and ``official_behavior_pairs`` do.

    ``condition_train`` and ``condition_test``: (harmful, harmless) pairs of
    ``condition_harmful.json``'s ``train`` and ``test`` splits (the vectors are fitted on
    the first, the condition grid tuned on the second); ``questions``: the first
    ``questions`` of ``alpaca.json``'s ``train``; ``suffixes``: the first ``suffixes``
    (refusing, complying) response openings of ``behavior_refusal.json``. The released run
    uses 100 and 100.
    """
    folder = Path(folder)
    missing = [name for name in CAST_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: pass IBM/activation-steering's docs/demo-data folder")
    read = {name: json.loads((folder / name).read_text(encoding="utf-8")) for name in CAST_FILES}
    condition = read["condition_harmful.json"]
    refusal = read["behavior_refusal.json"]
    pairs = list(zip(refusal["non_compliant_responses"][:suffixes], refusal["compliant_responses"][:suffixes],
                     strict=True))
    return {"condition_train": [(str(r["harmful"]), str(r["harmless"])) for r in condition["train"]],
            "condition_test": [(str(r["harmful"]), str(r["harmless"])) for r in condition["test"]],
            "questions": [str(r["question"]) for r in read["alpaca.json"]["train"][:questions]],
            "suffixes": [(str(a), str(b)) for a, b in pairs]}
