"""A test-only extension (never installed for users): writes what the sampler's model got at each
step into the image's infotext, so that the live tests can compare the steps of two generations.

Its AlwaysVisible script takes one argument over the API: ``alwayson_scripts: {"sdxl refiner
trace": {"args": ["trace"]}}``. Each call of the host's CFG denoiser then adds the step's number
and a digest of its latent input to the infotext's ``Trace`` value, through the host's own
``on_cfg_denoiser`` callback, which every host of the family calls before each model call.
"""

import hashlib

import gradio as gr
from modules import script_callbacks, scripts

TRACE_ATTRIBUTE = "sdxl_refiner_trace"
KEY = "Trace"


def _record(params):
    p = getattr(getattr(params, "denoiser", None), "p", None)
    trace = getattr(p, TRACE_ATTRIBUTE, None)
    if trace is None:
        return
    digest = hashlib.sha256(params.x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:12]
    trace.append(f"{params.sampling_step}:{digest}")
    p.extra_generation_params[KEY] = " ".join(trace)


script_callbacks.on_cfg_denoiser(_record, name="sdxl_refiner_trace")


class SdxlRefinerTraceScript(scripts.Script):
    def title(self):
        return "SDXL Refiner trace"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Textbox(value="", visible=False, elem_id=self.elem_id("trace"))]

    def process(self, p, *args):
        setattr(p, TRACE_ATTRIBUTE, [] if args and args[0] == "trace" else None)
