"""The WebUI's entry point: one AlwaysVisible script; all the work is in the sdxl_refiner package.

The sampling binding is chosen when the script loads: Forge's where its backend is present, else
the WebUI's; everything else is written once for both.
"""

from modules import scripts

from sdxl_refiner.errors import SettingsError
from sdxl_refiner.forge import sampling_binding
from sdxl_refiner.settings import from_ui_args
from sdxl_refiner.webui import options, xyz
from sdxl_refiner.webui.paste import paste_fields
from sdxl_refiner.webui.ui import TITLE, UNSUPPORTED_HOST, build_panel, refining_supported

generation = sampling_binding()
generation.register_callbacks()
options.register_callbacks()
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
        # the WebUI swallows exceptions from process(): the binding raises this one during sampling
        try:
            settings = from_ui_args(args, overrides=xyz.overrides(p))
        except SettingsError as error:
            settings = error
        if not refining_supported() and not getattr(settings, "refiner_off", False):
            print(f"SDXL Refiner: {UNSUPPORTED_HOST}")
            return
        generation.prepare(p, settings)

    def process_before_every_sampling(self, p, *args, **kwargs):
        generation.before_sampling(p, x=kwargs["x"], noise=kwargs["noise"], c=kwargs["c"], uc=kwargs["uc"])

    def postprocess(self, p, processed, *args):
        generation.finish(p)
