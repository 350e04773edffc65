"""Drive the real Langfuse Python SDK 5.x (OpenTelemetry based) against a Sightline server, then
read back through the SDK's own API client (`api.observations.get_many`, `api.scores.get_many`),
so its pydantic models must parse Sightline's JSON.

Environment: LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, SIGHTLINE_RUN_ID.
Prints one JSON document on the last stdout line. Exits non-zero on any error.
"""

import datetime as dt
import json
import os
import sys
import time

from langfuse import Langfuse, observe, propagate_attributes

RUN = os.environ["SIGHTLINE_RUN_ID"]
READ_BACK_TIMEOUT_S = 15.0

lf = Langfuse(environment="live-test", release="rel-5")
manual_trace_id = lf.create_trace_id(seed=f"manual-{RUN}")


def manual_trace():
    with propagate_attributes(
        user_id=f"user-{RUN}",
        session_id=f"session-{RUN}",
        tags=["live", "sdk5"],
        trace_name="lf5-live-manual",
        metadata={"tenant": "acme"},
    ):
        with lf.start_as_current_observation(
            as_type="span",
            name="handle-request",
            trace_context={"trace_id": manual_trace_id},
            input={"question": "Where do sea snakes live?"},
        ) as root:
            with lf.start_as_current_observation(
                as_type="generation",
                name="chat-completion",
                model="gpt-4o",
                model_parameters={"temperature": 0.2, "max_tokens": 256},
                input=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Where do sea snakes live?"},
                ],
            ) as gen:
                gen.update(
                    completion_start_time=dt.datetime.now(dt.timezone.utc),
                    output={"role": "assistant", "content": "Warm Indo-Pacific waters."},
                    usage_details={"input": 1000, "output": 500, "cache_read_input_tokens": 20},
                )
                generation_id = gen.id
            with lf.start_as_current_observation(as_type="tool", name="web-search") as tool:
                tool.update(output={"hits": 3})
            with lf.start_as_current_observation(
                as_type="span", name="post-process", level="ERROR", status_message="citation missing"
            ):
                pass
            root.update(output={"answer": "Indo-Pacific"})
    lf.create_score(name="helpfulness", value=0.9, trace_id=manual_trace_id, observation_id=generation_id)
    lf.create_score(name="thumbs", value=1, data_type="BOOLEAN", trace_id=manual_trace_id)
    lf.create_score(name="verdict", value="correct", data_type="CATEGORICAL", trace_id=manual_trace_id)
    return generation_id


@observe(as_type="generation", name="decorated-llm")
def decorated_llm(prompt):
    lf.update_current_generation(model="gpt-4o-mini", usage_details={"input": 12, "output": 7})
    return "42"


@observe()
def decorated_pipeline():
    decorated_llm("What is 6*7?")
    lf.score_current_trace(name="pipeline-score", value=0.5)
    return lf.get_current_trace_id()


generation_id = manual_trace()
decorated_trace_id = decorated_pipeline()
lf.flush()


def poll(fetch, ready):
    deadline = time.time() + READ_BACK_TIMEOUT_S
    while True:
        result = fetch()
        if ready(result) or time.time() > deadline:
            return result
        time.sleep(0.2)


obs = poll(
    lambda: lf.api.observations.get_many(trace_id=manual_trace_id, limit=100),
    lambda r: len(r.data) >= 4,
).data
scores = poll(
    lambda: lf.api.scores.get_many(trace_id=manual_trace_id, limit=100),
    lambda r: len(r.data) >= 3,
).data
decorated = poll(
    lambda: lf.api.observations.get_many(trace_id=decorated_trace_id, limit=100),
    lambda r: len(r.data) >= 2,
).data
decorated_scores = poll(
    lambda: lf.api.scores.get_many(trace_id=decorated_trace_id, limit=100),
    lambda r: len(r.data) >= 1,
).data
roots = lf.api.observations.get_many(trace_id=manual_trace_id, is_root_observation=True, limit=10).data


def summary(o):
    return {
        "class": type(o).__name__,
        "id": o.id,
        "traceId": o.trace_id,
        "name": o.name,
        "type": o.type,
        "parentObservationId": o.parent_observation_id,
        "level": o.level,
        "statusMessage": o.status_message,
        "model": o.model,
        "usageDetails": o.usage_details,
        "costDetails": o.cost_details,
        "completionStartTime": o.completion_start_time.isoformat() if o.completion_start_time else None,
        "environment": o.environment,
        "userId": o.user_id,
        "sessionId": o.session_id,
    }


def score_summary(s):
    return {
        "class": type(s).__name__,
        "name": s.name,
        "value": s.value,
        "dataType": s.data_type,
        "subject": s.subject.kind if s.subject else None,
        "subjectId": s.subject.id if s.subject else None,
    }


print(
    json.dumps(
        {
            "manualTraceId": manual_trace_id,
            "generationId": generation_id,
            "decoratedTraceId": decorated_trace_id,
            "observations": [summary(o) for o in obs],
            "rootIds": [o.id for o in roots],
            "scores": [score_summary(s) for s in scores],
            "decorated": [summary(o) for o in decorated],
            "decoratedScores": [score_summary(s) for s in decorated_scores],
        }
    )
)
sys.stdout.flush()
lf.shutdown()
