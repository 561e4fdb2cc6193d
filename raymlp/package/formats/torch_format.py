"""A torch model in a package: `model/weights.pt` (the state dict), rebuilt from the model spec."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..layout import MODEL_DIR

#: The best epoch's state dict, in the package's `model/`.
WEIGHTS_FILE = "weights.pt"


def inference_device() -> Any:
    """A GPU when Ray gave this worker one (a GPU Serve replica or batch-predict actor), else the CPU."""
    import torch

    try:
        import ray

        if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
            return torch.device("cuda")
    except Exception:  # outside a Ray worker: plain Python predicts on the CPU
        pass
    return torch.device("cpu")


def load_for_inference(package_dir: Path, model_spec: dict[str, Any]) -> Any:
    """The trained network in eval mode with its weights, on the GPU Ray assigned, else on the CPU."""
    import torch

    from ..networks import build_torch_model

    network = build_torch_model(model_spec, model_spec["input_dim"], model_spec["output_dim"])
    network.load_state_dict(
        torch.load(Path(package_dir) / MODEL_DIR / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    )
    network.to(inference_device())
    network.eval()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    return network


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}"]


def predict_scores(network: Any, matrix: Any) -> Any:
    """Raw outputs (logits or values) for a float32 matrix."""
    import torch

    device = next(network.parameters()).device
    with torch.no_grad():
        return network(torch.from_numpy(matrix).to(device)).cpu().numpy()
