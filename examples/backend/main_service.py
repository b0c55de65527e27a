"""Example backend: a FastAPI service that streams chat completions from an OpenAI-compatible LLM.

Run it under the agent with no code change:

    ENABLE_TELEMETRY=true OPENAI_BASE_URL=http://127.0.0.1:8090/v1 \\
        opentelemetry-instrument python examples/backend/main_service.py

The only monitoring line is ``setup_fastapi_app``, which serves /metrics on the app's port.
``HOST`` is where it listens, one address or several separated by commas (default 127.0.0.1):
the monitoring stack's Prometheus, in a container, reaches a Linux host on the Docker bridge's
address, not on loopback (``./docker/start-monitoring.sh`` prints what to set).
"""

from __future__ import annotations

import os
import socket

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from openai import APIError, AsyncOpenAI
from pydantic import BaseModel

from nexent_autoinstrument import monitoring_manager

app = FastAPI(title="Nexent example backend")
monitoring_manager.setup_fastapi_app(app)

client = AsyncOpenAI(base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8090/v1"),
                     api_key=os.environ.get("OPENAI_API_KEY", "sk-mock-key"), max_retries=0)


class ChatRequest(BaseModel):
    message: str
    model: str = "mock-gpt"
    max_tokens: int | None = None
    # Knobs of the bundled mock LLM, passed through so the demo can provoke slow streams and errors.
    mock: dict[str, float] | None = None


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/chat")
async def chat(request: ChatRequest) -> StreamingResponse:
    try:
        stream = await client.chat.completions.create(
            model=request.model, stream=True, max_tokens=request.max_tokens,
            stream_options={"include_usage": True},  # (the token counts, hence the cost, of a stream)
            messages=[{"role": "user", "content": request.message}],
            extra_body={f"mock_{k}": v for k, v in (request.mock or {}).items()} or None)
    except APIError as exc:
        raise HTTPException(status_code=502, detail=f"LLM error: {type(exc).__name__}") from exc

    async def relay():
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    return StreamingResponse(relay(), media_type="text/plain")


def serve() -> None:
    """Listen on every address in ``HOST``, on ``PORT``."""
    port = int(os.environ.get("PORT", "8000"))
    hosts = [host.strip() for host in os.environ.get("HOST", "127.0.0.1").split(",") if host.strip()]
    sockets = [socket.create_server((host, port)) for host in hosts]
    config = uvicorn.Config(app, port=port, log_level=os.environ.get("LOG_LEVEL", "warning"))
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    serve()
