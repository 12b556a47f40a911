"""Sampling candidate responses from a policy model (`curate generate`).

- `requests`: a dataset's prompts as generation requests (one per distinct normalised
  prompt + images), sampling parameters and per-sample seeds;
- `cache`: finished samples on disk, so a killed run resumes where it stopped;
- `hf`: the `transformers` backend (the model in this process);
- `openai_api`: the `openai` backend (any OpenAI-compatible server over HTTP).
"""
