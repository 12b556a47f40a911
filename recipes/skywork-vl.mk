# The Skywork-VL Reward data recipe as make file targets (values in recipes/skywork-vl.yaml).
#
# Every target is a dataset folder's manifest (or a checkpoint's metrics), so make reruns
# only what changed; `curate` itself also skips a stage whose input fingerprints and config
# match its output.
#
#   make -f recipes/skywork-vl.mk                 # from the hub: needs network, GPUs to train
#   make -f recipes/skywork-vl.mk SMALL=1         # the same recipe, offline, on the demo sample
#   make -f recipes/skywork-vl.mk SMALL=1 report  # ... up to the HTML report
#
# Override anything: make -f recipes/skywork-vl.mk WORK=/data/run1 BASE_MODEL=/models/qwen

CURATE ?= curate
Q ?= --quiet

ifeq ($(SMALL),1)
WORK ?= work/skywork-vl-small
RAW := $(WORK)/raw
RLAIF_V := $(RAW)/rlaif-v.parquet
LLAVA_CRITIC := $(RAW)/llava-critic.jsonl
PREFERENCE := $(RAW)/hh-rlhf.jsonl
PREFERENCE_KIND := hh-rlhf
SHAREGPT := $(RAW)/sharegpt.json
REWARDBENCH := $(RAW)/eval/rewardbench.jsonl
VL_REWARDBENCH := $(RAW)/eval/vl-rewardbench.jsonl
IMAGE_ROOT := --image-root $(RAW)
SURROGATE_MODEL ?= minilm
SURROGATE_CONFIG ?= recipes/train/minilm-frozen.yaml
BASE_MODEL ?= tiny-qwen2.5-vl
TRAIN_CONFIG ?= recipes/train/skywork-vl-small.yaml
SHARDS := --shards 2 --eval-fraction 0.2
SAMPLE := $(RAW)/.sample
# the regenerate loop: a tiny random policy that rarely ends a response, so keep cut ones
POLICY_MODEL ?= tiny-qwen2.5-vl
GENERATE ?= --n 4 --max-new-tokens 16 --keep-truncated
FLAG ?= --min-chosen 0.25 --min-margin 0.05
else
WORK ?= work/skywork-vl
RLAIF_V := hf://openbmb/RLAIF-V-Dataset
LLAVA_CRITIC := hf://lmms-lab/llava-critic-113k --config pairwise
PREFERENCE := hf://Skywork/Skywork-Reward-Preference-80K-v0.2
PREFERENCE_KIND := skywork-pref
SHAREGPT :=
REWARDBENCH := hf://allenai/reward-bench --split filtered
VL_REWARDBENCH := hf://MMInstruction/VL-RewardBench --split test
IMAGE_ROOT :=
SURROGATE_MODEL ?= Qwen/Qwen2.5-VL-7B-Instruct
SURROGATE_CONFIG ?= recipes/train/skywork-vl.yaml
BASE_MODEL ?= Qwen/Qwen2.5-VL-7B-Instruct
TRAIN_CONFIG ?= recipes/train/skywork-vl.yaml
SHARDS := --rows-per-shard 20000 --eval-fraction 0.02
SAMPLE :=
# the regenerate loop's stronger policy, served by vLLM: vllm serve $(POLICY_MODEL) --tensor-parallel-size 8
POLICY_MODEL ?= Qwen/Qwen2.5-VL-72B-Instruct
POLICY_ENDPOINT ?= http://127.0.0.1:8000/v1
GENERATE ?= --n 8 --max-new-tokens 1024 --backend openai --endpoint $(POLICY_ENDPOINT) --concurrency 64
FLAG ?= --min-chosen 0.1 --min-margin 0.1
endif

INGESTED := $(WORK)/01-ingest-rlaif-v/manifest.json $(WORK)/01-ingest-llava-critic/manifest.json \
            $(WORK)/01-ingest-$(PREFERENCE_KIND)/manifest.json
ifneq ($(SHAREGPT),)
INGESTED += $(WORK)/01-ingest-sharegpt/manifest.json
endif
EVALS := $(WORK)/eval-rewardbench/manifest.json $(WORK)/eval-vl-rewardbench/manifest.json

.PHONY: all ingest report clean
all: $(WORK)/08-eval.json
ingest: $(INGESTED) $(EVALS)
report: $(WORK)/report.html

$(SAMPLE):
	$(CURATE) demo --sample-only --out $(WORK)
	touch $@

$(WORK)/01-ingest-rlaif-v/manifest.json: $(SAMPLE)
	$(CURATE) ingest rlaif-v $(RLAIF_V) $(IMAGE_ROOT) --out $(@D) $(Q)
