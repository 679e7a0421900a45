"""The FM4NPP Mamba2 foundation model (paper: "Mamba as a FM Model Backbone", Table 1).

config.ModelConfig, presets.get_preset / PRESETS, backbone.FM4NPP, ssd (chunked scan and the
reference recurrence), mup.param_groups, flops.flops_per_token / count_params,
io.save_pretrained / from_pretrained. Nothing is imported here, so `import fm4npp.model` stays
cheap and never touches optional GPU packages.
"""
