"""Stand-in of ``modules.scripts`` (1.10.1): Script and its hooks, the runner, script data for X/Y/Z.

The runner passes ``p.script_args[script.args_from:script.args_to]`` to every hook, catches and
reports exceptions from hooks (as 1.10.1 does: raising in a hook never fails a generation) and
calls the hooks in the order ``modules.processing`` drives. Simplified: no UI building, no
ordering by user settings.
"""

from __future__ import annotations

import os
from collections import namedtuple
from dataclasses import dataclass

from modules import errors

AlwaysVisible = object()


class MaskBlendArgs:
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent
        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        pass

    def on_mask_blend(self, p, mba: MaskBlendArgs, *args):
        pass

    def post_sample(self, p, ps: PostSampleArgs, *args):
        pass

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def on_before_component(self, callback, *, elem_id):
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback, *, elem_id):
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self):
        return ""

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        need_tabname = need_tabname or (self.show(True) == AlwaysVisible)
        tabkind = 'img2img' if self.is_img2img else 'txt2img'
        tabname = f"{tabkind}_" if need_tabname else ""
        title = "".join(c for c in self.title().lower().replace(" ", "_") if c.isalnum() or c == "_")
        return f'script_{tabname}{title}_{item_id}'

    def before_hr(self, p, *args):
        pass


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data: list[ScriptClassData] = []
postprocessing_scripts_data: list[ScriptClassData] = []


@dataclass
class ScriptWithDependencies:
    script_canonical_name: str
    file: ScriptFile
    requires: list
    load_before: list
    load_after: list


def basedir():
    return os.getcwd()


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.titles = []
        self.title_map = {}
        self.infotext_fields = []
        self.paste_field_names = []
        self.inputs = [None]

    def add_alwayson(self, script, args_count: int) -> None:
        """Stand-in only: places an AlwaysVisible script's args after the ones already there."""
        script.alwayson = True
        script.args_from = len(self.inputs)
        script.args_to = script.args_from + args_count
        self.inputs.extend([None] * args_count)
        self.scripts.append(script)
        self.alwayson_scripts.append(script)

    def ordered_scripts(self, method_name):
        return [script for script in self.alwayson_scripts]

    def _each(self, method_name, p, *extra, **kwargs):
        for script in self.ordered_scripts(method_name):
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                getattr(script, method_name)(p, *extra, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        for script in self.ordered_scripts('setup'):
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                script.setup(p, *script_args)
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._each('before_process', p)

    def process(self, p):
        self._each('process', p)

    def process_before_every_sampling(self, p, **kwargs):
        self._each('process_before_every_sampling', p, **kwargs)

    def before_process_batch(self, p, **kwargs):
        self._each('before_process_batch', p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._each('after_extra_networks_activate', p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._each('process_batch', p, **kwargs)

    def postprocess(self, p, processed):
        self._each('postprocess', p, processed)

    def postprocess_batch(self, p, images, **kwargs):
        for script in self.ordered_scripts('postprocess_batch'):
            try:
                script_args = p.script_args[script.args_from:script.args_to]
                script.postprocess_batch(p, *script_args, images=images, **kwargs)
            except Exception:
                errors.report(f"Error running postprocess_batch: {script.filename}", exc_info=True)

    def post_sample(self, p, ps: PostSampleArgs):
        self._each('post_sample', p, ps)

    def postprocess_image(self, p, pp: PostprocessImageArgs):
        self._each('postprocess_image', p, pp)

    def before_hr(self, p):
        self._each('before_hr', p)
