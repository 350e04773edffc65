"""Read a session's observations and scores back through the Langfuse 5.x SDK's own API client
(`api.observations.get_many`, `api.scores.get_many`), so its models must parse Sightline's JSON.

Usage: read_back_v5.py SESSION_ID MIN_OBSERVATIONS. Environment: LANGFUSE_BASE_URL,
LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY. Prints one JSON document on the last stdout line.
"""

import json
import sys
import time

from langfuse import Langfuse

session_id, minimum = sys.argv[1], int(sys.argv[2])
lf = Langfuse()
deadline = time.time() + 20
while True:
    obs = lf.api.observations.get_many(session_id=session_id, limit=1000).data
    if len(obs) >= minimum or time.time() > deadline:
        break
    time.sleep(0.25)

scores = []
for trace_id in sorted({o.trace_id for o in obs}):
    scores.extend(lf.api.scores.get_many(trace_id=trace_id, limit=100).data)

print(
    json.dumps(
        {
            "observations": [
                {
                    "id": o.id,
                    "traceId": o.trace_id,
                    "name": o.name,
                    "type": o.type,
                    "parentObservationId": o.parent_observation_id,
                    "isRoot": o.is_root_observation,
                    "level": o.level,
                    "statusMessage": o.status_message,
                    "model": o.model,
                    "modelParameters": o.model_parameters,
                    "usageDetails": o.usage_details,
                    "costDetails": o.cost_details,
                    "totalCost": o.total_cost,
                    "completionStartTime": o.completion_start_time.isoformat()
                    if o.completion_start_time
                    else None,
                    "input": o.input,
                    "output": o.output,
                    "userId": o.user_id,
                    "sessionId": o.session_id,
                    "traceName": o.trace_name,
                    "tags": o.tags,
                    "environment": o.environment,
                }
                for o in obs
            ],
            "scores": [
                {"name": s.name, "value": s.value, "dataType": s.data_type, "traceId": s.subject.id if s.subject else None}
                for s in scores
            ],
        },
        default=str,
    )
)
