"""The experiments as library calls: the full diagnosis and the steering comparison, with their reports.

| module | owns |
|---|---|
| ``diagnosis`` | :func:`~lowres_safety.pipelines.diagnosis.analyse`: every analysis of ``lowres-safety diagnose``, and its report sections |
| ``steering`` | :func:`~lowres_safety.pipelines.steering.fit_methods` and :func:`~lowres_safety.pipelines.steering.evaluate`: every intervention method fitted on source languages and scored per target language |
| ``steer_prompts`` | the fit, evaluation and calibration prompts of ``steer``, disjoint by source id |
| ``causal_report`` | the report sections of :mod:`lowres_safety.causal` |
| ``report`` | self-contained HTML reports and JSON results |
"""