$(WORK)/01-ingest-llava-critic/manifest.json: $(SAMPLE)
	$(CURATE) ingest llava-critic $(LLAVA_CRITIC) $(IMAGE_ROOT) --out $(@D) $(Q)
$(WORK)/01-ingest-$(PREFERENCE_KIND)/manifest.json: $(SAMPLE)
	$(CURATE) ingest $(PREFERENCE_KIND) $(PREFERENCE) --out $(@D) $(Q)
$(WORK)/01-ingest-sharegpt/manifest.json: $(SAMPLE)
	$(CURATE) ingest sharegpt $(SHAREGPT) $(IMAGE_ROOT) --out $(@D) $(Q)
$(WORK)/eval-rewardbench/manifest.json: $(SAMPLE)
	$(CURATE) ingest rewardbench $(REWARDBENCH) --out $(@D) $(Q)
$(WORK)/eval-vl-rewardbench/manifest.json: $(SAMPLE)
	$(CURATE) ingest vl-rewardbench $(VL_REWARDBENCH) --out $(@D) $(Q)

# 1. pairs that appear in several sources (exact and perceptual-hash image duplicates)
$(WORK)/02-dedup/manifest.json: $(INGESTED)
	$(CURATE) dedup $(dir $^) --prefer rlaif-v --out $(@D) $(Q)

# 2. highly similar samples by semantic similarity
$(WORK)/03-similar/manifest.json: $(WORK)/02-dedup/manifest.json
	$(CURATE) similar $(<D) --out $(@D) $(Q)

# 3. overlap with the eval sets
$(WORK)/04-decontam/manifest.json: $(WORK)/03-similar/manifest.json $(EVALS)
	$(CURATE) decontam $(<D) --against $(WORK)/eval-rewardbench --against $(WORK)/eval-vl-rewardbench \
	  --out $(@D) $(Q)

# 4. surrogate reward model, out-of-fold: drop pairs it confidently disagrees with
$(WORK)/05-reward/manifest.json: $(WORK)/04-decontam/manifest.json
	$(CURATE) reward $(<D) --kfold 5 --model $(SURROGATE_MODEL) --train-config $(SURROGATE_CONFIG) \
	  --disagree --surrogates $(WORK)/05-surrogates --out $(@D) $(Q)

# 4a-d. the regenerate loop: flag kept pairs whose chosen response scores low or whose margin is
# minimal, sample new responses for their prompts from a stronger policy, let the surrogate RM
# pick best-worst pairs among them, and merge those back (dedup: a regenerated pair that repeats
# a kept one is a named duplicate, never a silent replacement)
SURROGATE := $(WORK)/05-surrogates/fold-0
$(WORK)/05a-flag/manifest.json: $(WORK)/05-reward/manifest.json
	$(CURATE) reward $(<D) --model $(SURROGATE) $(FLAG) --action flag --out $(@D) $(Q)
$(WORK)/05b-generate/manifest.json: $(WORK)/05a-flag/manifest.json
	$(CURATE) generate $(<D) --where flagged --model $(POLICY_MODEL) $(GENERATE) \
	  --cache $(WORK)/.cache/generate --out $(@D) $(Q)
$(WORK)/05c-pairs/manifest.json: $(WORK)/05b-generate/manifest.json
	$(CURATE) pairs $(<D) --model $(SURROGATE) --strategy best-worst \
	  --score-cache $(WORK)/.cache/scores --out $(@D) $(Q)
$(WORK)/05d-merge/manifest.json: $(WORK)/05-reward/manifest.json $(WORK)/05c-pairs/manifest.json
	$(CURATE) dedup $(dir $^) --prefer rlaif-v --near-match pair --out $(@D) $(Q)

# 5. the trainer's shards, multimodal / text stage tags, a stratified eval split
$(WORK)/06-shard/manifest.json: $(WORK)/05d-merge/manifest.json
	$(CURATE) shard $(<D) $(SHARDS) --out $(@D) $(Q)

# 6. two-stage training (multimodal at 1e-5, then + text at 1e-6; vision frozen)
$(WORK)/07-rm/metrics.json: $(WORK)/06-shard/manifest.json $(TRAIN_CONFIG)
	$(CURATE) train $(<D) --model $(BASE_MODEL) --config $(TRAIN_CONFIG) --out $(@D) $(Q)

# 7. benchmarks, with their own scoring rules
$(WORK)/08-eval.json: $(WORK)/07-rm/metrics.json $(EVALS)
	$(CURATE) eval --model $(<D) $(WORK)/eval-vl-rewardbench $(WORK)/eval-rewardbench --out $@ $(Q)

$(WORK)/report.html: $(WORK)/08-eval.json
	$(CURATE) report $(WORK) --out $@

clean:
	rm -rf $(WORK)
