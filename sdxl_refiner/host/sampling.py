"""The sampling skeleton every host shares: prepare a generation, hook each pass, put everything back.

The refiner runs inside the host's own sampling call: ``before_sampling`` wraps the sampler's
function (an instance attribute the host calls once per pass) so that the same loop, on the same
latent, hands the UNet to the refiner at the planned model call. Where the UNet sits and how the
refiner is loaded is the binding's part (``HostBinding``); the plan, the refiner's prompts and
CFG and noise, the infotext and the notes are this module's. Errors meant for the user are raised
from inside that call, the only place where the hosts let them reach the user (and an API caller)
instead of logging them; a failure of any other kind in our hooks is turned into one such error,
so an image is never returned unrefined without a word.
"""

from __future__ import annotations

import functools
import traceback

from sdxl_refiner.core import samplers
from sdxl_refiner.core.conditioning import refiner_conditioning
from sdxl_refiner.core.errors import Cause, RefinerError, out_of_memory
from sdxl_refiner.core.handoff import route_model, unet_handoff
from sdxl_refiner.core.infotext import KEY_CHECKPOINT, KEY_NOTES, format_number, infotext_params, joined_notes
from sdxl_refiner.core.refiner_noise import adds_noise, takes_noise_sampler, with_refiner_noise
from sdxl_refiner.core.schedule import plan_switch
from sdxl_refiner.core.settings import Settings
from sdxl_refiner.host import checkpoints, file_hash, loras, options, prompts, refusals, text_encoder
from sdxl_refiner.host.binding import HostBinding
from sdxl_refiner.host.resources import resources
from sdxl_refiner.host.run_state import ActivePass, RefinerRun, attach_run, run_of

ORIGINAL_ATTRIBUTE = "__sdxl_refiner_original__"


class RefinerFailed(RefinerError):
    """A failure in our hooks that was not a refusal: the generation stops with it rather than
    return an image that was not refined as asked."""


def builtin_off_note(host_name: str) -> str:
    return f"{host_name}'s built-in refiner was turned off for this generation (SDXL Refiner runs instead)"


def _log_failure(error: Exception, while_doing: str) -> None:
    print(f"SDXL Refiner: {while_doing} failed:")
    traceback.print_exception(type(error), error, error.__traceback__)


def failed(error: Exception, while_doing: str) -> RefinerFailed:
    """An unexpected error as the user sees it; the console keeps its traceback."""
    _log_failure(error, while_doing)
    not_made = "The image was not made, so that no unrefined image is taken for a refined one"
    described = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if out_of_memory(error):
        failure = RefinerFailed(
            f"SDXL Refiner ran out of memory while {while_doing}: {described}. {not_made}. "
            "Free memory (a smaller image or batch, the offload residency, or Unload refiner) and try again.",
            Cause.OUT_OF_MEMORY,
        )
    else:
        failure = RefinerFailed(
            f"SDXL Refiner failed while {while_doing}: {described}. {not_made}; the console "
            "has the traceback. Turn SDXL Refiner off to generate without it, and report the error."
        )
    failure.__cause__ = error
    return failure


# --- prepare (Script.process) ---------------------------------------------------------------------


def prepare(binding: HostBinding, p, settings: Settings | RefinerError) -> None:
    """From Script.process(): check everything that can be checked, start loading the refiner.

    What is refused is kept on the run and raised from inside sampling."""
    try:
        _start_run(binding, p, settings)
    except Exception as error:
        run = run_of(p)
        if run is None:
            run = RefinerRun(settings=settings if isinstance(settings, Settings) else None)
            attach_run(p, run)
        run.error = failed(error, "preparing the generation")


def _start_run(binding: HostBinding, p, settings: Settings | RefinerError) -> None:
    unwrap_sampler(p)
    p.extra_generation_params = {k: v for k, v in p.extra_generation_params.items() if not k.startswith(KEY_CHECKPOINT)}
    if isinstance(settings, RefinerError):
        attach_run(p, RefinerRun(error=settings))
        return
    if settings.refiner_off:
        attach_run(p, None)
        return
    run = RefinerRun(settings=settings)
    attach_run(p, run)
    try:
        _prepare(binding, p, run)
    except RefinerError as error:
        run.error = for_users(p, run, error)


def for_users(p, run: RefinerRun, error: RefinerError) -> RefinerError:
    base = getattr(getattr(p, "sd_model", None), "sd_checkpoint_info", None)
    return checkpoints.with_checkpoint_names(error, (run.checkpoint_info, base))


def _prepare(binding: HostBinding, p, run: RefinerRun) -> None:
    binding.check_base(p.sd_model)
    run.own_loras = loras.own_loras(prompts.styled_prompt(p, run.settings))
    loras.find_files(run.own_loras)
    chosen = _chosen_refiner(run)
    binding.check_refiner(p, run, chosen)
    run.file_hash = file_hash.refiner_hash(chosen.host_info)
    run.spec = checkpoints.cond_spec(chosen.info, binding.scalar_embed_dim(p.sd_model, chosen.info))
    _choose_text_encoder(binding, p, run, chosen)
    turn_builtin_refiner_off(p, run, builtin_off_note(binding.host_name))
    binding.load_refiner(p, run, chosen)


