"""A merged fine-tune as one GGUF file for llama.cpp (and Ollama), written with the `gguf` package.

When the base model is itself a GGUF (the embedded SmolLM2, or a task whose `model:` is a .gguf),
the new file takes the base's metadata as it is (tokenizer, merges, special tokens, chat template,
rope settings), sets the architecture's sizes from the model config, and writes the merged weights
under llama.cpp's tensor names. Other bases have no GGUF tokenizer to copy: llama.cpp's own
converter (`convert_hf_to_gguf.py`) does that job, run on the merged folder when it is found.

One trap: for llama-family models llama.cpp stores the rows of each q and k head interleaved for its
rotary embedding (`permute` in convert_hf_to_gguf.py) and transformers un-permutes them on load, so
the writer permutes them again. A file that skips this loads without error and answers nonsense.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError

GGUF_TYPES = ("f16", "f32", "q8_0")
"""Weight types the writer offers: f16 is llama.cpp's usual conversion output (quantise further with
`llama-quantize`), f32 keeps the merged fp32 weights exactly, q8_0 is 8-bit blocks."""

ARCHITECTURES = {"llama": True, "mistral": True, "qwen2": False}
"""model_type -> whether q/k rows are permuted (llama.cpp's LlamaModel does it, Qwen2Model does not)."""

INSTALL_CONVERTER = (
    "git clone https://github.com/ggml-org/llama.cpp && pip install -r llama.cpp/requirements/"
    "requirements-convert_hf_to_gguf.txt, then set LLAMA_CPP_DIR to the clone (or put convert_hf_to_gguf.py on PATH)"
)

# Set from the model config, never copied from the template (the merged model may be another size).
_SIZE_KEYS = (
    "context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "rope.dimension_count", "rope.freq_base", "attention.layer_norm_rms_epsilon",
    "vocab_size",
)


def permute_qk(weight: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """llama.cpp's row order for a q (n_head) or k (n_head_kv) projection, (out, in) numpy array.

    The inverse of transformers' `LlamaTensorProcessor._reverse_permute_weights`.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _sizes(config: Any) -> dict[str, Any]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if rope.get("rope_type", "default") not in ("default", None):
        raise TunewiseError(
            f"rope scaling {rope.get('rope_type')!r} is not written by tunewise's GGUF writer; use llama.cpp's converter ({INSTALL_CONVERTER})"
        )
    sizes = {
        "context_length": config.max_position_embeddings,
        "embedding_length": config.hidden_size,
        "block_count": config.num_hidden_layers,
        "feed_forward_length": config.intermediate_size,
        "attention.head_count": heads,
        "attention.head_count_kv": getattr(config, "num_key_value_heads", None) or heads,
        "rope.dimension_count": head_dim,
        "attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        "vocab_size": config.vocab_size,
    }
    if theta is not None:
        sizes["rope.freq_base"] = float(theta)
    return sizes


def write_gguf(model: Any, template: Path, out: Path, outtype: str = "f16", name: str | None = None) -> Path:
    """Write `model` (a transformers causal LM, e.g. a merged fine-tune) to the GGUF file `out`,
    with the tokenizer and other metadata of the GGUF file `template` (its base model).

    The file is written beside `out` and renamed into place.
    """
    import gguf
    import numpy as np

    if outtype not in GGUF_TYPES:
        raise TunewiseError(f"GGUF type {outtype!r} is not one of {', '.join(GGUF_TYPES)}")
    config = model.config
    arch = config.model_type
    if arch not in ARCHITECTURES:
        raise TunewiseError(
            f"tunewise writes GGUF for {', '.join(ARCHITECTURES)} models, not {arch!r}; use llama.cpp's converter: {INSTALL_CONVERTER}"
        )
    reader = gguf.GGUFReader(str(template))
    base_arch = reader.fields["general.architecture"].contents()
    gguf_arch = "llama" if arch == "mistral" else arch
    if base_arch != gguf_arch:
        raise TunewiseError(f"base GGUF {template} is a {base_arch!r} model but the model to write is {arch!r}")
    gguf_arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == gguf_arch)

    sizes = _sizes(config)
    skip = {"general.architecture", "general.file_type", "general.quantization_version"}
    skip |= {f"{gguf_arch}.{key}" for key in _SIZE_KEYS}
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(str(partial), gguf_arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        vtype = field.types[0]
        sub_type = field.types[1] if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), vtype, sub_type)
    if name:
        writer.add_key_value("general.name", name, gguf.GGUFValueType.STRING)
    for key, value in sizes.items():
        vtype = gguf.GGUFValueType.FLOAT32 if isinstance(value, float) else gguf.GGUFValueType.UINT32
        writer.add_key_value(f"{gguf_arch}.{key}", value, vtype)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(file_type[outtype])
    if outtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(gguf_arch_enum, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    permute = ARCHITECTURES[arch]
    n_head, n_head_kv = sizes["attention.head_count"], sizes["attention.head_count_kv"]
    unmapped = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        stem, _, suffix = hf_name.rpartition(".")
        gguf_name = names.get_name(stem)
        if gguf_name is None:
            unmapped.append(hf_name)
            continue
        data = tensor.detach().to("cpu").float().numpy()  # (out, in) for matrices
        if permute and gguf_name.endswith(".attn_q"):
            data = permute_qk(data, n_head, n_head)
        elif permute and gguf_name.endswith(".attn_k"):
            data = permute_qk(data, n_head, n_head_kv)
        full_name = f"{gguf_name}.{suffix}"
        if data.ndim == 1 or outtype == "f32":
            writer.add_tensor(full_name, np.ascontiguousarray(data, dtype=np.float32))
        elif outtype == "f16":
            writer.add_tensor(full_name, np.ascontiguousarray(data, dtype=np.float16))
        else:
            quantised = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(full_name, quantised, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    if unmapped:
        writer.close()
        partial.unlink(missing_ok=True)
        raise TunewiseError(f"no GGUF name for tensor(s) {', '.join(unmapped[:5])}; use llama.cpp's converter: {INSTALL_CONVERTER}")
    return _finish(writer, partial, out)


def _finish(writer: Any, partial: Path, out: Path) -> Path:
    """Write the GGUF to its temp name, then rename it into place: a crash leaves no half file."""
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(partial, out)
    return out


def find_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: under $LLAMA_CPP_DIR, else on PATH."""
    root = os.environ.get("LLAMA_CPP_DIR")
    if root and (Path(root) / "convert_hf_to_gguf.py").is_file():
        return Path(root) / "convert_hf_to_gguf.py"
    found = shutil.which("convert_hf_to_gguf.py") or shutil.which("convert-hf-to-gguf")
    return Path(found) if found else None


def convert_with_llama_cpp(model_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """Run llama.cpp's converter on a transformers folder; a clear error naming it when it is absent."""
    converter = find_converter()
    if converter is None:
        raise TunewiseError(
            f"a GGUF of a model whose base is not a GGUF needs llama.cpp's converter, which was not found: {INSTALL_CONVERTER}. "
            "Or write the merged folder with `tunewise export RUN --merge` and convert it where llama.cpp is installed"
        )
    cmd = [sys.executable, str(converter)] if converter.suffix == ".py" else [str(converter)]
    cmd += [str(model_dir), "--outfile", str(out), "--outtype", outtype]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise TunewiseError(f"{converter} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return out


def write_lora_gguf(adapter: Path, template: Path, out: Path) -> Path:
    """The PEFT LoRA adapter in `adapter` as a llama.cpp LoRA GGUF (`llama-server -m BASE.gguf --lora
    out`), for the GGUF base `template` it was trained on.

    Tensors `blk.N.<name>.weight.lora_a` (r, in) and `.lora_b` (out, r), f32, and `adapter.lora.alpha`:
    llama.cpp adds alpha / r * B @ A to each weight, PEFT's scaling. For llama-family models the
    rows of q and k are permuted as in the base file; only B has those rows.
    """
    import json
    import re

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    unsupported = [k for k in ("use_dora", "use_rslora") if config.get(k)]
    if config.get("peft_type", "LORA") != "LORA" or unsupported or config.get("modules_to_save"):
        raise TunewiseError(
            f"llama.cpp LoRA GGUF is written for plain LoRA adapters; {adapter} uses "
            f"{', '.join(unsupported) or config.get('peft_type')}{' and modules_to_save' if config.get('modules_to_save') else ''}: "
            "export the merged model instead"
        )
    reader = gguf.GGUFReader(str(template))
    arch = reader.fields["general.architecture"].contents()
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    n_head = int(reader.fields[f"{arch}.attention.head_count"].contents())
    n_head_kv = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    names = gguf.get_tensor_name_map(arch_enum, int(reader.fields[f"{arch}.block_count"].contents()))
    permute = arch == "llama"

    pairs: dict[str, dict[str, Any]] = {}
    for key, value in load_file(str(Path(adapter) / "adapter_model.safetensors")).items():
        match = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.[\w-]+)?\.weight", key)
        gguf_name = names.get_name(match.group(1)) if match else None
        if gguf_name is None:
            raise TunewiseError(f"no llama.cpp name for adapter tensor {key}; export the merged model instead")
        pairs.setdefault(gguf_name, {})[match.group(2)] = value.astype(np.float32)

    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    writer = gguf.GGUFWriter(str(partial), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for gguf_name, ab in sorted(pairs.items()):
        a, b = ab["A"], ab["B"]  # (r, in), (out, r)
        if permute and gguf_name.endswith(".attn_q"):
            b = permute_qk(b, n_head, n_head)
        elif permute and gguf_name.endswith(".attn_k"):
            b = permute_qk(b, n_head, n_head_kv)
        writer.add_tensor(f"{gguf_name}.weight.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{gguf_name}.weight.lora_b", np.ascontiguousarray(b))
    return _finish(writer, partial, out)
