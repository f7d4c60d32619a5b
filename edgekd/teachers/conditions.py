"""What a teacher is conditioned on, and how edgekd draws conditions for the samples it records and scores.

Sample ``i`` of any recording, preview, FID or profile run gets condition ``i mod K`` (class ``i mod K``, or prompt
``i mod P`` of the recipe's prompt list): class-balanced for every count that is a multiple of K, and regenerable
in any batch, shard or process, like the noise (edgekd.noise). Stored as int64 ids (a class id or a prompt index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class ClassCondition:
    """Class labels 0..num_classes-1 (``null``: the label id the network was trained to read as "no class", the
    unconditional branch of classifier-free guidance; None when it has none)."""

    num_classes: int
    names: dict[int, str] = field(default_factory=dict)
    null: int | None = None
    kind: str = "class"
    input_name: str = "class_labels"

    def draw(self, start: int, count: int) -> torch.Tensor:
        return torch.arange(start, start + count, dtype=torch.int64) % self.num_classes

    def name(self, i: int) -> str:
        return self.names.get(i, str(i)).split(",")[0].strip()

    def parse(self, value: str | int) -> int:
        """A class id or name (case-insensitive; DiT's id2label lists synonyms separated by commas)."""
        text = str(value).strip()
        if text.lstrip("-").isdigit():
            i = int(text)
            if not 0 <= i < self.num_classes:
                raise EdgekdError(f"class {i} is out of range: this teacher has classes 0..{self.num_classes - 1}")
            return i
        wanted = text.lower()
        for i, names in sorted(self.names.items()):
            if wanted in (n.strip().lower() for n in names.split(",")):
                return i
        known = ", ".join(self.name(i) for i in sorted(self.names)[:12]) or "none (the teacher has no id2label)"
        raise EdgekdError(f"unknown class name '{text}': use a class id 0..{self.num_classes - 1} or one of: {known}")

    def describe(self) -> dict:
        return {"kind": "class", "num_classes": self.num_classes, "null": self.null,
                "names": {str(k): v for k, v in sorted(self.names.items())}}


@dataclass(frozen=True)
class TextCondition:
    """Text prompts through the teacher's CLIP text encoder; recordings use ``prompts`` (the recipe's list)."""

    prompts: tuple[str, ...]
    max_length: int
    hidden_shape: tuple[int, int]  # (tokens, width) of encoder_hidden_states
    kind: str = "text"
    input_name: str = "encoder_hidden_states"

    def draw(self, start: int, count: int) -> torch.Tensor:
        return torch.arange(start, start + count, dtype=torch.int64) % len(self.prompts)

    def name(self, i: int) -> str:
        return self.prompts[i]

    def describe(self) -> dict:
        return {"kind": "text", "prompts": list(self.prompts), "max_length": self.max_length,
                "hidden_shape": list(self.hidden_shape)}


Condition = ClassCondition | TextCondition


DEFAULT_PROMPTS = ("a photo of a cat", "a red car on a street", "a bowl of fruit", "a house by a lake",
                   "a portrait of a woman", "a mountain at sunset", "a dog in the snow", "a city at night")
