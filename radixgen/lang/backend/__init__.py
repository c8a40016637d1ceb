"""Language backends: where a program's generations run (engine, HTTP endpoint, OpenAI)."""
