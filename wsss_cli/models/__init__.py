"""Networks: classification backbones, heads and their pretrained weights."""
