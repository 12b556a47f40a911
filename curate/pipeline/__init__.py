"""The machinery every stage runs through (layer 2, below `curate.stages`).

- `runner`: `StageRun` and `run_filter_stage` (fingerprint and skip, kept/rejected,
  conservation, manifest, atomic commit) and the stage registry;
- `fragment_writes`: the one write pass, one task per input fragment, on every engine;
- `entry`: the one shape of a stage's entry point and its config (`RUN_ONLY`,
  `configured`, `recorded`);
- `card`: the dataset card written beside every manifest.
"""
