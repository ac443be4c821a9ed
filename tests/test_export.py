"""A trained LoRA adapter, exported in diffusers' format, makes a stock pipeline predict as the trained policy."""
import dataclasses

import pytest
import torch

from otca_lib import export
from otca_lib.config import preset, smoke
from otca_lib.tiny import tiny_pipeline
from otca_lib.train import Trainer


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_exported_lora_loads_into_a_stock_pipeline(tmp_path, family):
    c = dataclasses.replace(smoke(preset(f"tiny-{family}")), output_dir=str(tmp_path / "run"), eval_every=0,
                            lora_rank=4, lora_alpha=8.0, learning_rate=3e-2)
    t = Trainer(c, log=False)
    t.run()
    weights = export.export_lora(tmp_path / "run", tmp_path / "lora")
    assert weights.exists()
    stock = tiny_pipeline(family)              # the same base weights, as a user would load them
    x = torch.randn(2, *t.spec.latent_shape, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.7, 0.3])
    cond = t.policy.encode_prompts(["a red cat", "a blue dog"])
    trained = t.policy.velocity(x, s, cond)
    from otca_lib.policy import policy_from_pipeline

    base = policy_from_pipeline(family, stock, keep_reference=False).velocity(x, s, cond)
    assert (trained - base).abs().max() > 1e-4  # the adapter changed the model (so the check below can fail)
    stock.load_lora_weights(str(tmp_path / "lora"))
    loaded = policy_from_pipeline(family, stock, keep_reference=False).velocity(x, s, cond)
    torch.testing.assert_close(loaded, trained, rtol=1e-4, atol=1e-5)


def test_a_full_fine_tune_has_no_adapter_to_export(tmp_path):
    c = dataclasses.replace(smoke(preset("tiny-sd3")), output_dir=str(tmp_path / "run"), eval_every=0, iterations=1)
    Trainer(c, log=False).run()
    assert export.main([str(tmp_path / "run"), "--out", str(tmp_path / "lora")]) == 2
