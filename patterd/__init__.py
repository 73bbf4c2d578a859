"""patterd: a standalone voice-gateway daemon that gives AI agents phone numbers.

Data flow::

    patter.yaml ─► config.load ─► plugins.registry ─► graph ───────────────► calls.switchboard
     (+ .env,      (typed; every   (entry points,      (providers built,      inbound/outbound call → agent
      ${VARS})      error at once)  kind.name → spec)   entered, checked)       │
                                                                               ▼
                carrier leg (providers/twilio …) ◄──► calls.session ◄──► engine session
                speaks protocols/twilio codec          (one per call)     realtime (providers/openai_realtime)
                                                            │             or calls.pipeline: stt → llm → tts
                                                            ▼ call events (observers)
                                             store (files on disk)   metrics (Prometheus)   live feed (SSE)
                                                            ▼
                          web.app (one Starlette app on Hypercorn): carrier routes │ ops API │ dashboard
"""

__version__ = "0.1.0"