def _chosen_refiner(run: RefinerRun) -> checkpoints.ChosenRefiner:
    """The chosen checkpoint, found in the host's list and recorded on the run (so that any later
    refusal names it), then classified once for the whole generation."""
    host_info = checkpoints.resolve_checkpoint(run.settings.checkpoint)
    run.checkpoint_info = host_info
    return checkpoints.classify_refiner(host_info)


def _choose_text_encoder(binding: HostBinding, p, run: RefinerRun, chosen: checkpoints.ChosenRefiner) -> None:
    """The base's conds are sliced when the two bigG encoders are the same tensors; otherwise the
    prompts are encoded again with the refiner's own, in the host's encoder module."""
    found = resources()
    base_path = str(p.sd_model.sd_checkpoint_info.filename)
    if text_encoder.text_encoders_match(base_path, chosen.path, run.spec.kind, found.encoder_checks):
        return
    run.own_text = text_encoder.own_text_encoder(p.sd_model, chosen, binding.encoder_slot, found.own_encoders)
    run.notes.append("prompts encoded with the refiner's own text encoder")


def turn_builtin_refiner_off(p, run: RefinerRun, note: str) -> None:
    # Script.process runs after the host has resolved p.refiner_checkpoint into this field (or
    # refused an unknown name), so the field alone says whether the built-in refiner would run.
    if p.refiner_checkpoint_info is None:
        return
    p.refiner_checkpoint_info = None
    p.refiner_checkpoint = None
    run.notes.append(note)
    print(f"SDXL Refiner: {note}.")


# --- each pass (Script.process_before_every_sampling) ---------------------------------------------


def pass_is_refined(p, run: RefinerRun) -> bool:
    if not getattr(p, "enable_hr", False):
        return True
    wanted = options.effective_hires_pass(run.settings)
    return wanted == "both" or wanted == ("second" if p.is_hr_pass else "first")


def before_sampling(binding: HostBinding, p, *, c, uc) -> None:
    """From process_before_every_sampling: hook this pass's sampler when the pass is refined.

    A failure here is raised from the sampling call; where even the sampler cannot be hooked, the
    images' infotext says that the refiner did not run."""
    try:
        run = run_for_pass(p)
        if run is None:
            return
        if run.error is None:
            try:
                run.loras = loras.for_pass(p, run.settings, run.own_loras)
                binding.before_pass(p, run)
            except RefinerError as error:
                run.error = for_users(p, run, error)
            except Exception as error:
                run.error = failed(error, "preparing the sampling pass")
        wrap_sampler(binding, p, run, (c, uc))
    except Exception as error:
        _log_failure(error, "hooking the sampler")
        _add_notes(p, [f"the refiner did not run: hooking the sampler failed ({type(error).__name__}: {error})"])


def run_for_pass(p) -> RefinerRun | None:
    """The run whose sampler this pass hooks: one that is refined here, or holds an error to raise."""
    unwrap_sampler(p)
    run = run_of(p)
    if run is None or p.sampler is None:
        return None
    if run.error is None and not pass_is_refined(p, run):
        return None
    return run


def wrap_sampler(binding: HostBinding, p, run: RefinerRun, pass_conds: tuple) -> None:
    """Wraps ``sampler.func`` (and ``get_sigmas``, to see the schedule the host computes) so that
    the pass runs with the refiner.

    ``functools.wraps`` keeps the signature the host inspects to choose the arguments.
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
            raise_for_users(run.error)
        try:
            return sample_with_refiner(binding, p, run, original_func, model, x, args, kwargs, seen.get("sigmas"),
                                       pass_conds)
        except RefinerError as error:
            raise_for_users(for_users(p, run, error), error)

    setattr(refined_func, ORIGINAL_ATTRIBUTE, (original_func, instance_get_sigmas))
    sampler.func = refined_func


def raise_for_users(error: RefinerError, raised: RefinerError | None = None) -> None:
    """Out of the host's sampling call, where the host answers it: a refusal with its 4xx status
    and one line in the console, a failure with its 5xx status and traceback."""
    answer = refusals.answered(error)
    if answer is error:
        raise error
    raise answer from (raised or error.__cause__)


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


# --- the sampling call ----------------------------------------------------------------------------


def sample_with_refiner(binding: HostBinding, p, run: RefinerRun, func, model, x, args, kwargs, schedule,
                        pass_conds):
    """One pass of the host's sampler, its model calls routed to the refiner from the planned one on."""
    try:
        refiner_conds, plan, point = plan_pass(binding, p, run, func, kwargs, schedule, pass_conds)
    except RefinerError:
        raise
    except Exception as error:
        raise failed(error, "planning the sampling pass") from error
    with (
        binding.pass_route(p, run) as route,
        unet_handoff(route.slot, route.refiner, point, on_switch=route.on_switch) as handoff,
    ):
        run.active = ActivePass(handoff, route.empty_prompt)
        if route.started is not None:
            route.started(handoff)
        kwargs = with_refiner_noise(func, x, kwargs, handoff, run.settings.noise_multiplier)
        routed = route_model(model, handoff, refiner_call_args(run, refiner_conds))
        try:
            samples = func(routed, x, *args, **kwargs)
        finally:
            run.active = None
            if route.ended is not None:
                route.ended()
            _add_notes(p, _lora_notes(run))
        # An interrupt or skip raises out of ``func``; a pass that returns ran to its end, so
        # "stop after this image" (state.stopping_generation) still gets its note.
        if handoff.switch_missed:
            report_missed_switch(p, samplers.sampler_label(p.sampler), plan)
        return samples


