import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

POLYREFUSE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Multilingual-Refusal"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def default_model():
    from lowres_safety import load_model

    return load_model()


@pytest.fixture(scope="session")
def polyrefuse_root():
    """The PolyRefuse folder beside the checkout; missing, a test that reads it skips (or, under CI, fails)."""
    if not POLYREFUSE.is_dir():
        message = f"PolyRefuse not found at {POLYREFUSE} (shared/data/Multilingual-Refusal beside the checkout)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI runs every test that reads it")
        pytest.skip(message)
    return POLYREFUSE
