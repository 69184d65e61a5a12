"""MambaCSR for deployment: the official-compatible model, its SelectiveScan op, checkpoints."""
from .checkpoint import PRESETS, infer_config, load_model, load_state_dict, resolve_config, save_checkpoint
from .model import MambaCSR

__all__ = ["MambaCSR", "PRESETS", "load_model", "load_state_dict", "save_checkpoint", "infer_config",
           "resolve_config"]
__version__ = "0.1.0"
