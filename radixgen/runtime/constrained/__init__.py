"""Constrained decoding: regex, JSON schema and grammar outputs, with jump-forward.

GrammarCompiler  sampling params -> compiled grammar (cached by key; caller's thread)
Grammar          one request's position in its grammar: accept, forced tokens, finished
TokenMasker      per-step allowed-token masks for the constrained rows of a batch
"""

from radixgen.runtime.constrained.grammar import Grammar
from radixgen.runtime.constrained.grammar_compiler import GrammarCompiler
from radixgen.runtime.constrained.token_mask import TokenMasker

__all__ = ["Grammar", "GrammarCompiler", "TokenMasker"]
