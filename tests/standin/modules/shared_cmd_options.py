"""Stand-in of ``modules.shared_cmd_options``: the command-line flags that change sampling."""

import argparse

cmd_opts = argparse.Namespace(
    lowvram=False,
    medvram=False,
    medvram_sdxl=False,
    no_half=True,
    precision="full",
    ckpt=None,
    ckpt_dir=None,
    freeze_settings=False,
    no_prompt_history=True,
    api=True,
    no_hashing=False,
    api_auth=None,
)
