"""The stages of one run, in the order alignlab.run.run calls them, one module each:

    tokenizer.py   the tokenizer (a hub/local one, or BPE trained on the data's texts: a cached stage)
    start.py       the model alignment starts from (the base model, after the SFT stage when the data has one)
    pairs.py       preference pairs (the source's own, or sampled from the start model and labelled: a cached stage)
    frozen.py      the frozen models the method declares (reference, teachers trained as cached stages)
    fit.py         the Lightning module, data module and trainer; fit; the trained policy
    merge.py       the post-hoc merge after training, and the merge-only mode
    evaluate.py    samples, rewards, KL, entropy, preference accuracy (and the tax) -> metrics
    results.py     results.json and the printed summary
    validate.py    the checks that run before anything is built
    cache.py       cached stages: a directory per fingerprint of a stage's inputs, built atomically

Each takes explicit values or its own config node, never the root config (validate.py checks the whole config).
"""
