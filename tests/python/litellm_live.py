"""Drive real LiteLLM (mock responses, no network) with its `langfuse` or `langfuse_otel`
callback against a Sightline server: a completion, a streaming completion and a failing one.

Usage: litellm_live.py langfuse|langfuse_otel. Environment: LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY,
LANGFUSE_SECRET_KEY, SIGHTLINE_RUN_ID. Data is flushed when the process exits.
"""

import os
import sys
import time

import litellm

mode = sys.argv[1]
run = os.environ["SIGHTLINE_RUN_ID"]
if mode == "langfuse":
    litellm.success_callback = ["langfuse"]
    litellm.failure_callback = ["langfuse"]
elif mode == "langfuse_otel":
    litellm.callbacks = ["langfuse_otel"]
else:
    raise SystemExit(f"unknown mode {mode}")

messages = [
    {"role": "system", "content": "You are a concise geography assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def meta(kind):
    return {
        "trace_id": f"{run}-{kind}",
        "trace_name": f"litellm-{kind}",
        "generation_name": f"litellm-{kind}-generation",
        "trace_user_id": f"user-{run}",
        "session_id": f"session-{run}",
        "tags": ["live", "litellm"],
        "trace_metadata": {"tenant": "acme"},
        "version": "gen-v1",
    }


litellm.completion(
    model="gpt-4o",
    messages=messages,
    mock_response="The capital of France is Paris.",
    temperature=0.2,
    max_tokens=64,
    metadata=meta("chat"),
)
stream = litellm.completion(
    model="gpt-4o",
    messages=messages,
    mock_response="Paris is the capital.",
    stream=True,
    metadata=meta("stream"),
)
for _ in stream:
    pass
try:
    litellm.completion(
        model="gpt-4o",
        messages=messages,
        mock_response="litellm.RateLimitError",
        metadata=meta("error"),
    )
except Exception as e:  # the failure is the point
    print(f"expected failure: {type(e).__name__}")

# Callbacks run on background threads; give them a moment before the exit-time flush.
time.sleep(2)
if mode == "langfuse":
    for cb in litellm.logging_callback_manager._get_all_callbacks() if hasattr(litellm, "logging_callback_manager") else []:
        flush = getattr(getattr(cb, "Langfuse", None), "flush", None)
        if flush:
            flush()
print("done")
