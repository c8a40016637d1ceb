"""The frontend language: SGLang programs (`@function`, `gen`, `select`, `fork`, ...) on radixgen.

Module map: `ir` (nodes, sampling parameters), `api` (primitives), `function` (`SglFunction`),
`interpreter` (`StreamExecutor`: one worker thread per state), `state` (`ProgramState`, forks,
streaming), `program_runner` (run / run_batch / prefix pre-caching), `backend_choice` (which
backend a program runs on), `speculative` (API speculative execution), `choices` (select
scoring), `chat_template`, `tracer`, `compiler`, and `backend/` (`base`, `native_protocol`,
in-process `engine_backend`, HTTP `runtime_endpoint`, `runtime` launcher, `openai`).
"""
