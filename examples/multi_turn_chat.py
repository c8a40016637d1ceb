"""Multi-turn chat: each turn's prompt is the whole conversation, served from the radix cache."""

from common import run_example

import radixgen as sgl


@sgl.function
def chat(s, questions, max_tokens=48):
    s += sgl.system("You are a helpful assistant. Answer in one sentence.")
    for i, question in enumerate(questions):
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen(f"answer_{i}", max_tokens=max_tokens))


def main(max_tokens: int = 48):
    questions = ["What is the capital of France?", "And what river flows through it?"]
    state = chat.run(questions=questions, max_tokens=max_tokens, temperature=0)
    for message in state.messages():
        print(f"{message['role']:>9}: {message['content']}")
    print("cached tokens of the last turn:", state.get_meta_info("answer_1")["cached_tokens"])
    return state


if __name__ == "__main__":
    run_example(main)
