"""Checkpoints: official .pth files and our .safetensors, configs from YAML, presets or weights.

Untrusted files are read without executing code: .pth through `torch.load(weights_only=True)`,
.safetensors through safetensors. A config comes from (in order) the caller (dict, official
option YAML, or preset name), the .safetensors metadata, or is inferred from the weights.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import torch

from .atomic import atomic_write
from .model import MambaCSR

_OFFICIAL_X4 = dict(img_size=64, in_chans=3, upscale=4, embed_dim=180, d_state=16, scan_size=8,
                    depths=[6, 6, 6, 6, 6, 6], mlp_ratio=2, img_range=1.0, upsampler="pixelshuffle",
                    resi_connection="1conv", dual_interleaved_scan=True)

PRESETS: dict[str, dict[str, Any]] = {
    # options/test/test_MambaCSR_Q10_Final.yml: dual-interleaved + position-aligned cross-scale
    "final-x4": dict(_OFFICIAL_X4, depths2=[6], cross_scale_scan=True),
    # options/test/test_MambaCSR_Q10_wo.yml: dual-interleaved only
    "wo-x4": dict(_OFFICIAL_X4, depths2=[6], cross_scale_scan=False),
}

CONFIG_METADATA_KEY = "mambacsr_config"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file, the problem and the fix."""


def _read_yaml_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CheckpointError(f"cannot read config {path}: {e}") from None
    if isinstance(data, dict) and "network_g" in data:
        data = data["network_g"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} has no `network_g` block: pass an official option file")
    return {k: v for k, v in data.items() if k != "type"}


def resolve_config(config: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A config dict from a dict, a preset name or an official option YAML path (None stays None)."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return {k: v for k, v in config.items() if k != "type"}
    name = str(config)
    if name in PRESETS:
        return dict(PRESETS[name])
    path = Path(name)
    if path.suffix.lower() in (".yml", ".yaml") or path.exists():
        return _read_yaml_config(path)
    raise CheckpointError(f"unknown config {name!r}: give an official option .yml or one of {sorted(PRESETS)}")


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read weights (and a stored config, if any) without executing code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {path}: {e}. Is the file complete? Re-download or re-export it") from None
        config = json.loads(meta[CONFIG_METADATA_KEY]) if CONFIG_METADATA_KEY in meta else None
        return state, config
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # zip (torch.save) or pickle
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a torch.save archive nor a "
                              f"pickle): pass an official .pth or a .safetensors file")
    try:
        with warnings.catch_warnings():  # a corrupt file's stray protocol byte is not news: the error says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL ([\w.]+)", str(e))
        if code:  # the weights-only unpickler met a reference to a function or class
            raise CheckpointError(
                f"refusing {path}: it holds a pickled reference to {code.group(1)}, which would execute "
                f"code when loaded. Only plain tensors are accepted: if you trust its source, re-save it "
                f"once as `torch.save({{'params_ema': state_dict}}, 'clean.pth')` or as .safetensors") from None
        raise CheckpointError(f"cannot read {path}: corrupt, or a pickle that plain-tensor loading does not "
                              f"understand. Re-download it, or re-save it as .safetensors") from None
    except Exception as e:  # truncated zip, not a torch file, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"cannot read {path} ({type(e).__name__}: {first}). Is the file complete? "
                              f"Re-download it") from None
    config = None
    if isinstance(obj, Mapping):
        config = obj.get("network_g") if isinstance(obj.get("network_g"), Mapping) else None
        for key in ("params_ema", "params", "state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a MambaCSR state dict (expected 'params_ema', 'params' or a "
                              f"dict of tensors)")
    state = {re.sub(r"^module\.", "", k): v for k, v in obj.items()}
    return state, (dict(config) if config else None)


def infer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Rebuild `network_g` from a state dict's names and shapes (scan_size, img_range: official defaults)."""
    if "conv_first.weight" not in state:
        raise CheckpointError("cannot infer the config: no `conv_first.weight`; this is not a MambaCSR state dict "
                              "(pass --config/--preset if it is one under other names)")
    embed_dim, in_chans = state["conv_first.weight"].shape[:2]

    def depths_of(prefix: str) -> list[int]:
        counts = Counter(int(m.group(1)) for k in state
                         if (m := re.match(rf"{prefix}\.(\d+)\.residual_group\.blocks\.(\d+)\.ln_1\.weight$", k)))
        return [counts[i] for i in range(len(counts))]

    depths, depths2 = depths_of("layers"), depths_of("layers2")
    blk = "layers.0.residual_group.blocks.0"
    k_dirs = state[f"{blk}.self_attention.x_proj_weight"].shape[0]
    upscale = 1
    for key, w in sorted(state.items()):
        if re.match(r"upsample\.\d+\.weight$", key):
            upscale *= {4: 2, 9: 3}.get(w.shape[0] // w.shape[1], 1)
    return dict(
        in_chans=int(in_chans), upscale=upscale, embed_dim=int(embed_dim),
        d_state=int(state[f"{blk}.self_attention.A_logs"].shape[1]), scan_size=8, depths=depths,
        depths2=depths2 or [6], mlp_ratio=_ratio(state[f"{blk}.mlp.fc1.weight"].shape[0], embed_dim), img_range=1.0,
        upsampler="pixelshuffle" if "conv_last.weight" in state else "",
        resi_connection="3conv" if "conv_after_body.0.weight" in state else "1conv",
        dual_interleaved_scan=k_dirs == 2 or bool(depths2), cross_scale_scan=bool(depths2),
        patch_norm="patch_embed.norm.weight" in state)


def _ratio(hidden: int, dim: int) -> int | float:
    return hidden // dim if hidden % dim == 0 else hidden / dim


def _describe_mismatch(missing: list[str], unexpected: list[str]) -> str:
    def few(keys):
        return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys: {few(unexpected)}")
    return "; ".join(parts)


def load_model(path: str | os.PathLike, config=None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> MambaCSR:
    """Build MambaCSR for a checkpoint and load it strictly; returns the model in eval mode."""
    state, stored = load_state_dict(path)
    cfg = resolve_config(config) or stored or infer_config(state)
    model = MambaCSR(**cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the config ({_describe_mismatch(missing, unexpected)}). "
                              f"Pass the checkpoint's own --config/--preset, or none to infer it")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path} has shapes that do not match the config: {'; '.join(wrong[:4])}. "
                              f"Pass the checkpoint's own --config/--preset, or none to infer it")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def save_checkpoint(model: MambaCSR, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write weights with their config: .safetensors (config in metadata) or official-style .pth
    ({'params_ema': ..., 'network_g': ...}). Atomic: a failed save leaves no file."""
    path = Path(path)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(state, str(tmp), metadata={CONFIG_METADATA_KEY: json.dumps(model.config)})
        else:
            torch.save({"params_ema": state, "network_g": model.config}, tmp)
    return path
