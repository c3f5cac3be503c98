"""Machinery the research steps stand on; nothing here is a step of the question.

| module | owns |
|---|---|
| ``batching`` | length-grouped batches, left padding, stopping a forward pass early |
| ``decoding`` | the contract between the decoding loop and the hooks (prefill or decoding step, prompt mask) |
| ``lean`` | the bridge with only the hook points in use |
| ``prefix`` | a shared prompt prefix computed once and reused from its KV cache |
| ``files`` | atomic writes (temporary file, then rename) |
| ``notebook`` | :func:`notebook_setup` |

Private: its names may change between versions. What a user needs of it is exported
from :mod:`lowres_safety` (``notebook_setup``) or :mod:`lowres_safety.hooks`.
"""
