"""Scoring with a reward model, for `curate reward` (pairs) and `curate pairs` (responses).

- `scorer`: the scorer types (pairs -> chosen/rejected rewards; single responses ->
  scores) and their adapters: a `curate train` checkpoint, plain functions;
- `kfold`: k-fold surrogates, each pair scored by the model that did not see it;
- `cache`: scores stored by (scorer fingerprint, pair_id), so rules rerun in seconds;
- `rules`: the filtering rules over the scores.
"""
