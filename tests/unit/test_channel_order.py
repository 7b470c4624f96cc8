"""``channel_order="bgr"``: the serving input stays RGB; the TorchScript swaps channels before mean/std."""

from __future__ import annotations

import torch
from torch import nn

from fermodels.contract import ModelConfig
from fermodels.export import serving_wrapper


class Probe(nn.Module):
    """forward_serving: the normalised input's channel means as logits, the input itself as embedding."""

    def forward_serving(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(2, 3)), x.flatten(1)


def test_bgr_weights_see_the_rgb_input_reversed_and_normalised_in_their_order() -> None:
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    rgb = ModelConfig(name="m", architecture="a", input_size=4, mean=mean, std=std)
    bgr = ModelConfig(name="m", architecture="a", input_size=4, mean=mean, std=std, channel_order="bgr")
    x = torch.rand(2, 3, 4, 4)
    expected = serving_wrapper(Probe(), rgb).model.forward_serving(
        (x.flip(1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    )
    scripted = torch.jit.script(serving_wrapper(Probe(), bgr))
    with torch.no_grad():
        probabilities, _ = scripted(x)
    torch.testing.assert_close(probabilities, expected[0].softmax(-1))
    with torch.no_grad():
        plain, _ = torch.jit.script(serving_wrapper(Probe(), rgb))(x)
    assert not torch.allclose(plain, probabilities)
