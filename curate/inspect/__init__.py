"""Reading finished runs: `check` (quality gates, rules in `check_rules`) and `explain`
(why each row was kept or rejected). `curate.report` draws the same folders as HTML."""
