"""A test-only extension (never installed for users): makes one step of SDXL Refiner's hooks fail,
once, in a live host, so that the live tests can check that every such failure is loud.

Its AlwaysVisible script takes one argument over the API, the step to break:
``alwayson_scripts: {"sdxl refiner fault": {"args": ["process"]}}``. The broken function raises
``RuntimeError("injected failure")`` at its first call and puts itself back at once, so a failed
request never leaves the host broken for the next one.
"""

import importlib

import gradio as gr
from modules import scripts

# step -> (module, attribute path) of SDXL Refiner's code that the step calls
STEPS = {
    # Script.process: the refiner's checkpoint is named and hashed while the generation is prepared
    "process": ("sdxl_refiner.host.file_hash", "refiner_hash"),
    # Script.process_before_every_sampling: the binding's work before the pass's sampler is hooked
    "before_pass": (None, "before_pass"),
    # ... and hooking the sampler itself
    "hook": ("sdxl_refiner.host.sampling", "wrap_sampler"),
    # the sampling call: planning the pass before its first step
    "plan": ("sdxl_refiner.core.samplers", "sigmas_used"),
    # Script.postprocess: taking our wrapper off the sampler
    "postprocess": ("sdxl_refiner.host.sampling", "unwrap_sampler"),
}
INSTALLED_LATE = {"postprocess"}  # installed after sampling, or the generation's first unwrap would take it


def _owner(module_name, attribute):
    """The module, or the class of the host's binding that defines the method."""
    if module_name is not None:
        return importlib.import_module(module_name)
    from sdxl_refiner.chooser import host_binding

    return next(cls for cls in type(host_binding()).__mro__ if attribute in cls.__dict__)


def _break_once(step):
    module_name, attribute = STEPS[step]
    owner = _owner(module_name, attribute)
    original = owner.__dict__[attribute]

    def injected(*args, **kwargs):
        setattr(owner, attribute, original)
        raise RuntimeError(f"injected failure in {step}")

    setattr(owner, attribute, injected)
    return owner, attribute, original


class SdxlRefinerFaultScript(scripts.Script):
    def title(self):
        return "SDXL Refiner fault"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        # one input of its own, so that the API puts the step here and not into the next script's args
        return [gr.Textbox(value="", visible=False, elem_id=self.elem_id("step"))]

    def before_process(self, p, *args):
        p.sdxl_refiner_faults = []
        if args and args[0] in STEPS and args[0] not in INSTALLED_LATE:
            p.sdxl_refiner_faults.append(_break_once(args[0]))

    def postprocess_batch(self, p, *args, **kwargs):
        if args and args[0] in INSTALLED_LATE:
            p.sdxl_refiner_faults.append(_break_once(args[0]))

    def postprocess(self, p, processed, *args):
        for owner, attribute, original in getattr(p, "sdxl_refiner_faults", []):
            setattr(owner, attribute, original)
