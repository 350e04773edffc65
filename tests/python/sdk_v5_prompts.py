"""Prompt management with the real Langfuse Python SDK 5.x against a Sightline server:
create_prompt (text and chat, in a folder), get_prompt by default label, label and version,
compile(), update_prompt moving `production`, the prompt list through the SDK's API client, a
404 as the SDK's NotFoundError, and a generation linked with `prompt=`.

Environment: LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, SIGHTLINE_RUN_ID.
Prints one JSON document on the last stdout line. Exits non-zero on any error.
"""

import json
import os
import sys
import time

from langfuse import Langfuse
from langfuse.api import NotFoundError

RUN = os.environ["SIGHTLINE_RUN_ID"]
TEXT = f"live/{RUN}/greeter"
CHAT = f"live-{RUN}-assistant"
READ_BACK_TIMEOUT_S = 15.0

lf = Langfuse()


def describe(p):
    return {
        "class": type(p).__name__,
        "name": p.name,
        "version": p.version,
        "labels": list(p.labels),
        "tags": list(p.tags),
        "config": p.config,
        "isFallback": p.is_fallback,
    }


created_v1 = lf.create_prompt(
    name=TEXT,
    prompt="Hello {{name}}, welcome to {{place}}.",
    labels=["production"],
    tags=["live"],
    config={"model": "gpt-4o", "temperature": 0.1},
    commit_message="first",
)
created_v2 = lf.create_prompt(name=TEXT, prompt="Hi {{name}}!", labels=["staging"])

# Caching off so every call reaches the server and sees label moves at once.
default = lf.get_prompt(TEXT, cache_ttl_seconds=0)
staging = lf.get_prompt(TEXT, label="staging", cache_ttl_seconds=0)
by_version = lf.get_prompt(TEXT, version=1, cache_ttl_seconds=0)
latest = lf.get_prompt(TEXT, label="latest", cache_ttl_seconds=0)
compiled = default.compile(name="Ada", place="Sightline")

updated = lf.update_prompt(name=TEXT, version=2, new_labels=["production"])
after_move = lf.get_prompt(TEXT, cache_ttl_seconds=0)
v1_after_move = lf.get_prompt(TEXT, version=1, cache_ttl_seconds=0)

chat_created = lf.create_prompt(
    name=CHAT,
    type="chat",
    prompt=[
        {"role": "system", "content": "You are {{persona}}."},
        {"type": "placeholder", "name": "history"},
        {"role": "user", "content": "{{question}}"},
    ],
    labels=["production"],
    config={"model": "gpt-4o-mini"},
)
chat = lf.get_prompt(CHAT, type="chat", cache_ttl_seconds=0)
chat_compiled = chat.compile(
    persona="a ship's navigator",
    question="Where are we?",
    history=[{"role": "user", "content": "Earlier question"}],
)

listed = lf.api.prompts.list(name=TEXT)
try:
    lf.api.prompts.get("no-such-prompt")
    missing = "found"
except NotFoundError as e:
    missing = "NotFoundError: " + json.dumps(e.body)

with lf.start_as_current_observation(
    as_type="generation",
    name="prompted-generation",
    model="gpt-4o",
    prompt=after_move,
    input=[{"role": "user", "content": after_move.compile(name="Ada")}],
) as gen:
    gen.update(output="Hello!", usage_details={"input": 5, "output": 2})
    generation_id = gen.id
    trace_id = gen.trace_id
lf.flush()

deadline = time.time() + READ_BACK_TIMEOUT_S
while True:
    obs = lf.api.observations.get_many(trace_id=trace_id, limit=10).data
    if obs or time.time() > deadline:
        break
    time.sleep(0.2)

print(
    json.dumps(
        {
            "createdV1": describe(created_v1),
            "createdV2": describe(created_v2),
            "default": describe(default),
            "staging": describe(staging),
            "byVersion": describe(by_version),
            "latest": describe(latest),
            "compiled": compiled,
            "updated": {"version": updated.version, "labels": list(updated.labels)},
            "afterMove": describe(after_move),
            "v1AfterMove": describe(v1_after_move),
            "chatCreated": describe(chat_created),
            "chat": describe(chat),
            "chatCompiled": chat_compiled,
            "listed": [
                {"name": m.name, "type": m.type, "versions": m.versions, "labels": sorted(m.labels)}
                for m in listed.data
            ],
            "listedTotal": listed.meta.total_items,
            "missing": missing,
            "generationId": generation_id,
            "traceId": trace_id,
            "observations": [
                {
                    "id": o.id,
                    "promptId": o.prompt_id,
                    "promptName": o.prompt_name,
                    "promptVersion": o.prompt_version,
                }
                for o in obs
            ],
        }
    )
)
sys.stdout.flush()
lf.shutdown()
