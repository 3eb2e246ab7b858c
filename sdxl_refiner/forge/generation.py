"""What the script calls in Forge: prepare a generation, hook each sampling pass, put everything back.

The pass is planned exactly as in the WebUI (the sampler's function is the same k-diffusion
function, called once per pass with the sigmas it runs), and the sampler's model argument counts
the calls. The UNet changes through Forge's own ``UnetPatcher``: this pass's patcher is a clone
of the base's with a conditioning modifier that hands the refiner's ``KModel`` and conds to the
sampling function from the switch on, and the refiner's patcher added as a model to load during
sampling, so that Forge's memory management places both. The base's patcher, its LoRAs and other
patches are never touched: Forge restores ``forge_objects`` from its own copy for every pass.
"""

from __future__ import annotations

from sdxl_refiner.errors import SettingsError
from sdxl_refiner.forge import loading as forge_loading
from sdxl_refiner.forge.own_text import FORGE_SLOT
from sdxl_refiner.forge.routing import RefinerRoute, conditioning_modifier
from sdxl_refiner.handoff import UNetSlot, route_model, unet_handoff
from sdxl_refiner.refiner_noise import with_refiner_noise
from sdxl_refiner.settings import Settings
from sdxl_refiner.webui import generation, loading, prompts, samplers
from sdxl_refiner.webui.run_state import ActivePass, RefinerRun

BUILTIN_OFF_NOTE = "Forge's built-in refiner was turned off for this generation (SDXL Refiner runs instead)"


def register_callbacks() -> None:
    """Nothing to register: the conds are converted by the patcher's modifier, not by a callback."""


def prepare(p, settings: Settings | SettingsError) -> None:
    """From Script.process(): check everything that can be checked, load (or find) the refiner."""
    generation.start_run(p, settings, _prepare)


def _prepare(p, run: RefinerRun) -> None:
    forge_loading.require_sdxl_base(p.sd_model)
    webui_info, info = generation.classified_refiner(run)
    forge_loading.refuse_other_prediction(run.checkpoint_path, webui_info.title)
    run.checkpoint_title = loading.hashed_short_title(webui_info)
    run.spec = forge_loading.cond_spec(info)
    generation.choose_text_encoder(p, run, FORGE_SLOT)
    generation.turn_builtin_refiner_off(p, run, BUILTIN_OFF_NOTE)
    run.refiner_patcher = forge_loading.refiner_patcher(run.checkpoint_path)


def before_sampling(p, *, x, noise, c, uc) -> None:
    """From process_before_every_sampling, after Forge has set this pass's patcher and before it
    loads the models: the refined pass samples on a clone that carries the refiner."""
    run = generation.run_for_pass(p)
    if run is None:
        return
    if run.error is None:
        # The refiner's own conds are encoded (and cached for the pass) now, before Forge loads the
        # pass's UNets: loading the text encoders inside the loop could push those out again.
        prompts.refiner_conds(p, run)
        unet = p.sd_model.forge_objects.unet.clone()
        route = RefinerRoute(
            model=unet.model, scores=(run.settings.aesthetic_score, run.settings.negative_aesthetic_score), spec=run.spec
        )
        unet.add_conditioning_modifier(conditioning_modifier(route))
        unet.add_extra_model_patcher_during_sampling(run.refiner_patcher)
        p.sd_model.forge_objects.unet = unet
        run.route = route
    generation.wrap_sampler(p, run, (c, uc), _sample_with_refiner)


def _sample_with_refiner(p, run: RefinerRun, func, model, x, args, kwargs, schedule, pass_conds):
    refiner_conds, plan, point = generation.plan_pass(p, run, func, kwargs, schedule, pass_conds)
    route: RefinerRoute = run.route
    refiner = run.refiner_patcher.model
    with unet_handoff(UNetSlot(route, "model"), refiner, point) as handoff:
        route.handoff = handoff
        run.active = ActivePass(handoff, None)
        kwargs = with_refiner_noise(func, x, kwargs, handoff, run.settings.noise_multiplier)
        routed = route_model(model, handoff, generation.refiner_call_args(run, refiner_conds))
        try:
            samples = func(routed, x, *args, **kwargs)
        finally:
            route.handoff = None
            run.active = None
            run.passes_run += 1
        if handoff.switch_missed:
            generation.report_missed_switch(p, samplers.sampler_label(p.sampler), plan)
        return samples


def finish(p) -> None:
    """From postprocess: no wrapper of ours stays on a sampler whose pass never ran."""
    generation.unwrap_sampler(p)


def unload_refiner() -> None:
    """Forge's loaded-model list holds every patcher it placed until it needs the memory for
    another: the refiner's are unloaded there too, or dropping them from the cache would free nothing."""
    forge_loading.release_from_forge()
    generation.unload_refiner()

