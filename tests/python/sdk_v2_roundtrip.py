"""Drive the real Langfuse Python SDK 2.x against a Sightline server, then read back with the SDK.

Run by tests/sdk_python_v2.rs inside a venv with tests/python/requirements-langfuse2.txt.
Environment: LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, SIGHTLINE_TRACE_ID,
SIGHTLINE_SESSION_ID. Prints one JSON document on the last stdout line: values read through the
SDK's own pydantic models (so they prove the models parsed the server's JSON), plus the ids the
SDK generated. Exits non-zero (with a traceback) on any error, including a parse error.
"""

import datetime as dt
import json
import os
import sys
import time

from langfuse import Langfuse

EXPECTED_OBSERVATIONS = 6
EXPECTED_SCORES = 3
READ_BACK_TIMEOUT_S = 10.0


def iso(value):
    return value.isoformat() if isinstance(value, dt.datetime) else value


def observation_summary(obs):
    usage = obs.usage
    return {
        "class": type(obs).__name__,
        "id": obs.id,
        "trace_id": obs.trace_id,
        "type": obs.type,
        "name": obs.name,
        "parent_observation_id": obs.parent_observation_id,
        "start_time": iso(obs.start_time),
        "end_time": iso(obs.end_time),
        "completion_start_time": iso(obs.completion_start_time),
        "model": obs.model,
        "model_parameters": obs.model_parameters,
        "input": obs.input,
        "output": obs.output,
        "metadata": obs.metadata,
        "level": obs.level,
        "status_message": obs.status_message,
        "version": obs.version,
        "environment": obs.environment,
        "usage": None
        if usage is None
        else {
            "input": usage.input,
            "output": usage.output,
            "total": usage.total,
            "unit": usage.unit,
        },
        "usage_details": obs.usage_details,
        "calculated_total_cost": getattr(obs, "calculated_total_cost", None),
    }


def score_summary(score):
    return {
        "class": type(score).__name__,
        "id": score.id,
        "trace_id": score.trace_id,
        "observation_id": score.observation_id,
        "name": score.name,
        "data_type": score.data_type,
        "value": score.value,
        "string_value": getattr(score, "string_value", None),
        "comment": score.comment,
        "source": score.source,
    }


def trace_summary(trace):
    return {
        "class": type(trace).__name__,
        "id": trace.id,
        "name": trace.name,
        "user_id": trace.user_id,
        "session_id": trace.session_id,
        "release": trace.release,
        "version": trace.version,
        "environment": trace.environment,
        "tags": trace.tags,
        "metadata": trace.metadata,
        "input": trace.input,
        "output": trace.output,
        "public": trace.public,
        "timestamp": iso(trace.timestamp),
    }


def main():
    trace_id = os.environ["SIGHTLINE_TRACE_ID"]
    session_id = os.environ["SIGHTLINE_SESSION_ID"]
    langfuse = Langfuse(
        release="sdk-release-1",
        environment="sdk-test",
        flush_at=100,
        flush_interval=0.2,
        max_retries=1,
        timeout=20,
    )
    auth_ok = langfuse.auth_check()

    trace = langfuse.trace(
        id=trace_id,
        name="sdk-v2-roundtrip",
        user_id="sdk-user-1",
        session_id=session_id,
        version="trace-v1",
        tags=["sdk", "v2"],
        metadata={"tenant": "acme"},
        input={"question": "what is sightline?"},
    )
    root = trace.span(name="handle-request", input={"q": 1}, metadata={"component": "api"})
    child = root.span(name="retrieve-context")
    child.end(output={"documents": 3})

    generation = root.generation(
        name="chat-completion",
        model="gpt-4o",
        model_parameters={"temperature": 0.2, "max_tokens": 256, "stream": True},
        input=[{"role": "user", "content": "hello"}],
        metadata={"provider": "openai"},
    )
    time.sleep(0.05)
    generation.update(completion_start_time=dt.datetime.now(dt.timezone.utc))
    time.sleep(0.05)
    generation.end(
        output={"role": "assistant", "content": "hi there"},
        usage={"input": 120, "output": 40, "unit": "TOKENS"},
    )

    summarize = trace.generation(
        name="summarize",
        model="gpt-4o-mini",
        usage_details={"input": 50, "output": 10, "cache_read_input_tokens": 5},
    )
    summarize.end()

    root.event(name="cache-miss", level="WARNING", metadata={"cache": "redis"})
    failing = root.span(
        name="post-process", level="ERROR", status_message="validation failed: empty list"
    )
    failing.end()
    root.end(output={"answer": "hi there"})

    trace.update(output={"answer": "hi there"}, metadata={"stage": "done"})
    trace.score(name="helpfulness", value=0.9, comment="concise")
    generation.score(name="accurate", value=1, data_type="BOOLEAN")
    langfuse.score(
        trace_id=trace_id, name="correctness", value="correct", data_type="CATEGORICAL"
    )
    langfuse.flush()

    # Read back through the SDK's own API client and models.
    deadline = time.monotonic() + READ_BACK_TIMEOUT_S
    while True:
        fetched = langfuse.fetch_trace(trace_id).data
        if (
            len(fetched.observations) >= EXPECTED_OBSERVATIONS
            and len(fetched.scores) >= EXPECTED_SCORES
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    listed = langfuse.fetch_observations(trace_id=trace_id, limit=50)
    single = langfuse.fetch_observation(generation.id).data
    session = langfuse.client.sessions.get(session_id)

    result = {
        "auth_check": auth_ok,
        "ids": {
            "root": root.id,
            "child": child.id,
            "generation": generation.id,
            "summarize": summarize.id,
            "failing": failing.id,
        },
        "trace": trace_summary(fetched),
        "trace_html_path": fetched.html_path,
        "trace_latency": fetched.latency,
        "trace_total_cost": fetched.total_cost,
        "trace_observations": [observation_summary(o) for o in fetched.observations],
        "trace_scores": [score_summary(s) for s in fetched.scores],
        "listed_observations": [observation_summary(o) for o in listed.data],
        "listed_meta": {
            "page": listed.meta.page,
            "limit": listed.meta.limit,
            "total_items": listed.meta.total_items,
            "total_pages": listed.meta.total_pages,
        },
        "single_observation": observation_summary(single),
        "session": {
            "class": type(session).__name__,
            "id": session.id,
            "project_id": session.project_id,
            "created_at": iso(session.created_at),
            "trace_ids": [t.id for t in session.traces],
            "traces": [trace_summary(t) for t in session.traces],
        },
    }
    langfuse.shutdown()
    sys.stdout.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
