"""`pagoda gateway`: one OpenAI-compatible front door for every InferenceService.

It routes each request by its `model` to a Ready pod of the InferenceService serving it, with a
per-InferenceService policy (round-robin, least-load, prefix affinity), and holds requests for a
model scaled to zero while it asks for a replica. No torch here: the gateway's image is small.
"""
