"""A captioner from a recipe plugin that writes given texts, for the faithfulness filter tests:
it stands for an LLM that invents details."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from geoweave.protocols import TileDescription
from geoweave.record import Caption
from geoweave.registry import CAPTIONERS


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    texts: list[str]


@CAPTIONERS.add("fixed_captions_test")
class FixedCaptions:
    name = "fixed_captions_test"
    Options = _Options

    def __init__(self, opts: _Options, seed: int = 0) -> None:
        self.texts = opts.texts

    def caption(self, batch: Sequence[TileDescription]) -> list[list[Caption] | Exception]:
        return [
            [Caption(text=t, style="fixed", captioner=self.name, prompt_version="0")
             for t in self.texts]
            for _ in batch
        ]  # fmt: skip
