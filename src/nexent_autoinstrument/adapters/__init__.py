"""Adapters: turn an SDK object, SSE event or JSON body into neutral facts for the call tracker.

Adapters know nothing about OpenTelemetry; the tracker knows nothing about providers.
"""
