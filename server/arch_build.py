"""Building one component of the real architectures with random weights, meta-first.

Every component is built on the meta device (no memory, well under a second even for SDXL)
and only materialised when a real device is asked for, directly in the requested dtype on
that device (`to_empty`, then each layer's own `reset_parameters` under a fixed seed; the
caller's RNG state is left as it was). Peak memory is therefore the final model size, also
on a GPU, and `device="meta"` gives a complete model for parameter counting at no cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from hybridsr.server.arch_configs import COMPONENTS
from hybridsr.server.tiny import tokenizer_without_leftovers

Device = str | torch.device


def _meta_model(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build with every tensor on the meta device: no memory, no init cost.

    `torch.device` as a context manager is thread-local (unlike accelerate's
    `init_empty_weights`, which patches `nn.Module` for every thread), so a server thread that
    builds another model meanwhile is not affected.
    """
    with torch.device("meta"):
        return factory()


def _rng_fork(device: torch.device):
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.random.fork_rng(devices=[index], device_type="cuda")
    return torch.random.fork_rng(devices=[])


def _fill_buffers(model: nn.Module) -> None:
    """Recreate the buffers that construction on meta left without data."""
    for name, buf in model.named_buffers():
        if name.endswith("position_ids"):  # CLIP text embeddings: arange(77)[None]
            buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))
        else:
            raise RuntimeError(f"no rule to recreate buffer {name!r} built on the meta device")


def _materialise(model: nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Allocate a meta-built model on `device` in `dtype` and give it deterministic weights.

    Each layer is initialised by its own `reset_parameters` (PyTorch's default init, so
    activations stay in range as in a freshly constructed model), on the target device.
    """
    # nn.Module.to, not the library overrides: on meta tensors the cast costs nothing, and
    # diffusers' override warns about fp32 modules that do not exist in these configs.
    nn.Module.to(model, dtype=dtype)
    model.to_empty(device=device)
    with torch.no_grad(), _rng_fork(device):
        _fill_buffers(model)
        torch.manual_seed(seed)
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:  # no such layer in these configs today; keep any future one finite
                for param in own:
                    param.normal_(0.0, 0.02)


def build_component(
    name: str,
    dtype: torch.dtype = torch.float32,
    device: Device = "cpu",
    seed: int = 0,
    tokenizer: CLIPTokenizer | None = None,
) -> nn.Module:
    """One component by name (see `COMPONENTS`), in eval mode, random weights.

    `device="meta"` builds it without memory (for counting). Text encoders take their special
    token ids from `tokenizer` (the tiny byte-level one by default; every id < vocab size).
    """
    cls, config = COMPONENTS[name]
    if issubclass(cls, CLIPTextModel | CLIPTextModelWithProjection):
        tok = tokenizer if tokenizer is not None else tokenizer_without_leftovers()
        text_config = CLIPTextConfig(
            **config,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model = _meta_model(lambda: cls(text_config))
    else:
        model = _meta_model(lambda: cls(**config))
    device = torch.device(device)
    if device.type == "meta":
        nn.Module.to(model, dtype=dtype)
    else:
        _materialise(model, device, dtype, seed)
    return model.eval().requires_grad_(False)
