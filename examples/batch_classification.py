"""Batch classification with `select`: `run_batch` caches the shared instructions once, then
scores each label from prompt logprobs."""

from common import run_example

import radixgen as sgl

REVIEWS = [
    "The food was delicious and the staff were lovely.",
    "Cold soup, rude waiter, never again.",
    "Best pizza I have had in years!",
    "The room was dirty and smelled bad.",
]


@sgl.function
def classify(s, review):
    s += "Classify the sentiment of each restaurant review as positive or negative.\n\n"
    s += "Review: I loved every bite.\nSentiment: positive\n\n"
    s += "Review: The service was slow and the food was bland.\nSentiment: negative\n\n"
    s += "Review: " + review + "\nSentiment: " + sgl.select("label", ["positive", "negative"])


def main():
    states = classify.run_batch([{"review": r} for r in REVIEWS], progress_bar=True)
    for review, state in zip(REVIEWS, states, strict=True):
        print(f"{state['label']:>8}: {review}")
    return states


if __name__ == "__main__":
    run_example(main)
