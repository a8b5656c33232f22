"""Merging against the alignment tax (METHODS.md sections 4-5).

- :mod:`alignlab.merge.average`: theta = alpha * aligned + (1 - alpha) * pre (alpha = share of the ALIGNED model)
  on state dicts, models, and streamed safetensors checkpoints;
- :mod:`alignlab.merge.hma`: Heterogeneous Model Averaging (per-block ratios, given or learned);
- :mod:`alignlab.merge.online`: the online merging optimizers OnDARE and OnTIES (AdamW + task-vector merging).
"""
from .average import (SCOPES, MergeMismatchError, average, check_alpha, linear_keys, linear_keys_by_rule,
                      merge_checkpoints, merge_models, merge_state_dicts, merge_tensor)
from .hma import (block_of, block_ranges, block_ratio_function, check_block_ratios, hma_ratios, learn_block_ratios,
                  sample_high_reward_rows, select_high_reward_rows)
from .online import ONLINE_MERGERS, OnDARE, OnTIES, build_online_optimizer, check_strategy, task_vectors

__all__ = [
    "ONLINE_MERGERS", "OnDARE", "OnTIES", "SCOPES", "MergeMismatchError", "average", "block_of", "block_ranges",
    "block_ratio_function", "build_online_optimizer", "check_alpha", "check_block_ratios", "check_strategy",
    "hma_ratios", "learn_block_ratios", "linear_keys", "linear_keys_by_rule", "merge_checkpoints", "merge_models",
    "merge_state_dicts", "merge_tensor", "sample_high_reward_rows", "select_high_reward_rows", "task_vectors",
]
