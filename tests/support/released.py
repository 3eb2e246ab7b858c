"""The released SDXL UNets' constructor parameters, for tests and benchmarks at real sizes."""

# Stability-AI/generative-models @ 45c443b, configs/inference/sd_xl_base.yaml, network_config.params
SDXL_BASE_PARAMS = {
    "adm_in_channels": 2816,
    "num_classes": "sequential",
    "use_checkpoint": True,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4],
    "num_head_channels": 64,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": True,
    "transformer_depth": [1, 2, 10],
    "context_dim": 2048,
    "spatial_transformer_attn_type": "softmax-xformers",
    "legacy": False,
}

# Stability-AI/generative-models @ 45c443b, configs/inference/sd_xl_refiner.yaml, network_config.params
SDXL_REFINER_PARAMS = {
    "adm_in_channels": 2560,
    "num_classes": "sequential",
    "use_checkpoint": True,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 384,
    "attention_resolutions": [4, 2],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_head_channels": 64,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": True,
    "transformer_depth": 4,
    "context_dim": [1280, 1280, 1280, 1280],
    "spatial_transformer_attn_type": "softmax-xformers",
    "legacy": False,
}

RELEASED = {"base": SDXL_BASE_PARAMS, "refiner": SDXL_REFINER_PARAMS}
