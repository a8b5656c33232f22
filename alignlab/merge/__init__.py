"""Merging against the alignment tax (METHODS.md sections 4-5).

The plug-ins a run instantiates from conf/merge/*.yaml (one interface, :class:`~alignlab.merge.base.Merge`):
:class:`NoMerge`, :class:`Average`, :class:`HMA`, :class:`OnDAREMerge`, :class:`OnTIESMerge`
(:mod:`alignlab.merge.plugins`). Underneath, from the bottom up (no module imports one that imports it back):

- :mod:`alignlab.merge.checks`: alpha / scope validation and :class:`MergeMismatchError`;
- :mod:`alignlab.merge.blocks`: HMA's layer blocks and the per-tensor ratio functions;
- :mod:`alignlab.merge.safetensors_stream`: reading and writing safetensors checkpoints tensor by tensor;
- :mod:`alignlab.merge.average`: theta = alpha * aligned + (1 - alpha) * pre (alpha = share of the ALIGNED
  model) on state dicts, models, and streamed checkpoints;
- :mod:`alignlab.merge.hma`: Heterogeneous Model Averaging's learned ratios;
- :mod:`alignlab.merge.online`: the online merging optimizers OnDARE and OnTIES (AdamW + task-vector merging).
"""
from .average import (average, linear_keys, linear_keys_by_rule, merge_checkpoints, merge_models, merge_state_dicts,
                      merge_tensor)
from .base import Merge
from .blocks import block_of, block_ranges, block_ratio_function, check_block_ratios
from .checks import SCOPES, MergeMismatchError, check_alpha, check_scope
from .hma import hma_ratios, learn_block_ratios, sample_high_reward_rows, select_high_reward_rows
from .online import OnDARE, OnTIES, build_online_optimizer, check_strategy, task_vectors
from .plugins import HMA, Average, NoMerge, OnDAREMerge, OnlineMerge, OnTIESMerge

__all__ = [
    "HMA", "SCOPES", "Average", "Merge", "MergeMismatchError", "NoMerge", "OnDARE", "OnDAREMerge", "OnTIES",
    "OnTIESMerge", "OnlineMerge", "average", "block_of", "block_ranges", "block_ratio_function",
    "build_online_optimizer", "check_alpha", "check_block_ratios", "check_scope", "check_strategy", "hma_ratios",
    "learn_block_ratios", "linear_keys", "linear_keys_by_rule", "merge_checkpoints", "merge_models",
    "merge_state_dicts", "merge_tensor", "sample_high_reward_rows", "select_high_reward_rows", "task_vectors",
]
