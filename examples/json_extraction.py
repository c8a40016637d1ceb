"""JSON extraction with constrained decoding: a JSON schema and a regex force the output shape."""

import json

from common import run_example

import radixgen as sgl

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "city": {"type": "string"}},
    "required": ["name", "city"],
}


@sgl.function
def extract(s, text, max_tokens=48):
    s += sgl.user("Extract the person's name and city as JSON.\nText: " + text)
    s += sgl.assistant(sgl.gen("person", max_tokens=max_tokens, json_schema=SCHEMA))
    s += sgl.user("How old is the person? Answer with a number.")
    s += sgl.assistant(sgl.gen("age", max_tokens=4, regex=r"[0-9]{1,2}"))


def main(max_tokens: int = 48):
    text = "Maria Lopez, 34, moved from Madrid to Lisbon last spring."
    state = extract.run(text=text, max_tokens=max_tokens, temperature=0)
    if state.error() is not None:
        raise state.error()
    print(json.loads(state["person"]), "age:", int(state["age"]))
    return state


if __name__ == "__main__":
    run_example(main)
