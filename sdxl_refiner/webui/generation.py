"""What the script calls: prepare a generation, hook each sampling pass, put everything back.

The refiner runs inside the WebUI's own sampling call: ``before_sampling`` wraps the sampler's
function (an instance attribute the WebUI calls once per pass) so that the same loop, on the same
latent, hands the UNet slot to the refiner at the planned model call. Errors meant for the user
are raised from inside that call, the only place where the WebUI lets them reach the user (and
an API caller) instead of logging them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from sdxl_refiner.errors import RefinerError, SettingsError
from sdxl_refiner.handoff import UNetSlot, route_model, unet_handoff
from sdxl_refiner.infotext import KEY_CHECKPOINT, KEY_NOTES, format_number, infotext_params, joined_notes
from sdxl_refiner.refiner_noise import adds_noise, takes_noise_sampler, with_refiner_noise
from sdxl_refiner.residency import OffloadedRefiner, file_identity
from sdxl_refiner.schedule import plan_switch
from sdxl_refiner.settings import Settings
from sdxl_refiner.webui import conds, loading, own_text, prompts, samplers
from sdxl_refiner.webui.callbacks import register_once
from sdxl_refiner.webui.memory import RefinerPlacement
from sdxl_refiner.webui.run_state import ActivePass, RefinerRun, attach_run, run_of

ORIGINAL_ATTRIBUTE = "__sdxl_refiner_original__"
BUILTIN_OFF_NOTE = "the WebUI's built-in refiner was turned off for this generation (SDXL Refiner runs instead)"


def register_callbacks() -> None:
    """Once per script load; the WebUI clears every callback before it loads scripts again."""
    from modules import script_callbacks

    register_once(script_callbacks.on_cfg_denoiser, conds.on_cfg_denoiser, "sdxl_refiner_conds")


def prepare(p, settings: Settings | SettingsError) -> None:
    """From Script.process(): check everything that can be checked, start loading the refiner."""
    start_run(p, settings, _prepare)


def start_run(p, settings: Settings | SettingsError, host_prepare: Callable[[object, RefinerRun], None]) -> None:
    """The run of one generation on ``p``; what ``host_prepare`` refuses is kept to be raised in sampling."""
    unwrap_sampler(p)
    p.extra_generation_params = {k: v for k, v in p.extra_generation_params.items() if not k.startswith(KEY_CHECKPOINT)}
    if isinstance(settings, SettingsError):
        attach_run(p, RefinerRun(error=settings))
        return
    if settings.refiner_off:
        attach_run(p, None)
        return
    run = RefinerRun(settings=settings)
    attach_run(p, run)
    try:
        host_prepare(p, run)
    except RefinerError as error:
        run.error = for_users(p, run, error)


def for_users(p, run: RefinerRun, error: RefinerError) -> RefinerError:
    base = getattr(getattr(p, "sd_model", None), "sd_checkpoint_info", None)
    return loading.with_checkpoint_names(error, (run.checkpoint_info, base))


def _prepare(p, run: RefinerRun) -> None:
    loading.require_sdxl_base(p.sd_model)
    webui_info, info = classified_refiner(run)
    host_config = loading.unet_config_for(webui_info, info)
    run.checkpoint_title = loading.hashed_short_title(webui_info)
    run.spec = loading.cond_spec(p.sd_model, info)
    choose_text_encoder(p, run, own_text.WEBUI_SLOT)
    turn_builtin_refiner_off(p, run)
    refiner_bytes = int(info.path.stat().st_size)
    run.placement = loading.placement(refiner_bytes)
    run.pending = loading.start_loading(run.checkpoint_path, run.placement, host_config)


def classified_refiner(run: RefinerRun) -> tuple:
    """The chosen checkpoint, found in the host's list and recorded on the run (so that any later
    refusal names it), then classified from its header: ``(host_info, info)``."""
    webui_info = loading.resolve_checkpoint(run.settings.checkpoint)
    run.checkpoint_info = webui_info
    run.checkpoint_path = str(webui_info.filename)
    return webui_info, loading.classify_refiner(webui_info)


def choose_text_encoder(p, run: RefinerRun, slot: own_text.EncoderSlot) -> None:
    """The base's conds are sliced when the two bigG encoders are the same tensors; otherwise the
    prompts are encoded again with the refiner's own, in the host's module ``slot`` names."""
    base_path = str(p.sd_model.sd_checkpoint_info.filename)
    if not loading.text_encoders_match(base_path, run.checkpoint_path, run.spec.kind, loading.resources().encoder_checks):
        run.own_text = own_text_encoder(p.sd_model, run, slot)


def own_text_encoder(sd_model, run: RefinerRun, slot: own_text.EncoderSlot) -> own_text.OwnTextEncoder:
    """The refiner's own encoder, to encode the prompts with when it is not the base's."""
    path = run.checkpoint_path
    names = (sd_model.sd_checkpoint_info.name, run.checkpoint_info.name)
    if run.spec.kind != "refiner" or Path(path).suffix.lower() != ".safetensors":
        raise loading.text_encoder_refused(
            *names, "only a refiner-type .safetensors checkpoint can bring its own encoder"
        )
    found = loading.resources().own_encoders
    identity = file_identity(path)
    if identity not in found:
        tensors = slot.read(path)
        if not slot.fits(sd_model, tensors):
            raise loading.text_encoder_refused(
                *names, "its OpenCLIP encoder does not have the base's architecture to run in its place"
            )
        found.clear()
        found[identity] = own_text.OwnTextEncoder(path, tensors, slot)
    run.notes.append("prompts encoded with the refiner's own text encoder")
    return found[identity]


def turn_builtin_refiner_off(p, run: RefinerRun, note: str = BUILTIN_OFF_NOTE) -> None:
    # Script.process runs after the host has resolved p.refiner_checkpoint into this field (or
    # refused an unknown name), so the field alone says whether the built-in refiner would run.
    if p.refiner_checkpoint_info is None:
        return
    p.refiner_checkpoint_info = None
    p.refiner_checkpoint = None
    run.notes.append(note)
    print(f"SDXL Refiner: {note}.")


def pass_is_refined(p, run: RefinerRun) -> bool:
    if not getattr(p, "enable_hr", False):
        return True
    from sdxl_refiner.webui import options

    wanted = options.effective_hires_pass(run.settings)
    return wanted == "both" or wanted == ("second" if p.is_hr_pass else "first")


def before_sampling(p, *, x, noise, c, uc) -> None:
    """From process_before_every_sampling: hook this pass's sampler when the pass is refined."""
    run = run_for_pass(p)
    if run is not None:
        wrap_sampler(p, run, (c, uc), _sample_with_refiner)


