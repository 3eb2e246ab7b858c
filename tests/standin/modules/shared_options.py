"""Stand-in of ``modules.shared_options``: the 1.10.1 options (defaults as there) that sampling reads."""

from modules.options import OptionInfo, options_section

options_templates: dict[str, OptionInfo] = {}

options_templates.update(options_section(('sd', "Stable Diffusion", "sd"), {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint", infotext='Model hash'),
    "enable_quantization": OptionInfo(False, "Enable quantization in K samplers"),
    "hires_fix_refiner_pass": OptionInfo("second pass", "Hires fix: which pass to enable refiner for", infotext="Hires refiner"),
}))

options_templates.update(options_section(('sdxl', "Stable Diffusion XL", "sd"), {
    "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),
    "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),
    "sdxl_refiner_low_aesthetic_score": OptionInfo(2.5, "SDXL low aesthetic score"),
    "sdxl_refiner_high_aesthetic_score": OptionInfo(6.0, "SDXL high aesthetic score"),
}))

options_templates.update(options_section(('img2img', "img2img", "sd"), {
    "img2img_extra_noise": OptionInfo(0.0, "Extra noise multiplier for img2img and hires fix", infotext='Extra noise'),
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies."),
}))

options_templates.update(options_section(('optimizations', "Optimizations", "sd"), {
    "s_min_uncond": OptionInfo(0.0, "Negative Guidance minimum sigma", infotext='NGMS'),
    "s_min_uncond_all": OptionInfo(False, "Negative Guidance minimum sigma all steps", infotext='NGMS all steps'),
    "pad_cond_uncond": OptionInfo(False, "Pad prompt/negative prompt", infotext='Pad conds'),
    "pad_cond_uncond_v0": OptionInfo(False, "Pad prompt/negative prompt (v0)", infotext='Pad conds v0'),
    "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
    "batch_cond_uncond": OptionInfo(True, "Batch cond/uncond"),
}))

options_templates.update(options_section(('compatibility', "Compatibility", "sd"), {
    "use_old_karras_scheduler_sigmas": OptionInfo(False, "Use old karras scheduler sigmas (0.1 to 10)."),
    "no_dpmpp_sde_batch_determinism": OptionInfo(False, "Do not make DPM++ SDE deterministic across different batch sizes."),
    "refiner_switch_by_sample_steps": OptionInfo(False, "Switch to refiner by sampling steps instead of model timesteps.", infotext="Refiner switch by sampling steps"),
}))

options_templates.update(options_section(('ui', "User interface", "ui"), {
    "enable_prompt_comments": OptionInfo(True, "Enable comments"),
    "sd_checkpoint_dropdown_use_short": OptionInfo(False, "Checkpoint dropdown: use filenames without paths"),
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period"),
    "live_preview_content": OptionInfo("Prompt", "Live preview subject"),
}))

options_templates.update(options_section(('sampler-params', "Sampler parameters", "sd"), {
    "eta_ddim": OptionInfo(0.0, "Eta for DDIM", infotext='Eta DDIM'),
    "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", infotext='Eta'),
    's_churn': OptionInfo(0.0, "sigma churn", infotext='Sigma churn'),
    's_tmin': OptionInfo(0.0, "sigma tmin", infotext='Sigma tmin'),
    's_tmax': OptionInfo(0.0, "sigma tmax", infotext='Sigma tmax'),
    's_noise': OptionInfo(1.0, "sigma noise", infotext='Sigma noise'),
    'sigma_min': OptionInfo(0.0, "sigma min", infotext='Schedule min sigma'),
    'sigma_max': OptionInfo(0.0, "sigma max", infotext='Schedule max sigma'),
    'rho': OptionInfo(0.0, "rho", infotext='Schedule rho'),
    'always_discard_next_to_last_sigma': OptionInfo(False, "Always discard next-to-last sigma", infotext='Discard penultimate sigma'),
    'sgm_noise_multiplier': OptionInfo(False, "SGM noise multiplier", infotext='SGM noise multiplier'),
    'skip_early_cond': OptionInfo(0.0, "Ignore negative prompt during early sampling", infotext="Skip Early CFG"),
}))
