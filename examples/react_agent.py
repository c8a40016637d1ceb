"""A ReAct-style agent: the model thinks, picks a tool with `select`, Python runs the tool, and
the observation goes back into the prompt until the model picks "finish"."""

import ast
import operator

from common import run_example

import radixgen as sgl

CITIES = {"paris": "Paris has 2.1 million inhabitants.", "rome": "Rome has 2.8 million."}
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def calculator(expression: str) -> str:
    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError("only + - * on numbers")

    try:
        return str(value(ast.parse(expression.strip(), mode="eval").body))
    except (SyntaxError, ValueError):
        return "error: not an arithmetic expression"


def run_tool(name: str, argument: str) -> str:
    if name == "calculator":
        return calculator(argument)
    return CITIES.get(argument.strip().lower(), "no information")


@sgl.function
def react(s, question, max_steps=3, max_tokens=24):
    s += "Answer the question. Tools: calculator (arithmetic), lookup (facts about a city).\n"
    s += "Example:\nQuestion: What is 2 plus 3?\nThought: I should add the numbers.\n"
    s += "Action: calculator\nAction Input: 2 + 3\nObservation: 5\nAction: finish\n"
    s += "Answer: 5\n\nQuestion: " + question + "\n"
    for _ in range(max_steps):
        s += "Thought:" + sgl.gen("thought", max_tokens=max_tokens, stop="\n") + "\n"
        s += "Action: " + sgl.select("action", ["calculator", "lookup", "finish"]) + "\n"
        if s["action"] == "finish":
            break
        s += "Action Input:" + sgl.gen("input", max_tokens=max_tokens, stop="\n") + "\n"
        s += "Observation: " + run_tool(s["action"], s["input"]) + "\n"
    s += "Answer:" + sgl.gen("answer", max_tokens=max_tokens, stop="\n")


def main(max_tokens: int = 24):
    state = react.run(question="What is 7 times 6?", max_tokens=max_tokens, temperature=0)
    print(state.text())
    return state


if __name__ == "__main__":
    run_example(main)
