"""A two-level agent swarm instrumented with the OpenTelemetry SDK, exported to Custody.

The planner and the researcher's subtree go out through the OTLP/HTTP (protobuf)
exporter, the writer's subtree through the OTLP/gRPC exporter: one trace, two
protocols, and as the SDK does it, every child exported before its parent.

Reads CUSTODY_HTTP (base URL), CUSTODY_GRPC (host:port) and CUSTODY_KEY.
"""

import json
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

KEY = os.environ["CUSTODY_KEY"]
resource = Resource.create({"service.name": "support-swarm", "custody.workspace": "acme"})

http_provider = TracerProvider(resource=resource)
http_provider.add_span_processor(
    BatchSpanProcessor(
        HttpExporter(endpoint=os.environ["CUSTODY_HTTP"] + "/v1/traces", headers={"authorization": f"Bearer {KEY}"})
    )
)
grpc_provider = TracerProvider(resource=resource)
grpc_provider.add_span_processor(
    BatchSpanProcessor(
        GrpcExporter(endpoint=os.environ["CUSTODY_GRPC"], insecure=True, headers=(("authorization", f"Bearer {KEY}"),))
    )
)
http = http_provider.get_tracer("swarm.http", "1.0")
grpc = grpc_provider.get_tracer("swarm.grpc", "1.0")


def agent(tracer, name, **extra):
    attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, **extra}
    return tracer.start_as_current_span(f"invoke_agent {name}", kind=trace.SpanKind.INTERNAL, attributes=attributes)


def chat(tracer, provider, model, prompt, answer, input_tokens, output_tokens, **extra):
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model + "-2024-08-06",
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}]),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]
        ),
        **extra,
    }
    with tracer.start_as_current_span(f"chat {model}", kind=trace.SpanKind.CLIENT, attributes=attributes):
        pass


with agent(http, "planner", **{"gen_ai.conversation.id": "conv-py"}):
    chat(http, "openai", "gpt-4o", "Plan the reply to ticket 1182", "Research, then write", 120, 30)
    with agent(http, "researcher"):
        chat(http, "anthropic", "claude-sonnet", "Find the order history", "Order 1182 arrived damaged", 300, 60)
        with http.start_as_current_span(
            "execute_tool crm_lookup",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "crm_lookup",
                "gen_ai.tool.call.id": "call_7",
                "gen_ai.tool.call.arguments": json.dumps({"customer": 42}),
            },
        ):
            pass
    with agent(grpc, "writer"):
        chat(grpc, "openai", "gpt-4o-mini", "Draft the reply", "Dear customer, ...", 200, 80)
        with agent(grpc, "editor"):
            chat(grpc, "openai", "gpt-4o-mini", "Polish the draft", "Dear customer, we are sorry", 90, 40)

grpc_provider.shutdown()
http_provider.shutdown()
print("exported")