def run_for_pass(p) -> RefinerRun | None:
    """The run whose sampler this pass hooks: one that is refined here, or holds an error to raise."""
    unwrap_sampler(p)
    run = run_of(p)
    if run is None or p.sampler is None:
        return None
    if run.error is None and not pass_is_refined(p, run):
        return None
    return run


def wrap_sampler(p, run: RefinerRun, pass_conds: tuple, sample: Callable[..., object]) -> None:
    """Wraps ``sampler.func`` (and ``get_sigmas``, to see the schedule the WebUI computes) so that
    the pass runs through the host binding's ``sample``.

    ``functools.wraps`` keeps the signature the WebUI inspects to choose the arguments.
    """
    sampler = p.sampler
    original_func = sampler.func
    instance_get_sigmas = sampler.__dict__.get("get_sigmas")
    get_sigmas = getattr(sampler, "get_sigmas", None)
    seen: dict[str, object] = {}

    if get_sigmas is not None:
        @functools.wraps(get_sigmas)
        def recording_get_sigmas(*args, **kwargs):
            seen["sigmas"] = get_sigmas(*args, **kwargs)
            return seen["sigmas"]

        sampler.get_sigmas = recording_get_sigmas

    @functools.wraps(original_func)
    def refined_func(model, x, *args, **kwargs):
        unwrap_sampler(p)
        if run.error is not None:
            raise run.error
        try:
            return sample(p, run, original_func, model, x, args, kwargs, seen.get("sigmas"), pass_conds)
        except RefinerError as error:
            renamed = for_users(p, run, error)
            if renamed is error:
                raise
            raise renamed from error

    setattr(refined_func, ORIGINAL_ATTRIBUTE, (original_func, instance_get_sigmas))
    sampler.func = refined_func


def unwrap_sampler(p) -> None:
    sampler = getattr(p, "sampler", None)
    if sampler is None:
        return
    originals = getattr(sampler.func, ORIGINAL_ATTRIBUTE, None)
    if originals is None:
        return
    sampler.func, instance_get_sigmas = originals
    if instance_get_sigmas is None:
        sampler.__dict__.pop("get_sigmas", None)
    else:
        sampler.get_sigmas = instance_get_sigmas


def check_conds_fit(run: RefinerRun, pass_conds: tuple) -> None:
    """Refuse before the first step conds the refiner UNet could not take (the WebUI would only
    log an error raised in the denoiser callback, and the UNet would then fail mid-loop). Forge's hires
    pass has no uncond at a hires CFG scale of 1."""
    from modules import prompt_parser

    c, uc = pass_conds
    cond = prompt_parser.reconstruct_multicond_batch(c, 0)[1]
    conds.convert(cond, run.spec, run.settings.aesthetic_score)
    if uc is not None:
        uncond = prompt_parser.reconstruct_cond_batch(uc, 0)
        conds.convert(uncond, run.spec, run.settings.negative_aesthetic_score)


def refiner_call_args(run: RefinerRun, refiner_conds: tuple | None) -> dict[str, object]:
    """The sampler's model arguments that the refiner's calls get in place of the pass's own."""
    args: dict[str, object] = {}
    if refiner_conds is not None:
        args["cond"], args["uncond"] = refiner_conds
    if run.settings.cfg_scale:
        args["cond_scale"] = run.settings.cfg_scale
    return args


