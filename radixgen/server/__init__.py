"""HTTP server: SGLang native API and OpenAI-compatible API over the Engine."""
