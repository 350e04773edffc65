"""Drive the plain OpenTelemetry Python SDK (no Langfuse code) against a Sightline server with
only `OTEL_EXPORTER_OTLP_ENDPOINT` and a Basic auth header set, as any OTel-instrumented app would.

Environment: OTEL_EXPORTER_OTLP_ENDPOINT (base URL; the exporter appends /v1/traces),
OTEL_EXPORTER_OTLP_HEADERS, SIGHTLINE_RUN_ID, optional OTEL_EXPORTER_OTLP_COMPRESSION=gzip.
"""

import json
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

run = os.environ["SIGHTLINE_RUN_ID"]
provider = TracerProvider(
    resource=Resource.create(
        {"service.name": "otel-live", "service.version": "9.9.9", "deployment.environment.name": "staging"}
    )
)
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("otel-live-app")

with tracer.start_as_current_span("otel-agent-run") as root:
    root.set_attribute("user.id", f"user-{run}")
    root.set_attribute("session.id", f"session-{run}")
    root.set_attribute("langfuse.trace.tags", ["otel", "live"])
    root.set_attribute("input.value", "Plan a trip to see sea snakes")
    with tracer.start_as_current_span("chat gpt-4o") as chat:
        chat.set_attribute("gen_ai.operation.name", "chat")
        chat.set_attribute("gen_ai.request.model", "gpt-4o")
        chat.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
        chat.set_attribute("gen_ai.request.temperature", 0.3)
        chat.set_attribute("gen_ai.usage.input_tokens", 1000)
        chat.set_attribute("gen_ai.usage.output_tokens", 500)
        chat.set_attribute(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": "sea snakes?"}]}]),
        )
        chat.set_attribute(
            "gen_ai.output.messages",
            json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Indo-Pacific."}]}]),
        )
    with tracer.start_as_current_span("chat gpt-4o-mini") as legacy:
        legacy.set_attribute("gen_ai.system", "openai")
        legacy.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        legacy.set_attribute("gen_ai.prompt.0.role", "user")
        legacy.set_attribute("gen_ai.prompt.0.content", "Summarise")
        legacy.set_attribute("gen_ai.completion.0.role", "assistant")
        legacy.set_attribute("gen_ai.completion.0.content", "Short summary")
        legacy.set_attribute("gen_ai.usage.prompt_tokens", 50)
        legacy.set_attribute("gen_ai.usage.completion_tokens", 10)
    with tracer.start_as_current_span("execute_tool get_weather") as tool:
        tool.set_attribute("gen_ai.operation.name", "execute_tool")
        tool.set_attribute("gen_ai.tool.name", "get_weather")
    with tracer.start_as_current_span("validate-answer") as bad:
        bad.set_status(Status(StatusCode.ERROR, "answer failed validation"))
    root.set_attribute("output.value", "Go to Indonesia")

provider.shutdown()
print("done")