def _sample_with_refiner(p, run: RefinerRun, func, model, x, args, kwargs, schedule, pass_conds):
    from modules import shared

    refiner_conds, plan, point = plan_pass(p, run, func, kwargs, schedule, pass_conds)

    sd_model = p.sd_model
    base_unet = sd_model.model.diffusion_model
    refiner_source, offloaded = run.pending.result, None
    storage_device = run.placement.storage_device
    if run.placement.prefetch and not getattr(sd_model, "lowvram", False):
        # copied to the GPU on a side stream while the base samples; the cached RAM copy stays put
        offloaded = OffloadedRefiner(run.pending, run.placement.compute_device)
        offloaded.start()
        refiner_source, storage_device = offloaded.at_switch, run.placement.compute_device
    placement = RefinerPlacement(sd_model, base_unet, storage_device)
    empty = conds.refiner_empty_prompt(shared.sd_model.cond_stage_model_empty_prompt, run.spec)
    try:
        with unet_handoff(
            UNetSlot(sd_model.model, "diffusion_model"), refiner_source, point, on_switch=placement.on_switch
        ) as handoff:
            run.active = ActivePass(handoff, empty)
            kwargs = with_refiner_noise(func, x, kwargs, handoff, run.settings.noise_multiplier)
            routed = route_model(model, handoff, refiner_call_args(run, refiner_conds))
            try:
                samples = func(routed, x, *args, **kwargs)
            finally:
                run.active = None
                run.passes_run += 1
                placement.restore()
            # An interrupt or skip raises out of ``func``; a pass that returns ran to its end, so
            # "stop after this image" (state.stopping_generation) still gets its note.
            if handoff.switch_missed:
                report_missed_switch(p, samplers.sampler_label(p.sampler), plan)
            return samples
    finally:
        if offloaded is not None:
            offloaded.release()


def plan_pass(p, run: RefinerRun, func, kwargs: dict, schedule, pass_conds: tuple) -> tuple:
    """Everything decided before the pass's first step: refusals, the refiner's own conds, the switch
    plan and point, and the infotext. Returns ``(refiner_conds, plan, point)``."""
    samplers.refuse_unsupported(p.sampler, func)
    refiner_conds = prompts.refiner_conds(p, run)
    check_conds_fit(run, refiner_conds or pass_conds)
    sigmas = samplers.sigmas_used(kwargs, schedule)
    plan = plan_switch(run.settings, len(sigmas) - 1)
    point = samplers.switch_point_for(p.sampler, sigmas, plan.base_steps, float(kwargs.get("eta", 1.0)))
    _write_infotext(p, run, plan)
    if run.settings.noise_multiplier != 1 and plan.active and not adds_noise(func, kwargs):
        label = samplers.sampler_label(p.sampler)
        _add_notes(p, [no_noise_note(label, run.settings.noise_multiplier, eta_zero=takes_noise_sampler(func))])
    return refiner_conds, plan, point


def _write_infotext(p, run: RefinerRun, plan) -> None:
    """Once per refined pass; hires fix's second pass adds its own split and notes to the first's."""
    params = infotext_params(
        run.settings, checkpoint_title=run.checkpoint_title, plan=plan, hires_pass_run=p.is_hr_pass
    )
    if not params:
        return
    notes = [*filter(None, [params.pop(KEY_NOTES, None)]), *run.notes]
    p.extra_generation_params.update(params)
    _add_notes(p, notes)


def _add_notes(p, notes: list[str]) -> None:
    text = joined_notes(p.extra_generation_params.get(KEY_NOTES), notes)
    if text:
        p.extra_generation_params[KEY_NOTES] = text


def missed_switch_note(sampler_label: str, plan) -> str:
    """Why a planned refiner did not run, and what gets it to run."""
    return (
        f"{sampler_label} never came down to the switch sigma in {plan.steps} steps, so the refiner did not run"
        f" (planned {plan.refiner_steps} of them): use more steps, a larger refiner share, or another sampler"
    )


def no_noise_note(sampler_label: str, multiplier: float, *, eta_zero: bool) -> str:
    """Why a refiner noise other than 1 changed nothing, and what makes it count."""
    why = f"{sampler_label} adds no noise with eta 0" if eta_zero else f"{sampler_label} adds no ancestral or SDE noise"
    return (
        f"refiner noise {format_number(multiplier)} had no effect: {why}; "
        "it scales the noise of samplers such as Euler a and DPM++ 2M SDE"
    )


def report_missed_switch(p, sampler_label: str, plan) -> None:
    note = missed_switch_note(sampler_label, plan)
    if p.is_hr_pass:
        note = f"hires pass: {note}"
    print(f"SDXL Refiner: {note}.")
    _add_notes(p, [note])


def finish(p) -> None:
    """From postprocess: no wrapper of ours stays on a sampler whose pass never ran.

    The refiner itself is already out of the slot: ``_sample_with_refiner`` restores it on every
    exit of the sampling call.
    """
    unwrap_sampler(p)


def unload_refiner() -> None:
    """Frees the cached refiner UNets (settings page action and API route)."""
    loading.resources().cache.unload()
