"""Tree of thought: fork the prompt into several approaches (the prefix is computed once), then
let the model pick the best answer with `select`."""

from common import run_example

import radixgen as sgl


@sgl.function
def tree_of_thought(s, question, width=3, max_tokens=24):
    s += "Question: " + question + "\n"
    forks = s.fork(width)
    forks += lambda i: (
        f"Approach {i + 1}:"
        + sgl.gen("plan", max_tokens=max_tokens, stop="\n", temperature=0.8)
        + "\nAnswer:"
        + sgl.gen("answer", max_tokens=max_tokens, stop="\n", temperature=0)
    )
    forks.join()
    s += "Candidate answers:\n"
    for i, answer in enumerate(s["answer"]):
        s += f"{i + 1}.{answer}\n"
    s += "The most accurate candidate is number "
    s += sgl.select("best", [str(i + 1) for i in range(width)])


def main(max_tokens: int = 24):
    state = tree_of_thought.run(question="What is 12 times 3?", max_tokens=max_tokens)
    for plan, answer in zip(state["plan"], state["answer"], strict=True):
        print(f"plan:{plan}\n  answer:{answer}")
    print("best:", state["best"])
    return state


if __name__ == "__main__":
    run_example(main)
