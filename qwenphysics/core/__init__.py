"""The leaf layer: what every other part of QwenPhysics uses and nothing here imports back.

Paths and caches, errors a user can fix, file staging that never deletes a user's files,
process helpers, hashing, the Qwen2.5 token counter and the llama.cpp toolchain.
"""
