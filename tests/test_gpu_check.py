"""scripts/gpu_check.py without a GPU: it says why and exits 0 (the GPU path itself runs where a GPU is lent)."""
import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_gpu_check_skips_cleanly_without_cuda(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    if torch.version.cuda is None:
        reason = f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch to check a GPU"
    else:
        reason = gpu_check.cuda_unavailable_reason()
        assert reason.startswith(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
    assert capsys.readouterr().out.splitlines() == [f"gpu_check: skipped: {reason}", f"gpu_check: wrote {out}"]
    report = json.loads(out.read_text())
    assert report["status"] == "skipped" and report["reason"] == reason
