"""The experiments as library calls: the full diagnosis and the steering comparison, with their reports.

| module | owns |
|---|---|
| ``config`` | :class:`DiagnoseConfig`, :class:`SteerConfig`: every option, declared and checked once |
| ``diagnose`` | :func:`diagnose` (config → :class:`DiagnoseResult`, with ``.save(folder)``) |
| ``diagnosis`` | the diagnosis's stages (:func:`~lowres_safety.pipelines.diagnosis.analyse`) and report sections |
| ``steer`` | :func:`steer` (config → :class:`SteerResult`, with ``.save(folder)``) |
| ``steering`` | ``fit_methods`` and ``evaluate``: every method fitted on the source languages, scored per target |
| ``steer_prompts`` | the fit, evaluation and calibration prompts of ``steer``, disjoint by source id |
| ``causal_report`` | the report sections of :mod:`lowres_safety.causal` |
| ``report`` | self-contained HTML reports and JSON results |
"""

from .config import DiagnoseConfig, SteerConfig
from .diagnose import DiagnoseResult, diagnose
from .steer import SteerResult, steer

__all__ = ["DiagnoseConfig", "DiagnoseResult", "SteerConfig", "SteerResult", "diagnose", "steer"]
