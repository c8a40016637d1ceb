"""Few-shot question answering: a shared prefix of examples and a stop string per answer."""

from common import run_example

import radixgen as sgl

EXAMPLES = [
    ("What color is the sky on a clear day?", "Blue"),
    ("How many legs does a spider have?", "Eight"),
    ("What do bees make?", "Honey"),
]


@sgl.function
def few_shot_qa(s, question, max_tokens=8):
    s += "Answer each question with one word.\n\n"
    for q, a in EXAMPLES:
        s += f"Q: {q}\nA: {a}\n\n"
    s += "Q: " + question + "\nA:" + sgl.gen("answer", max_tokens=max_tokens, stop="\n")


def main(max_tokens: int = 8):
    questions = ["What is frozen water called?", "What animal says moo?"]
    states = few_shot_qa.run_batch(
        [{"question": q, "max_tokens": max_tokens} for q in questions], temperature=0
    )
    for question, state in zip(questions, states, strict=True):
        print(f"{question} -> {state['answer'].strip()}")
    return states


if __name__ == "__main__":
    run_example(main)
