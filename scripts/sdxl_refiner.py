"""The host's entry point: one AlwaysVisible script; all the work is in the sdxl_refiner package.

The host's binding is chosen once, when the script loads (``chooser``); the shared layer does the
rest with it.
"""

from modules import scripts

from sdxl_refiner.chooser import host_binding
from sdxl_refiner.core.errors import SettingsError
from sdxl_refiner.core.settings import from_ui_args
from sdxl_refiner.host import options, sampling, xyz
from sdxl_refiner.host.paste import paste_fields
from sdxl_refiner.host.ui import TITLE, UNSUPPORTED_HOST, build_panel, refining_supported

binding = host_binding()
binding.register_callbacks()
options.register_callbacks(binding.unload)
xyz.register_callbacks()


class SdxlRefinerScript(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        panel = build_panel(is_img2img)
        self.infotext_fields = paste_fields(panel)
        return panel.inputs

    def process(self, p, *args):
        # the host swallows exceptions from process(): the shared layer raises this one during sampling
        try:
            settings = xyz.with_prompt_sr(p, from_ui_args(args, overrides=xyz.overrides(p)))
        except SettingsError as error:
            settings = error
        except Exception as error:
            settings = sampling.failed(error, "reading the settings")
        if not refining_supported() and not getattr(settings, "refiner_off", False):
            print(f"SDXL Refiner: {UNSUPPORTED_HOST}")
            return
        sampling.prepare(binding, p, settings)

    def process_before_every_sampling(self, p, *args, **kwargs):
        sampling.before_sampling(binding, p, c=kwargs["c"], uc=kwargs["uc"])

    def postprocess(self, p, processed, *args):
        sampling.finish(p)
