"""QwenPhysics dataset builders: arXiv dumps -> Qwen chat-template JSONL training contexts."""