def check_conds_fit(run: RefinerRun, pass_conds: tuple) -> None:
    """Refuse before the first step conds the refiner UNet could not take (the host would only
    log an error raised in a callback, and the UNet would then fail mid-loop). Forge's hires pass
    has no uncond at a hires CFG scale of 1."""
    from modules import prompt_parser

    c, uc = pass_conds
    cond = prompt_parser.reconstruct_multicond_batch(c, 0)[1]
    refiner_conditioning(cond, run.spec, run.settings.aesthetic_score)
    if uc is not None:
        uncond = prompt_parser.reconstruct_cond_batch(uc, 0)
        refiner_conditioning(uncond, run.spec, run.settings.negative_aesthetic_score)


def refiner_call_args(run: RefinerRun, refiner_conds: tuple | None) -> dict[str, object]:
    """The sampler's model arguments that the refiner's calls get in place of the pass's own."""
    args: dict[str, object] = {}
    if refiner_conds is not None:
        args["cond"], args["uncond"] = refiner_conds
    if run.settings.cfg_scale:
        args["cond_scale"] = run.settings.cfg_scale
    return args


def plan_pass(binding: HostBinding, p, run: RefinerRun, func, kwargs: dict, schedule, pass_conds: tuple) -> tuple:
    """Everything decided before the pass's first step: refusals, the refiner's own conds, the switch
    plan and point, and the infotext. Returns ``(refiner_conds, plan, point)``."""
    samplers.refuse_unsupported(p.sampler, func)
    refiner_conds = prompts.refiner_conds(p, run, binding.encode_prompts)
    check_conds_fit(run, refiner_conds or pass_conds)
    sigmas = samplers.sigmas_used(kwargs, schedule)
    plan = plan_switch(run.settings, len(sigmas) - 1)
    point = samplers.switch_point_for(p.sampler, sigmas, plan.base_steps, float(kwargs.get("eta", 1.0)))
    _write_infotext(p, run, plan)
    if run.settings.noise_multiplier != 1 and plan.active and not adds_noise(func, kwargs):
        label = samplers.sampler_label(p.sampler)
        _add_notes(p, [no_noise_note(label, run.settings.noise_multiplier, eta_zero=takes_noise_sampler(func))])
    return refiner_conds, plan, point


# --- infotext and notes ---------------------------------------------------------------------------


def _write_infotext(p, run: RefinerRun, plan) -> None:
    """Once per refined pass; hires fix's second pass adds its own split and notes to the first's.

    The refiner's name and hash are written now where the host has the hash; otherwise the host
    calls for them when it writes the image's infotext, after the UNet's read has hashed the file."""
    known = run.file_hash.digest is None
    params = infotext_params(
        run.settings, checkpoint_title=run.file_hash.short_title() if known else "", plan=plan,
        hires_pass_run=p.is_hr_pass,
    )
    if not params:
        return
    if not known:
        params[KEY_CHECKPOINT] = _short_title_when_written(run.file_hash)
    notes = [*filter(None, [params.pop(KEY_NOTES, None)]), *run.notes, *_lora_notes(run)]
    if run.loras is not None and (hashes := loras.hashes_text(run.loras)):
        params[loras.KEY_LORA_HASHES] = hashes
    p.extra_generation_params.update(params)
    _add_notes(p, notes)


def _lora_notes(run: RefinerRun) -> list[str]:
    if run.loras is None:
        return []
    notes = list(run.loras.notes)
    if run.own_text is not None and any(tag.te for tag in run.loras.chosen):
        notes.append("the LoRAs' text-encoder weights do not act on the refiner's own text encoder; its prompts "
                     "are encoded without them")
    return notes


def _short_title_when_written(refiner_hash: file_hash.RefinerHash):
    """A value the host's ``create_infotext`` calls (with its locals) for each image's infotext."""

    def short_title(**_locals) -> str:
        return refiner_hash.short_title()

    return short_title


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


# --- after the generation (Script.postprocess) ----------------------------------------------------


def finish(p) -> None:
    """From postprocess: no wrapper of ours stays on a sampler whose pass never ran. The refiner
    itself is already out of the slot: ``sample_with_refiner`` restores it on every exit.

    The refiner's name and hash, written by the images' infotexts by now, replace the callable
    that wrote them: the API's ``info`` holds the parameters as JSON, where a callable is null."""
    try:
        unwrap_sampler(p)
        title = p.extra_generation_params.get(KEY_CHECKPOINT)
        if callable(title):
            p.extra_generation_params[KEY_CHECKPOINT] = title()
    except Exception as error:
        failed(error, "cleaning up after the generation")
