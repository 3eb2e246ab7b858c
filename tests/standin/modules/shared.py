"""Stand-in of ``modules.shared``: the process-wide objects (opts, cmd_opts, state, sd_model, device).

``opts`` is built from the stand-in's option templates; ``sd_model`` is set by the ``webui``
fixture (tests/standin/fixtures.py) and by ``sd_models.load_model``.
"""

from __future__ import annotations

from modules import options, shared_cmd_options, shared_options, shared_state, styles

cmd_opts = shared_cmd_options.cmd_opts

batch_cond_uncond = True
parallel_processing_allowed = True

device = None
state = shared_state.State()

options_templates = shared_options.options_templates
opts = options.Options(dict(options_templates), set())
restricted_opts: set[str] = set()

sd_model = None
prompt_styles = styles.StyleDatabase()

options_section = options.options_section
OptionInfo = options.OptionInfo
OptionHTML = options.OptionHTML


class _TotalTQDM:
    def update(self) -> None:
        pass

    def updateTotal(self, new_total) -> None:
        pass

    def clear(self) -> None:
        pass


total_tqdm = _TotalTQDM()


def ldm_print(*args, **kwargs) -> None:
    pass

latent_upscale_default_mode = "Latent"
latent_upscale_modes = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
}
