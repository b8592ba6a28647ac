"""The sampler's option names and bounds, without torch (the command line builds its parser
from them before anything heavy is imported)."""

REMASKING = ("low_confidence", "random", "margin", "entropy")
BACKENDS = ("auto", "reference", "torch", "triton")
THRESHOLD_RULES = ("fixed", "factor", "eb")   # how `threshold` picks the tokens a step keeps
CACHE_MODES = ("prefix", "dual", "block")  # block KV caches (None: no cache; "block": exact, block-causal models)
THRESHOLD_FLOORS = ("one", "schedule")     # the fewest tokens a threshold step keeps
SEED_LIMIT = 2**63         # seeds are 64-bit Philox keys, kept non-negative
MAX_LENGTH = 1 << 24       # gen_length and steps: far below the 32-bit Philox counter words
TRUNCATION_ORDERS = ("top_k_first", "top_p_first")   # LLaDA2 / HF order; Dream's (numerics.md §4a)
# Whose confidence the rules compute (numerics.md §6a): LLaDA's untempered full softmax; Dream's
# `sample_tokens` (the tempered, truncated softmax, truncated at T = 0 too); LLaDA2's
# `_sample_with_temperature_topk_topp` (the tempered, truncated softmax at T > 0, LLaDA's at T = 0).
CONFIDENCE_KINDS = ("llada", "dream", "llada2")
# generate's default special ids: LLaDA's published mask, EOS and EoT ids (LLaDA's generate.py
# defaults). The llada family record (fastremask.models.family) and the LLaDA oracle read them.
LLADA_MASK, LLADA_EOS, LLADA_EOT = 126336, 126081, 126348
