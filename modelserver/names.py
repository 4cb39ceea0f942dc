"""Generated model names in the old server's style (``boopy-parrot``)."""

from __future__ import annotations

import secrets
from collections.abc import Container

ADJECTIVES = (
    "boopy",
    "conspicuous",
    "lovely",
    "muffled",
    "fuzzy",
    "gloopy",
    "swampy",
    "crusty",
    "bumfuzzled",
    "chunky",
    "dinosaur",
    "doopy",
    "frigid",
    "goodbye",
    "hanky",
    "hello",
    "joyous",
    "loopy",
    "milky",
    "nerdy",
    "peachy",
    "placid",
    "purple",
    "quirky",
    "red",
    "rainbow",
    "salted",
    "scruptious",
    "sticky",
    "strawberry",
    "tart",
    "tricky",
    "wobbly",
    "wonky",
    "zippy",
)
NOUNS = (
    "parrot", "lentil", "carrot", "pancake", "avocado", "bicycle", "buttface", "cherry",
    "cupcake", "earthworm", "egg", "fork", "frito", "hippo", "house", "kitten", "lemur", "lizard",
    "malarkey", "mango", "noodle", "nunchucks", "onion", "peanut", "pear", "platypus", "poo",
    "puppy", "rabbit", "salad", "snack", "spoon", "squidward", "taco", "toaster", "truffle",
    "underoos", "waffle",
)  # fmt: skip


def generate_name(taken: Container[str]) -> str:
    """A fresh ``adjective-noun`` name; a numeric suffix once the simple space gets crowded."""
    for attempt in range(100):
        name = f"{secrets.choice(ADJECTIVES)}-{secrets.choice(NOUNS)}"
        if attempt > 10:
            name += f"-{secrets.randbelow(10_000)}"
        if name not in taken:
            return name
    return f"model-{secrets.token_hex(6)}"
