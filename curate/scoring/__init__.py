"""Scoring preference pairs with a reward model, for `curate reward`.

- `scorer`: the small interface the stage needs (pairs -> chosen/rejected rewards) and
  its adapters: a `curate train` checkpoint, a plain function, k-fold surrogates;
- `cache`: scores stored by (scorer fingerprint, pair_id), so rules rerun in seconds;
- `rules`: the filtering rules over the scores.
"""
